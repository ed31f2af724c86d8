//! Helpers shared by the parity tests: locating the committed test data,
//! loading golden tensors and comparing with a stated tolerance.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

pub mod tools;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn tiny(variant: &str) -> PathBuf {
    data_dir().join("tiny").join(variant)
}

pub fn golden(name: &str) -> PathBuf {
    data_dir().join("golden").join(name)
}

pub fn load_json(name: &str) -> serde_json::Value {
    let path = golden(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn load_tensors(name: &str) -> HashMap<String, Tensor> {
    let path = golden(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Largest absolute difference, and the reference's largest magnitude.
pub fn max_abs_diff(got: &Tensor, want: &Tensor) -> (f64, f64) {
    assert_eq!(got.dims(), want.dims(), "shape mismatch");
    let g = got.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let w = want.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let diff = (g - &w)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let scale = w.abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    (diff, scale)
}

/// Asserts `max|got - want| <= rel * max(1, max|want|)` and prints the
/// measured error so tolerances can be reviewed from the test log.
pub fn assert_close(label: &str, got: &Tensor, want: &Tensor, rel: f64) -> f64 {
    let (diff, scale) = max_abs_diff(got, want);
    let bound = rel * scale.max(1.0);
    println!("{label}: max abs err {diff:.3e} (ref scale {scale:.3e}, bound {bound:.3e})");
    assert!(
        diff.is_finite() && diff <= bound,
        "{label}: max abs err {diff:e} exceeds {bound:e}"
    );
    diff
}

/// A scratch copy of a tiny checkpoint that a test may break, removed on drop.
pub struct ScratchCheckpoint {
    pub root: PathBuf,
}

impl ScratchCheckpoint {
    pub fn copy_of(variant: &str, tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!(
            "cogvideo-test-{}-{variant}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        copy_dir(&tiny(variant), &root);
        Self { root }
    }
}

impl Drop for ScratchCheckpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// `libcogvideo.so` of the profile these tests were built with. `cargo test`
/// builds the crate's rlib but not its cdylib, so build it here; when it is
/// up to date this is a no-op.
pub fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--lib", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo to build libcogvideo.so");
    assert!(status.success(), "cargo build --lib failed");
    let lib = profile_dir.join("libcogvideo.so");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}
