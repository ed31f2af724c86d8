//! The C ABI (`include/cogvideo.h`, generated from this module by cbindgen).
//!
//! This is the only module with `extern "C"` functions and raw pointers.
//! Every entry point:
//! - validates its pointers and sizes before touching them,
//! - runs the work inside `catch_unwind`, so no Rust panic crosses the
//!   boundary (a panic becomes `COGVIDEO_ERR_INTERNAL`),
//! - records a message for the calling thread, read with
//!   [`cogvideo_last_error`].
//!
//! Names are C style on purpose: cbindgen copies them into the header.
#![allow(non_camel_case_types)]

mod args;
mod cache;
mod frames;
mod lora;
mod noise;
mod options;
mod pipeline;
mod requests;
mod sampling;
mod status;

use std::ffi::{CStr, c_char};

pub use cache::*;
pub use frames::*;
pub use lora::*;
pub use noise::*;
pub use options::*;
pub use pipeline::*;
pub use sampling::*;
pub use status::*;

/// The library version, e.g. "0.1.0". Static; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn cogvideo_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// Version of the C ABI this library implements: `major << 16 | minor`.
/// Minor versions only add functions and append fields to options structs
/// (a caller built against an older header keeps working: its smaller
/// `struct_size` is honoured); a new major version breaks compatibility.
pub const COGVIDEO_ABI_VERSION: u32 = 1 << 16 | 5;

/// The C ABI version, `COGVIDEO_ABI_VERSION` of the header the library was
/// built from: compare `>> 16` with the header's to check compatibility.
#[unsafe(no_mangle)]
pub extern "C" fn cogvideo_abi_version() -> u32 {
    COGVIDEO_ABI_VERSION
}
