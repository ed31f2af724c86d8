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
    let mut text = Vec::new();
    bindings.write(&mut text);
    let header = plain_c_comments(&String::from_utf8(text).expect("cbindgen writes UTF-8"));
    std::fs::write(&out, &header).expect("writing the header into OUT_DIR");
    if std::env::var_os("COGVIDEO_UPDATE_HEADER").is_some() {
        std::fs::write(crate_dir.join("include/cogvideo.h"), &header)
            .expect("writing include/cogvideo.h");
    }
}

/// The doc comments of src/ffi are written for rustdoc; C programmers read
/// them in the header, where intra-doc links, backticks and `# Safety`
/// headings are noise: `[`f`]` and `` `x` `` become `f` and `x`, and the
/// heading goes (the contract under it reads as a sentence).
fn plain_c_comments(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    for line in header.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            if trimmed == "// # Safety" {
                continue;
            }
            out.push_str(&line.replace("[`", "").replace("`]", "").replace('`', ""));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}
