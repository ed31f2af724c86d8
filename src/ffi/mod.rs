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

mod options;

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use candle_core::DType;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::frames::{FrameLayout, FrameMut, FrameRef, PixelFormat, ResizeMode};
use crate::pipelines::{self, Inversion, Pipeline, Progress, Stage};
pub use options::*;

/// Result of every call. Zero is success.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cogvideo_status {
    COGVIDEO_OK = 0,
    /// A null pointer, a bad size, an option out of range, a non-UTF-8 string.
    COGVIDEO_ERR_INVALID_ARGUMENT = 1,
    /// A file or folder could not be read.
    COGVIDEO_ERR_IO = 2,
    /// The checkpoint's files are malformed or inconsistent.
    COGVIDEO_ERR_BAD_CHECKPOINT = 3,
    /// The loaded model cannot do this (e.g. image-to-video on a text model).
    COGVIDEO_ERR_UNSUPPORTED_VARIANT = 4,
    COGVIDEO_ERR_OUT_OF_MEMORY = 5,
    /// The GPU or its driver failed.
    COGVIDEO_ERR_DEVICE = 6,
    /// The progress callback asked to stop. Handles stay usable.
    COGVIDEO_ERR_CANCELLED = 7,
    /// A bug in the library (including a caught panic).
    COGVIDEO_ERR_INTERNAL = 8,
}
use cogvideo_status::*;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn status_of(err: &Error) -> cogvideo_status {
    match err {
        Error::InvalidArgument(_) => COGVIDEO_ERR_INVALID_ARGUMENT,
        Error::Io { .. } => COGVIDEO_ERR_IO,
        Error::BadCheckpoint { .. } => COGVIDEO_ERR_BAD_CHECKPOINT,
        Error::UnsupportedVariant(_) => COGVIDEO_ERR_UNSUPPORTED_VARIANT,
        Error::OutOfMemory(_) => COGVIDEO_ERR_OUT_OF_MEMORY,
        Error::Device(_) => COGVIDEO_ERR_DEVICE,
        Error::Cancelled => COGVIDEO_ERR_CANCELLED,
        Error::Internal(_) => COGVIDEO_ERR_INTERNAL,
    }
}

/// Runs `f`, turning errors and panics into a status and a message.
fn guard(f: impl FnOnce() -> Result<()>) -> cogvideo_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            COGVIDEO_OK
        }
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            status_of(&e)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (panic): {what}"));
            COGVIDEO_ERR_INTERNAL
        }
    }
}

/// The message of the last failed call on this thread ("" after a
/// successful call). Valid until the next call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn cogvideo_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

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

/// A loaded checkpoint. Calls on one pipeline from several threads are
/// safe; they run one after another.
pub struct cogvideo_pipeline {
    inner: Mutex<Pipeline>,
}

// The C side shares handles across threads; make the compiler check that
// this is sound.
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<cogvideo_pipeline>();
    shared_across_threads::<cogvideo_inversion>();
};

/// The result of [`cogvideo_invert_video`]: edit it any number of times with
/// [`cogvideo_edit_with_prompt`] on the same pipeline.
pub struct cogvideo_inversion {
    inner: Inversion,
}

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

fn layout_of(f: &cogvideo_frame, what: &str) -> Result<FrameLayout> {
    let format = match f.format {
        COGVIDEO_FORMAT_RGB8 => PixelFormat::Rgb8,
        COGVIDEO_FORMAT_RGBA8 => PixelFormat::Rgba8,
        COGVIDEO_FORMAT_RGBA16 => PixelFormat::Rgba16,
        COGVIDEO_FORMAT_RGBA32F => PixelFormat::Rgba32F,
        other => {
            return Err(Error::invalid(format!(
                "{what}: unknown pixel format {other}"
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
    let stride = isize::try_from(f.stride_bytes)
        .map_err(|_| Error::invalid(format!("{what}: stride out of range")))?;
    FrameLayout::new(f.width as usize, f.height as usize, format, stride)
        .map_err(|e| Error::invalid(format!("{what}: {e}")))
}

/// Borrows a caller's frame.
///
/// # Safety
/// `f.data` must point to the top row of a frame laid out as described,
/// valid for reads for the duration of the call.
unsafe fn frame_ref<'a>(f: &cogvideo_frame, what: &str) -> Result<FrameRef<'a>> {
    let layout = layout_of(f, what)?;
    let top = layout.top_offset();
    // SAFETY: the caller guarantees the described frame is readable; the
    // lowest-addressed row starts `top` bytes before the top row.
    let slice =
        unsafe { std::slice::from_raw_parts((f.data as *const u8).sub(top), layout.span()) };
    FrameRef::new(slice, top, layout)
}

/// Borrows a caller's output frame.
///
/// # Safety
/// As [`frame_ref`], and writable; output frames must not overlap.
unsafe fn frame_mut<'a>(f: &cogvideo_frame, what: &str) -> Result<FrameMut<'a>> {
    let layout = layout_of(f, what)?;
    let top = layout.top_offset();
    // SAFETY: as in `frame_ref`, plus writability and no aliasing, which the
    // header documents as the caller's duty.
    let slice =
        unsafe { std::slice::from_raw_parts_mut((f.data as *mut u8).sub(top), layout.span()) };
    FrameMut::new(slice, top, layout)
}

/// # Safety
/// `frames` must point to `count` frame descriptors.
unsafe fn frame_list<'a>(
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

/// # Safety
/// `s` must be NULL or a NUL-terminated string.
unsafe fn str_arg(s: *const c_char, what: &str) -> Result<String> {
    if s.is_null() {
        return Ok(String::new());
    }
    // SAFETY: caller guarantees a NUL-terminated string.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map(str::to_owned)
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

fn resize_mode(mode: u32) -> Result<ResizeMode> {
    match mode {
        COGVIDEO_RESIZE_STRETCH => Ok(ResizeMode::Stretch),
        COGVIDEO_RESIZE_CROP => Ok(ResizeMode::Crop),
        COGVIDEO_RESIZE_FIT => Ok(ResizeMode::Fit),
        other => Err(Error::invalid(format!("unknown resize mode {other}"))),
    }
}

/// Wraps a C progress callback.
fn progress_fn(
    cb: cogvideo_progress_fn,
    user: *mut c_void,
) -> impl FnMut(Stage, usize, usize) -> bool {
    let user = user as usize;
    move |stage, done, total| match cb {
        Some(f) => f(user as *mut c_void, stage as i32, done as i32, total as i32),
        None => true,
    }
}

/// Borrows the caller's output frames, checking them (count, layouts)
/// before any work starts so that a bad buffer costs nothing.
///
/// # Safety
/// `out` must point to `count` descriptors of writable, non-overlapping frames.
unsafe fn output_frames<'a>(
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

/// Loads a checkpoint folder in the diffusers layout. `opts` may be NULL
/// for defaults. On success `*out` holds a pipeline to free with
/// [`cogvideo_pipeline_free`].
///
/// # Safety
/// `path` must be a NUL-terminated string; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_load_pipeline(
    path: *const c_char,
    opts: *const cogvideo_load_options,
    out: *mut *mut cogvideo_pipeline,
) -> cogvideo_status {
    guard(|| {
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        // SAFETY: checked non-null; the caller owns the slot.
        unsafe { *out = std::ptr::null_mut() };
        if path.is_null() {
            return Err(Error::invalid("path is NULL"));
        }
        let path = unsafe { str_arg(path, "path") }?;
        let opts = unsafe { options::read(opts, "load options") }?;
        let load = options::load_options(&opts)?;
        let pipeline = Pipeline::load(path, &load)?;
        let handle = Box::new(cogvideo_pipeline {
            inner: Mutex::new(pipeline),
        });
        unsafe { *out = Box::into_raw(handle) };
        Ok(())
    })
}

/// Frees a pipeline. NULL is ignored.
///
/// # Safety
/// `p` must be NULL or a pipeline from [`cogvideo_load_pipeline`] not yet
/// freed, with no call on it in progress.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_free(p: *mut cogvideo_pipeline) {
    if !p.is_null() {
        // SAFETY: created by Box::into_raw in cogvideo_load_pipeline.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(p) })));
    }
}

/// The default `(width, height, frames)` the loaded variant generates.
///
/// # Safety
/// `p` must be a live pipeline; the out pointers must be writable or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_default_size(
    p: *const cogvideo_pipeline,
    width: *mut i32,
    height: *mut i32,
    frames: *mut i32,
) -> cogvideo_status {
    guard(|| {
        let p = unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))?;
        let (h, w, t) = p.inner.lock().default_video_size();
        for (ptr, v) in [(width, w), (height, h), (frames, t)] {
            if !ptr.is_null() {
                unsafe { *ptr = v as i32 };
            }
        }
        Ok(())
    })
}

/// Frames per second of the loaded variant's results (8 for CogVideoX 1.0
/// models, 16 for 1.5), for writing videos.
///
/// # Safety
/// `p` must be a live pipeline; `fps` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_fps(
    p: *const cogvideo_pipeline,
    fps: *mut i32,
) -> cogvideo_status {
    guard(|| {
        let p = unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))?;
        if fps.is_null() {
            return Err(Error::invalid("fps is NULL"));
        }
        unsafe { *fps = p.inner.lock().variant().fps() as i32 };
        Ok(())
    })
}

/// The number of frames text- or image-to-video produces for `num_frames`
/// (0: the default), i.e. the length of the output array to pass.
///
/// # Safety
/// `p` must be a live pipeline; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_output_frame_count(
    p: *const cogvideo_pipeline,
    num_frames: i32,
    out: *mut i32,
) -> cogvideo_status {
    guard(|| {
        let p = unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))?;
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        let pipeline = p.inner.lock();
        let n = match num_frames {
            0 => pipeline.default_video_size().2,
            n if n < 0 => return Err(Error::invalid(format!("num_frames {n} is negative"))),
            n => n as usize,
        };
        let count = pipeline.output_frame_count(n)?;
        unsafe { *out = count as i32 };
        Ok(())
    })
}

/// Generates a clip from text into `out[0..out_count]` (`out_count` must
/// equal the frame count; `opts->num_frames`, or the default when 0).
///
/// # Safety
/// Pointers as documented for [`cogvideo_frame`] and the options struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_generate_video(
    p: *const cogvideo_pipeline,
    opts: *const cogvideo_generate_options,
    out: *const cogvideo_frame,
    out_count: usize,
) -> cogvideo_status {
    guard(|| {
        let p = unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))?;
        let o = unsafe { options::read(opts, "generate options") }?;
        let gen_opts = unsafe { options::generate_options(&o) }?;
        let mode = resize_mode(o.resize_mode)?;
        let mut cb = progress_fn(o.progress, o.progress_user);
        let mut progress = Progress::new(&mut cb);
        let pipeline = p.inner.lock();
        let frames = gen_opts
            .num_frames
            .unwrap_or(pipeline.default_video_size().2);
        let expected = pipeline.output_frame_count(frames)?;
        let mut out = unsafe { output_frames(out, out_count, expected) }?;
        let video = pipeline.generate_video(&gen_opts, &mut progress)?.video;
        crate::frames::video_to_frames(&video, &mut out, mode)
    })
}

/// Animates one image into a clip (image-to-video checkpoints only). The
/// image is resized to the working size with `opts->resize_mode`.
///
/// # Safety
/// Pointers as documented for [`cogvideo_frame`] and the options struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_animate_image(
    p: *const cogvideo_pipeline,
    image: *const cogvideo_frame,
    opts: *const cogvideo_animate_options,
    out: *const cogvideo_frame,
    out_count: usize,
) -> cogvideo_status {
    guard(|| {
        let p = unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))?;
        let image = unsafe { image.as_ref() }.ok_or_else(|| Error::invalid("image is NULL"))?;
        let o = unsafe { options::read(opts, "animate options") }?;
        let anim = unsafe { options::animate_options(&o) }?;
        let mode = resize_mode(o.resize_mode)?;
        let pipeline = p.inner.lock();
        pipeline.variant().ensure_image_to_video()?;
        let (h, w, _) = pipeline.default_video_size();
        let (h, w) = working_size(o.height, o.width, (h, w))?;
        pipeline.check_size(h, w, anim.num_frames)?;
        let expected = pipeline.output_frame_count(anim.num_frames)?;
        let mut out = unsafe { output_frames(out, out_count, expected) }?;
        let frame = unsafe { frame_ref(image, "image") }?;
        let video = crate::frames::frames_to_video(&[frame], h, w, mode, pipeline.device())?;
        let image = video.squeeze(2)?;
        let mut cb = progress_fn(o.progress, o.progress_user);
        let mut progress = Progress::new(&mut cb);
        let video = pipeline.animate_image(&image, &anim, &mut progress)?.video;
        crate::frames::video_to_frames(&video, &mut out, mode)
    })
}

/// Inverts a clip for editing. Frames are resized to the working size
/// (`opts->width`/`height`, or the variant's default when 0); the clip is
/// cut to the longest usable length (4k+1 frames; 8k+5 for 1.5 models).
/// On success `*out` holds an inversion to free with
/// [`cogvideo_inversion_free`].
///
/// # Safety
/// Pointers as documented for [`cogvideo_frame`] and the options struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_invert_video(
    p: *const cogvideo_pipeline,
    frames: *const cogvideo_frame,
    frame_count: usize,
    opts: *const cogvideo_invert_options,
    out: *mut *mut cogvideo_inversion,
) -> cogvideo_status {
    guard(|| {
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        unsafe { *out = std::ptr::null_mut() };
        let p = unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))?;
        let o = unsafe { options::read(opts, "invert options") }?;
        let inv_opts = unsafe { options::invert_options(&o) }?;
        let mode = resize_mode(o.resize_mode)?;
        let descs = unsafe { frame_list(frames, frame_count, "input frames") }?;
        let pipeline = p.inner.lock();
        let usable = pipeline.usable_edit_frames(descs.len())?;
        let inputs = descs[..usable]
            .iter()
            .enumerate()
            .map(|(i, d)| unsafe { frame_ref(d, &format!("input frame {i}")) })
            .collect::<Result<Vec<_>>>()?;
        let (h, w, _) = pipeline.default_video_size();
        let (h, w) = working_size(o.height, o.width, (h, w))?;
        pipeline.check_size(h, w, usable)?;
        let video = crate::frames::frames_to_video(&inputs, h, w, mode, pipeline.device())?;
        let mut cb = progress_fn(o.progress, o.progress_user);
        let mut progress = Progress::new(&mut cb);
        let inversion = pipeline.invert_video(&video, &inv_opts, &mut progress)?;
        unsafe { *out = Box::into_raw(Box::new(cogvideo_inversion { inner: inversion })) };
        Ok(())
    })
}

/// The number of frames an edit of this inversion produces (the frames
/// array passed to [`cogvideo_edit_with_prompt`] must have this length).
///
/// # Safety
/// `inv` must be a live inversion; `frames` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_inversion_frame_count(
    inv: *const cogvideo_inversion,
    frames: *mut i32,
) -> cogvideo_status {
    guard(|| {
        let inv = unsafe { inv.as_ref() }.ok_or_else(|| Error::invalid("inversion is NULL"))?;
        if frames.is_null() {
            return Err(Error::invalid("frames is NULL"));
        }
        unsafe { *frames = pipelines::edited_frame_count(&inv.inner) as i32 };
        Ok(())
    })
}

/// Frees an inversion. NULL is ignored.
///
/// # Safety
/// `inv` must be NULL or a live inversion not in use by another call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_inversion_free(inv: *mut cogvideo_inversion) {
    if !inv.is_null() {
        // SAFETY: created by Box::into_raw in cogvideo_invert_video.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(inv) })));
    }
}

/// Reconstructs an inverted clip under a new prompt into
/// `out[0..out_count]` (see [`cogvideo_inversion_frame_count`]).
///
/// # Safety
/// Pointers as documented for [`cogvideo_frame`] and the options struct;
/// `inv` must come from the same pipeline.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_edit_with_prompt(
    p: *const cogvideo_pipeline,
    inv: *const cogvideo_inversion,
    opts: *const cogvideo_edit_options,
    out: *const cogvideo_frame,
    out_count: usize,
) -> cogvideo_status {
    guard(|| {
        let p = unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))?;
        let inv = unsafe { inv.as_ref() }.ok_or_else(|| Error::invalid("inversion is NULL"))?;
        let o = unsafe { options::read(opts, "edit options") }?;
        let edit = unsafe { options::edit_options(&o) }?;
        let mode = resize_mode(o.resize_mode)?;
        let mut cb = progress_fn(o.progress, o.progress_user);
        let mut progress = Progress::new(&mut cb);
        let pipeline = p.inner.lock();
        let expected = pipelines::edited_frame_count(&inv.inner);
        let mut out = unsafe { output_frames(out, out_count, expected) }?;
        let video = pipeline
            .edit_with_prompt(&inv.inner, &edit, &mut progress)?
            .video;
        crate::frames::video_to_frames(&video, &mut out, mode)
    })
}

/// The working `(height, width)` an options struct asks for: 0 takes the
/// variant's default, negative values are refused.
fn working_size(height: i32, width: i32, default: (usize, usize)) -> Result<(usize, usize)> {
    let pick = |v: i32, d: usize, what: &str| match v {
        0 => Ok(d),
        v if v < 0 => Err(Error::invalid(format!("{what} {v} is negative"))),
        v => Ok(v as usize),
    };
    Ok((
        pick(height, default.0, "height")?,
        pick(width, default.1, "width")?,
    ))
}

/// The compute precision named by `cogvideo_load_options.dtype`.
pub(crate) fn dtype_of(code: u32) -> Result<DType> {
    match code {
        COGVIDEO_DTYPE_F32 => Ok(DType::F32),
        COGVIDEO_DTYPE_BF16 => Ok(DType::BF16),
        COGVIDEO_DTYPE_F16 => Ok(DType::F16),
        other => Err(Error::invalid(format!("unknown dtype {other}"))),
    }
}
