//! Noise plans: the random draws a call makes, for callers that supply
//! their own noise.

use std::ffi::c_char;

use super::args::*;
use super::options::*;
use super::pipeline::*;
use super::requests;
use super::status::*;
use crate::error::{Error, Result};
use crate::pipelines::{self};

/// Writes a noise plan into the caller's array.
///
/// # Safety
/// `draws` must be NULL or writable for `capacity` entries; `count` writable.
pub(super) unsafe fn plan_out(
    plan: &pipelines::NoisePlan,
    draws: *mut cogvideo_noise_draw,
    capacity: usize,
    count: *mut usize,
) -> Result<()> {
    if count.is_null() {
        return Err(Error::invalid("count is NULL"));
    }
    if draws.is_null() && capacity != 0 {
        return Err(Error::invalid(format!(
            "draws is NULL but capacity is {capacity}"
        )));
    }
    let mut offset = 0u64;
    for (i, d) in plan.draws.iter().enumerate() {
        if i < capacity {
            let mut purpose = [0 as c_char; 32];
            for (dst, &b) in purpose.iter_mut().zip(d.purpose.as_bytes().iter().take(31)) {
                *dst = b as c_char;
            }
            let mut shape = [0i64; 5];
            for (dst, &v) in shape.iter_mut().zip(&d.shape) {
                *dst = v as i64;
            }
            let entry = cogvideo_noise_draw {
                purpose,
                ndim: d.shape.len() as i32,
                shape,
                offset,
                count: d.len() as u64,
            };
            // SAFETY: i < capacity, and the caller gave that many entries.
            unsafe { draws.add(i).write(entry) };
        }
        offset += d.len() as u64;
    }
    // SAFETY: checked non-null.
    unsafe { *count = plan.draws.len() };
    Ok(())
}

/// The random draws [`cogvideo_generate_video`] makes with these options:
/// `*count` receives their number and the first `capacity` are written to
/// `draws` (NULL with capacity 0 asks for the count only). Caller noise is
/// these draws' values concatenated: all of them, or a prefix ending at a
/// draw boundary (the seed supplies the rest). Never waits for a running call.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL pointer or
/// options the sampling call would refuse; COGVIDEO_ERR_UNSUPPORTED_VARIANT
/// when the loaded variant cannot do the operation.
///
/// # Safety
/// `draws` writable for `capacity` entries or NULL; `count` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_generate_noise_plan(
    p: *const cogvideo_pipeline,
    opts: *const cogvideo_generate_options,
    draws: *mut cogvideo_noise_draw,
    capacity: usize,
    count: *mut usize,
) -> cogvideo_status {
    guard(|| {
        let r = unsafe { requests::generate(p, opts) }?;
        unsafe { plan_out(&r.plan, draws, capacity, count) }
    })
}

/// As [`cogvideo_generate_noise_plan`], for [`cogvideo_animate_image`].
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL pointer or
/// options the sampling call would refuse; COGVIDEO_ERR_UNSUPPORTED_VARIANT
/// when the loaded variant cannot do the operation.
///
/// # Safety
/// As [`cogvideo_generate_noise_plan`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_animate_noise_plan(
    p: *const cogvideo_pipeline,
    opts: *const cogvideo_animate_options,
    draws: *mut cogvideo_noise_draw,
    capacity: usize,
    count: *mut usize,
) -> cogvideo_status {
    guard(|| {
        let r = unsafe { requests::animate(p, opts) }?;
        unsafe { plan_out(&r.plan, draws, capacity, count) }
    })
}

/// As [`cogvideo_generate_noise_plan`], for [`cogvideo_invert_video`] of a
/// clip of `frame_count` frames.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL pointer or
/// options the sampling call would refuse; COGVIDEO_ERR_UNSUPPORTED_VARIANT
/// when the loaded variant cannot do the operation.
///
/// # Safety
/// As [`cogvideo_generate_noise_plan`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_invert_noise_plan(
    p: *const cogvideo_pipeline,
    frame_count: usize,
    opts: *const cogvideo_invert_options,
    draws: *mut cogvideo_noise_draw,
    capacity: usize,
    count: *mut usize,
) -> cogvideo_status {
    guard(|| {
        let r = unsafe { requests::invert(p, frame_count, opts) }?;
        unsafe { plan_out(&r.plan, draws, capacity, count) }
    })
}

/// As [`cogvideo_generate_noise_plan`], for [`cogvideo_edit_with_prompt`].
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL pointer or
/// options the sampling call would refuse; COGVIDEO_ERR_UNSUPPORTED_VARIANT
/// when the loaded variant cannot do the operation.
///
/// # Safety
/// As [`cogvideo_generate_noise_plan`]; `inv` a live inversion.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_edit_noise_plan(
    p: *const cogvideo_pipeline,
    inv: *const cogvideo_inversion,
    opts: *const cogvideo_edit_options,
    draws: *mut cogvideo_noise_draw,
    capacity: usize,
    count: *mut usize,
) -> cogvideo_status {
    guard(|| {
        pipeline_ref(p)?;
        let inv = &inversion_ref(inv)?.inner;
        let r = unsafe { requests::edit(p, inv, opts) }?;
        unsafe { plan_out(&r.plan, draws, capacity, count) }
    })
}

/// As [`cogvideo_generate_noise_plan`], for [`cogvideo_video_to_video`] of
/// a clip of `frame_count` frames.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL pointer or
/// options the sampling call would refuse; COGVIDEO_ERR_UNSUPPORTED_VARIANT
/// when the loaded variant cannot do the operation.
///
/// # Safety
/// As [`cogvideo_generate_noise_plan`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_video_to_video_noise_plan(
    p: *const cogvideo_pipeline,
    frame_count: usize,
    opts: *const cogvideo_video_to_video_options,
    draws: *mut cogvideo_noise_draw,
    capacity: usize,
    count: *mut usize,
) -> cogvideo_status {
    guard(|| {
        let r = unsafe { requests::video_to_video(p, frame_count, opts) }?;
        unsafe { plan_out(&r.plan, draws, capacity, count) }
    })
}
