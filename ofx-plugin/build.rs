// The plugin finds libcogvideo.so next to itself in the bundle.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN");
}
