//! Generates the C header from `src/ffi` with cbindgen into OUT_DIR. The
//! committed `include/cogvideo.h` must equal it (a test checks); set
//! `COGVIDEO_UPDATE_HEADER=1` to rewrite the committed copy.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("cogvideo.h");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=COGVIDEO_UPDATE_HEADER");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the C header");
    bindings.write_to_file(&out);
    if std::env::var_os("COGVIDEO_UPDATE_HEADER").is_some() {
        bindings.write_to_file(crate_dir.join("include/cogvideo.h"));
    }
}
