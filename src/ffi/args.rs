//! Converting and checking the other C arguments: strings, handles, out
//! pointers, progress callbacks, working sizes, dtypes.

use std::ffi::{CStr, c_char, c_void};

use candle_core::DType;

use super::options::*;
use super::pipeline::*;
use crate::error::{Error, Result};
use crate::pipelines::{Pipeline, Stage};

/// # Safety
/// `s` must be NULL or a NUL-terminated string.
pub(super) unsafe fn str_arg(s: *const c_char, what: &str) -> Result<String> {
    if s.is_null() {
        return Ok(String::new());
    }
    // SAFETY: caller guarantees a NUL-terminated string.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map(str::to_owned)
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// Wraps a C progress callback.
pub(super) fn progress_fn(
    cb: cogvideo_progress_fn,
    user: *mut c_void,
) -> impl FnMut(Stage, usize, usize) -> bool {
    let user = user as usize;
    move |stage, done, total| match cb {
        Some(f) => f(user as *mut c_void, stage as i32, done as i32, total as i32),
        None => true,
    }
}

pub(super) fn pipeline_ref<'a>(p: *const cogvideo_pipeline) -> Result<&'a cogvideo_pipeline> {
    // SAFETY: the caller passes NULL or a live pipeline.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))
}

pub(super) fn inversion_ref<'a>(inv: *const cogvideo_inversion) -> Result<&'a cogvideo_inversion> {
    // SAFETY: the caller passes NULL or a live inversion.
    unsafe { inv.as_ref() }.ok_or_else(|| Error::invalid("inversion is NULL"))
}

pub(super) fn shape_out(shape: &[usize], out: *mut i64) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid("shape is NULL"));
    }
    for (i, &d) in shape.iter().enumerate() {
        // SAFETY: the caller passes room for 5 values.
        unsafe { *out.add(i) = d as i64 };
    }
    Ok(())
}

pub(super) fn i32_out(out: *mut i32, value: usize, what: &str) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    let v = i32::try_from(value)
        .map_err(|_| Error::Internal(format!("{what} {value} does not fit in an int32")))?;
    // SAFETY: checked non-null; the caller owns the slot.
    unsafe { *out = v };
    Ok(())
}

/// A size an options struct gives: 0 for the default (`None`), negative
/// values refused.
pub(super) fn size_arg(v: i32, what: &str) -> Result<Option<usize>> {
    match v {
        0 => Ok(None),
        v if v < 0 => Err(Error::invalid(format!(
            "{what} must be 0 (the default) or positive, got {v}"
        ))),
        v => Ok(Some(v as usize)),
    }
}

/// The working `(height, width)` an options struct asks for, as the
/// pipeline resolves it.
pub(super) fn pipeline_working_size(
    p: &Pipeline,
    height: i32,
    width: i32,
) -> Result<(usize, usize)> {
    Ok(p.working_size(size_arg(height, "height")?, size_arg(width, "width")?))
}

/// The compute precision named by `cogvideo_load_options.dtype`.
pub(crate) fn dtype_of(code: u32) -> Result<DType> {
    match code {
        COGVIDEO_DTYPE_F32 => Ok(DType::F32),
        COGVIDEO_DTYPE_BF16 => Ok(DType::BF16),
        COGVIDEO_DTYPE_F16 => Ok(DType::F16),
        other => Err(Error::invalid(format!(
            "dtype {other} is not one of COGVIDEO_DTYPE_F32 (0), _BF16 (1), _F16 (2) or _AUTO (3)"
        ))),
    }
}
