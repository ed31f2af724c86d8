//! Caller-owned frame buffers: checking their descriptors and borrowing
//! them as input clips, images and output frames; latents handed back.

use std::ffi::c_void;

use candle_core::{DType, Tensor};

use super::options::*;
use crate::error::{Error, Result};
use crate::frames::{FrameLayout, FrameMut, FrameRef, PixelFormat, ResizeMode};
use crate::pipelines::{self, Pipeline, Progress};

/// A frame buffer owned by the caller. `data` points to the first byte of
/// the TOP row; `stride_bytes` is the signed distance from one row to the
/// next one down (negative for bottom-up images, as OpenFX hosts use).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_frame {
    pub data: *mut c_void,
    pub width: i32,
    pub height: i32,
    pub stride_bytes: i64,
    /// One of the `COGVIDEO_FORMAT_*` values.
    pub format: u32,
}

pub const COGVIDEO_FORMAT_RGB8: u32 = 0;
pub const COGVIDEO_FORMAT_RGBA8: u32 = 1;
pub const COGVIDEO_FORMAT_RGBA16: u32 = 2;
pub const COGVIDEO_FORMAT_RGBA32F: u32 = 3;

pub(super) fn layout_of(f: &cogvideo_frame, what: &str) -> Result<FrameLayout> {
    let format = match f.format {
        COGVIDEO_FORMAT_RGB8 => PixelFormat::Rgb8,
        COGVIDEO_FORMAT_RGBA8 => PixelFormat::Rgba8,
        COGVIDEO_FORMAT_RGBA16 => PixelFormat::Rgba16,
        COGVIDEO_FORMAT_RGBA32F => PixelFormat::Rgba32F,
        other => {
            return Err(Error::invalid(format!(
                "{what}: pixel format {other} is not one of COGVIDEO_FORMAT_RGB8 (0), _RGBA8 (1), _RGBA16 (2) or _RGBA32F (3)"
            )));
        }
    };
    if f.data.is_null() {
        return Err(Error::invalid(format!("{what}: data is NULL")));
    }
    if f.width <= 0 || f.height <= 0 {
        return Err(Error::invalid(format!(
            "{what}: size {}x{} is not positive",
            f.width, f.height
        )));
    }
    let stride = isize::try_from(f.stride_bytes).map_err(|_| {
        Error::invalid(format!("{what}: stride {} is out of range", f.stride_bytes))
    })?;
    FrameLayout::new(f.width as usize, f.height as usize, format, stride)
        .map_err(|e| e.context(what))
}

/// Borrows a caller's frame.
///
/// # Safety
/// `f.data` must point to the top row of a frame laid out as described,
/// valid for reads for the duration of the call.
pub(super) unsafe fn frame_ref<'a>(f: &cogvideo_frame, what: &str) -> Result<FrameRef<'a>> {
    let layout = layout_of(f, what)?;
    let top = layout.top_offset();
    // SAFETY: the caller guarantees the described frame is readable; the
    // lowest-addressed row starts `top` bytes before the top row.
    let slice =
        unsafe { std::slice::from_raw_parts((f.data as *const u8).sub(top), layout.span()) };
    FrameRef::new(slice, top, layout).map_err(|e| e.context(what))
}

/// Borrows a caller's output frame.
///
/// # Safety
/// As [`frame_ref`], and writable; output frames must not overlap.
pub(super) unsafe fn frame_mut<'a>(f: &cogvideo_frame, what: &str) -> Result<FrameMut<'a>> {
    let layout = layout_of(f, what)?;
    let top = layout.top_offset();
    // SAFETY: as in `frame_ref`, plus writability and no aliasing, which the
    // header documents as the caller's duty.
    let slice =
        unsafe { std::slice::from_raw_parts_mut((f.data as *mut u8).sub(top), layout.span()) };
    FrameMut::new(slice, top, layout).map_err(|e| e.context(what))
}

/// # Safety
/// `frames` must point to `count` frame descriptors.
pub(super) unsafe fn frame_list<'a>(
    frames: *const cogvideo_frame,
    count: usize,
    what: &str,
) -> Result<&'a [cogvideo_frame]> {
    if frames.is_null() {
        return Err(Error::invalid(format!("{what}: frame array is NULL")));
    }
    if count == 0 || count > 100_000 {
        return Err(Error::invalid(format!(
            "{what}: frame count {count} is out of range"
        )));
    }
    // SAFETY: caller guarantees `count` readable descriptors.
    Ok(unsafe { std::slice::from_raw_parts(frames, count) })
}

pub(super) fn resize_mode(mode: u32) -> Result<ResizeMode> {
    match mode {
        COGVIDEO_RESIZE_STRETCH => Ok(ResizeMode::Stretch),
        COGVIDEO_RESIZE_CROP => Ok(ResizeMode::Crop),
        COGVIDEO_RESIZE_FIT => Ok(ResizeMode::Fit),
        other => Err(Error::invalid(format!(
            "resize mode {other} is not one of COGVIDEO_RESIZE_STRETCH (0), _CROP (1) or _FIT (2)"
        ))),
    }
}

/// Borrows the caller's output frames, checking them (count, layouts)
/// before any work starts so that a bad buffer costs nothing.
///
/// # Safety
/// `out` must point to `count` descriptors of writable, non-overlapping frames.
pub(super) unsafe fn output_frames<'a>(
    out: *const cogvideo_frame,
    count: usize,
    expected: usize,
) -> Result<Vec<FrameMut<'a>>> {
    let descs = unsafe { frame_list(out, count, "output frames") }?;
    if count != expected {
        return Err(Error::invalid(format!(
            "the result has {expected} frames but {count} output frames were given"
        )));
    }
    descs
        .iter()
        .enumerate()
        .map(|(i, d)| unsafe { frame_mut(d, &format!("output frame {i}")) })
        .collect()
}

/// Checks the caller's latents buffer against the shape a call produces.
pub(super) fn check_latents_out(ptr: *mut f32, len: usize, shape: &[usize]) -> Result<()> {
    let need: usize = shape.iter().product();
    if ptr.is_null() {
        if len != 0 {
            return Err(Error::invalid(format!(
                "latents_out is NULL but latents_out_len is {len}"
            )));
        }
    } else if len != need {
        return Err(Error::invalid(format!(
            "latents_out_len is {len} but the latents {shape:?} take {need} values"
        )));
    }
    Ok(())
}

/// Copies latents into the caller's buffer (already checked).
pub(super) fn write_latents(latents: &Tensor, ptr: *mut f32, len: usize) -> Result<()> {
    if ptr.is_null() {
        return Ok(());
    }
    let values = latents
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if values.len() != len {
        return Err(Error::Internal(format!(
            "{} latent values for a buffer of {len}",
            values.len()
        )));
    }
    // SAFETY: the caller guarantees `len` writable floats at `ptr`.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }.copy_from_slice(&values);
    Ok(())
}

/// What a sampling call hands back: frames, latents, or both.
pub(super) struct Outputs<'a> {
    frames: Option<Vec<FrameMut<'a>>>,
    latents: (*mut f32, usize),
    mode: ResizeMode,
}

impl<'a> Outputs<'a> {
    /// Checks every output before any work starts. `out == NULL` with
    /// `out_count == 0` asks for latents only.
    ///
    /// # Safety
    /// As [`output_frames`]; `latents` must be NULL or writable for its length.
    pub(super) unsafe fn new(
        out: *const cogvideo_frame,
        out_count: usize,
        frames: usize,
        latents: (*mut f32, usize),
        latent_shape: &[usize],
        mode: ResizeMode,
    ) -> Result<Self> {
        check_latents_out(latents.0, latents.1, latent_shape)?;
        let frames = if out.is_null() && out_count == 0 {
            if latents.0.is_null() {
                return Err(Error::invalid(
                    "nothing to return: pass output frames, latents_out, or both",
                ));
            }
            None
        } else {
            Some(unsafe { output_frames(out, out_count, frames) }?)
        };
        Ok(Self {
            frames,
            latents,
            mode,
        })
    }

    /// [`Self::new`] for a sampling call making a `height x width` clip of
    /// `frames` frames.
    ///
    /// # Safety
    /// As [`Self::new`].
    pub(super) unsafe fn for_clip(
        pipeline: &Pipeline,
        (out, out_count): (*const cogvideo_frame, usize),
        latents: (*mut f32, usize),
        (height, width, frames): (usize, usize, usize),
        mode: ResizeMode,
    ) -> Result<Self> {
        let shape = pipeline.latent_shape(height, width, frames)?;
        let count = pipeline.output_frame_count(frames)?;
        unsafe { Self::new(out, out_count, count, latents, &shape, mode) }
    }

    /// Hands the latents over first, so that they survive a failed or
    /// cancelled decode, then decodes into the frames if any were given.
    pub(super) fn deliver(
        &mut self,
        pipeline: &Pipeline,
        latents: &Tensor,
        progress: &mut Progress,
    ) -> Result<()> {
        write_latents(latents, self.latents.0, self.latents.1)?;
        if let Some(frames) = &mut self.frames {
            let video =
                pipeline.decode_latents(latents, &pipelines::DecodeOptions::default(), progress)?;
            crate::frames::video_to_frames(&video, frames, self.mode)?;
        }
        Ok(())
    }
}

/// Borrows an input clip's first `usable` frames, checking each.
///
/// # Safety
/// `descs` must describe readable frames.
pub(super) unsafe fn input_frames<'a>(
    descs: &[cogvideo_frame],
    usable: usize,
) -> Result<Vec<FrameRef<'a>>> {
    descs[..usable]
        .iter()
        .enumerate()
        .map(|(i, d)| unsafe { frame_ref(d, &format!("input frame {i}")) })
        .collect()
}
