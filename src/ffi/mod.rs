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

use candle_core::{DType, Tensor};
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
    /// Set while this thread runs inside [`guard`]: panics there are caught
    /// and reported through the status, so they must not print to the
    /// host's stderr.
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Messages are one line: a caller shows them in a status bar or a log.
/// The library's own messages are; anything after a first line comes from
/// elsewhere (a backtrace that `RUST_BACKTRACE` adds to a dependency's error)
/// and is dropped.
fn set_last_error(msg: &str) {
    let line = msg
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let c = CString::new(line.replace('\0', " ")).unwrap_or_default();
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

/// Installs, once, a panic hook that stays silent for panics inside a C
/// API call (they become `COGVIDEO_ERR_INTERNAL` with the message) and
/// defers to the previous hook everywhere else, so the host's own panics
/// are reported as before.
fn quiet_panics_in_calls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CALL.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
}

/// Runs `f` with panics caught and kept off the host's stderr.
fn catch_quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    quiet_panics_in_calls();
    let outer = IN_CALL.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_CALL.with(|c| c.set(outer));
    result
}

/// Runs `f`, turning errors and panics into a status and a message.
fn guard(f: impl FnOnce() -> Result<()>) -> cogvideo_status {
    match catch_quietly(f) {
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

/// Version of the C ABI this library implements: `major << 16 | minor`.
/// Minor versions only add functions and append fields to options structs
/// (a caller built against an older header keeps working: its smaller
/// `struct_size` is honoured); a new major version breaks compatibility.
pub const COGVIDEO_ABI_VERSION: u32 = 1 << 16 | 2;

/// The C ABI version, `COGVIDEO_ABI_VERSION` of the header the library was
/// built from: compare `>> 16` with the header's to check compatibility.
#[unsafe(no_mangle)]
pub extern "C" fn cogvideo_abi_version() -> u32 {
    COGVIDEO_ABI_VERSION
}

/// A loaded checkpoint. Calls on one pipeline from several threads are
/// safe; generating calls run one after another, while read-only queries
/// (sizes, frame counts, fps, noise plans) never wait for them.
pub struct cogvideo_pipeline {
    pipeline: Pipeline,
    /// Held by the long calls: one at a time keeps the memory of one call.
    busy: Mutex<()>,
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
unsafe fn frame_ref<'a>(f: &cogvideo_frame, what: &str) -> Result<FrameRef<'a>> {
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
unsafe fn frame_mut<'a>(f: &cogvideo_frame, what: &str) -> Result<FrameMut<'a>> {
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
        other => Err(Error::invalid(format!(
            "resize mode {other} is not one of COGVIDEO_RESIZE_STRETCH (0), _CROP (1) or _FIT (2)"
        ))),
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

/// Checks the caller's latents buffer against the shape a call produces.
fn check_latents_out(ptr: *mut f32, len: usize, shape: &[usize]) -> Result<()> {
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
fn write_latents(latents: &Tensor, ptr: *mut f32, len: usize) -> Result<()> {
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
struct Outputs<'a> {
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
    unsafe fn new(
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
    unsafe fn for_clip(
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
    fn deliver(
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

/// The common end of the sampling calls: with the caller's progress
/// callback and the pipeline to itself, samples with `sample` and delivers
/// the latents (then the frames) to `outputs`.
fn sample_and_deliver(
    handle: &cogvideo_pipeline,
    (callback, user): (cogvideo_progress_fn, *mut c_void),
    mut outputs: Outputs,
    sample: impl FnOnce(&Pipeline, &mut Progress) -> Result<Tensor>,
) -> Result<()> {
    let mut cb = progress_fn(callback, user);
    let mut progress = Progress::new(&mut cb);
    let _busy = handle.busy.lock();
    let latents = sample(&handle.pipeline, &mut progress)?;
    outputs.deliver(&handle.pipeline, &latents, &mut progress)
}

fn pipeline_ref<'a>(p: *const cogvideo_pipeline) -> Result<&'a cogvideo_pipeline> {
    // SAFETY: the caller passes NULL or a live pipeline.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid("pipeline is NULL"))
}

fn inversion_ref<'a>(inv: *const cogvideo_inversion) -> Result<&'a cogvideo_inversion> {
    // SAFETY: the caller passes NULL or a live inversion.
    unsafe { inv.as_ref() }.ok_or_else(|| Error::invalid("inversion is NULL"))
}

fn shape_out(shape: &[usize], out: *mut i64) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid("shape is NULL"));
    }
    for (i, &d) in shape.iter().enumerate() {
        // SAFETY: the caller passes room for 5 values.
        unsafe { *out.add(i) = d as i64 };
    }
    Ok(())
}

fn i32_out(out: *mut i32, value: usize, what: &str) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    let v = i32::try_from(value)
        .map_err(|_| Error::Internal(format!("{what} {value} does not fit in an int32")))?;
    // SAFETY: checked non-null; the caller owns the slot.
    unsafe { *out = v };
    Ok(())
}

/// Writes a noise plan into the caller's array.
///
/// # Safety
/// `draws` must be NULL or writable for `capacity` entries; `count` writable.
unsafe fn plan_out(
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
            pipeline,
            busy: Mutex::new(()),
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
        // SAFETY: created by Box::into_raw in cogvideo_load_pipeline. Freeing
        // leaves the thread's last message alone.
        let _ = catch_quietly(|| drop(unsafe { Box::from_raw(p) }));
    }
}

/// The default `(width, height, frames)` the loaded variant generates.
/// Never waits for a running call.
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
        let (h, w, t) = pipeline_ref(p)?.pipeline.default_video_size();
        for (ptr, v, what) in [
            (width, w, "width"),
            (height, h, "height"),
            (frames, t, "frames"),
        ] {
            if !ptr.is_null() {
                i32_out(ptr, v, what)?;
            }
        }
        Ok(())
    })
}

/// Frames per second of the loaded variant's results (8 for CogVideoX 1.0
/// models, 16 for 1.5), for writing videos. Never waits for a running call.
///
/// # Safety
/// `p` must be a live pipeline; `fps` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_fps(
    p: *const cogvideo_pipeline,
    fps: *mut i32,
) -> cogvideo_status {
    guard(|| {
        let fps_value = pipeline_ref(p)?.pipeline.variant().fps() as usize;
        i32_out(fps, fps_value, "fps")
    })
}

/// Memory of a pipeline, from [`cogvideo_pipeline_memory_info`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_memory_info {
    /// `sizeof(cogvideo_memory_info)`, set by the caller (or
    /// `cogvideo_memory_info_init`): the library fills the fields it covers.
    pub struct_size: u32,
    /// What stays loaded: `COGVIDEO_RESIDENCY_RESIDENT`, `_PER_COMPONENT` or
    /// `_STREAMED` (the choice `_AUTO` made).
    pub residency: u32,
    /// All models' weights in their compute dtypes.
    pub weight_bytes: u64,
    /// The weights held between calls in this residency.
    pub kept_weight_bytes: u64,
    /// Estimated peak memory of the running or last call (weights held
    /// during it included); 0 before the first call.
    pub estimated_peak_bytes: u64,
    /// The process's peak and current resident memory (CPU memory; the host
    /// application's included); 0 where the system does not say.
    pub peak_rss_bytes: u64,
    pub current_rss_bytes: u64,
}

/// Sets `info`'s `struct_size` and zeroes the rest (NULL is ignored).
///
/// # Safety
/// `info` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_memory_info_init(info: *mut cogvideo_memory_info) {
    if let Some(info) = unsafe { info.as_mut() } {
        *info = cogvideo_memory_info {
            struct_size: std::mem::size_of::<cogvideo_memory_info>() as u32,
            residency: 0,
            weight_bytes: 0,
            kept_weight_bytes: 0,
            estimated_peak_bytes: 0,
            peak_rss_bytes: 0,
            current_rss_bytes: 0,
        };
    }
}

/// The residency in effect, the weights' size, and the estimated and
/// measured peak memory (see [`cogvideo_memory_info`]); fills `info` up to
/// its `struct_size`. Never waits for a running call, so a progress
/// callback may call it to show the figures. Since 1.2.
///
/// # Safety
/// `p` must be a live pipeline; `info` writable for its `struct_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_memory_info(
    p: *const cogvideo_pipeline,
    info: *mut cogvideo_memory_info,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        if info.is_null() {
            return Err(Error::invalid("info is NULL"));
        }
        // SAFETY: the struct starts with its u32 struct_size.
        let size = unsafe { *(info as *const u32) } as usize;
        let min = std::mem::offset_of!(cogvideo_memory_info, current_rss_bytes) + 8;
        if size < min {
            return Err(Error::invalid(format!(
                "cogvideo_memory_info: struct_size {size} is smaller than the {min} bytes of the oldest version; initialise it with cogvideo_memory_info_init"
            )));
        }
        let r = pipeline.memory_report();
        let out = cogvideo_memory_info {
            struct_size: size as u32,
            residency: match r.residency {
                pipelines::Residency::PerComponent => COGVIDEO_RESIDENCY_PER_COMPONENT,
                pipelines::Residency::Streamed => COGVIDEO_RESIDENCY_STREAMED,
                _ => COGVIDEO_RESIDENCY_RESIDENT,
            },
            weight_bytes: r.weights.total(),
            kept_weight_bytes: r.kept_weight_bytes,
            estimated_peak_bytes: r.estimated_peak_bytes,
            peak_rss_bytes: r.peak_rss_bytes.unwrap_or(0),
            current_rss_bytes: r.current_rss_bytes.unwrap_or(0),
        };
        let len = size.min(std::mem::size_of::<cogvideo_memory_info>());
        // SAFETY: the caller's struct is writable for `size` bytes; ours is
        // plain data of at least `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&out as *const cogvideo_memory_info) as *const u8,
                info as *mut u8,
                len,
            );
        }
        Ok(())
    })
}

/// What stays loaded (`COGVIDEO_RESIDENCY_*`, the choice `_AUTO` made), the
/// bytes of all models' weights in their compute dtypes, and the process's
/// peak resident memory so far (bytes; 0 where the system does not say).
/// Any pointer may be NULL. Never waits for a running call. Since 1.1;
/// [`cogvideo_pipeline_memory_info`] reports more.
///
/// # Safety
/// `p` must be a live pipeline; the out pointers writable or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_memory(
    p: *const cogvideo_pipeline,
    residency: *mut u32,
    weight_bytes: *mut u64,
    peak_rss_bytes: *mut u64,
) -> cogvideo_status {
    let mut info = std::mem::MaybeUninit::<cogvideo_memory_info>::uninit();
    // SAFETY: init fills the whole struct; the query reads p and writes info.
    let status = unsafe {
        cogvideo_memory_info_init(info.as_mut_ptr());
        cogvideo_pipeline_memory_info(p, info.as_mut_ptr())
    };
    if status != cogvideo_status::COGVIDEO_OK {
        return status;
    }
    // SAFETY: initialised above; each out pointer is NULL or writable.
    unsafe {
        let info = info.assume_init();
        if let Some(r) = residency.as_mut() {
            *r = info.residency;
        }
        if let Some(w) = weight_bytes.as_mut() {
            *w = info.weight_bytes;
        }
        if let Some(peak) = peak_rss_bytes.as_mut() {
            *peak = info.peak_rss_bytes;
        }
    }
    status
}

/// Since 1.2: where the pipeline runs, as loading resolved
/// `COGVIDEO_DEVICE_AUTO` and `COGVIDEO_DTYPE_AUTO`: `COGVIDEO_DEVICE_CPU` or
/// `_CUDA`, the CUDA ordinal (0 on the CPU) and the compute dtype
/// (`COGVIDEO_DTYPE_F32`, `_BF16` or `_F16`). Any pointer may be NULL.
/// Never waits for a running call.
///
/// # Safety
/// `p` must be a live pipeline; the out pointers writable or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_device(
    p: *const cogvideo_pipeline,
    device: *mut u32,
    device_index: *mut i32,
    dtype: *mut u32,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        let (kind, index) = match pipeline.device().location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => (COGVIDEO_DEVICE_CUDA, gpu_id),
            _ => (COGVIDEO_DEVICE_CPU, 0),
        };
        let code = match pipeline.dtype() {
            DType::BF16 => COGVIDEO_DTYPE_BF16,
            DType::F16 => COGVIDEO_DTYPE_F16,
            _ => COGVIDEO_DTYPE_F32,
        };
        if !device_index.is_null() {
            i32_out(device_index, index, "device_index")?;
        }
        // SAFETY: each pointer is NULL or a writable slot of its type.
        unsafe {
            if let Some(d) = device.as_mut() {
                *d = kind;
            }
            if let Some(t) = dtype.as_mut() {
                *t = code;
            }
        }
        Ok(())
    })
}

/// Since 1.2: which attention kernel the pipeline runs, in words, for logs
/// and support: "cuDNN 9.13.1 unified SDPA", "chunked (cuDNN not found:
/// ...)", "fused CPU kernel (f32)"; shapes cuDNN refused (run chunked) are
/// listed as they occur. Writes at most `len` bytes including the NUL
/// (truncating; `buf` may be NULL with `len` 0) and the full length
/// without the NUL to `needed` (may be NULL). Never waits for a running
/// call. `COGVIDEO_ATTENTION=chunked` in the environment forces the chunked
/// path (for parity checks).
///
/// # Safety
/// `p` must be a live pipeline; `buf` writable for `len` bytes (or NULL
/// with `len` 0); `needed` writable or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_attention(
    p: *const cogvideo_pipeline,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> cogvideo_status {
    guard(|| {
        let text = pipeline_ref(p)?.pipeline.attention_backend();
        if buf.is_null() && len != 0 {
            return Err(Error::invalid("buf is NULL but len is not 0"));
        }
        let bytes = text.as_bytes();
        if len > 0 {
            let n = bytes.len().min(len - 1);
            // SAFETY: `buf` is writable for `len` > n bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, n);
                *buf.add(n) = 0;
            }
        }
        // SAFETY: NULL or a writable slot.
        if let Some(out) = unsafe { needed.as_mut() } {
            *out = bytes.len();
        }
        Ok(())
    })
}

/// The number of frames text-, image-to-video or video-to-video produces
/// for `num_frames` (0: the default), i.e. the length of the output array
/// to pass. Never waits for a running call.
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
        let pipeline = &pipeline_ref(p)?.pipeline;
        let n = match num_frames {
            0 => pipeline.default_video_size().2,
            n if n < 0 => {
                return Err(Error::invalid(format!(
                    "num_frames must be 0 (the default) or positive, got {n}"
                )));
            }
            n => n as usize,
        };
        i32_out(out, pipeline.output_frame_count(n)?, "out")
    })
}

/// The shape `[1, F, 16, height/8, width/8]` of the latents a sampling call
/// at this working size (0: the default) and frame count (0: the default)
/// returns through `latents_out`; their count is the product. Never waits
/// for a running call.
///
/// # Safety
/// `p` must be a live pipeline; `shape` writable for 5 values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_latent_shape(
    p: *const cogvideo_pipeline,
    width: i32,
    height: i32,
    num_frames: i32,
    shape: *mut i64,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        let (dh, dw, dt) = pipeline.default_video_size();
        let (h, w) = working_size(height, width, (dh, dw))?;
        let t = match num_frames {
            0 => dt,
            n if n < 0 => {
                return Err(Error::invalid(format!(
                    "num_frames must be 0 (the default) or positive, got {n}"
                )));
            }
            n => n as usize,
        };
        shape_out(&pipeline.latent_shape(h, w, t)?, shape)
    })
}

/// The number of frames [`cogvideo_decode_latents`] produces from
/// `latent_frames` latent frames (an odd count F gives 4(F-1)+1 frames, an
/// even one 4F, as diffusers decodes).
///
/// # Safety
/// `frames` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_decoded_frame_count(
    latent_frames: i32,
    frames: *mut i32,
) -> cogvideo_status {
    guard(|| {
        let max = (pipelines::MAX_FRAMES - 1) / 4 + 1;
        let f = usize::try_from(latent_frames)
            .ok()
            .filter(|f| (1..=max).contains(f))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "latent_frames must be between 1 and {max}, got {latent_frames}"
                ))
            })?;
        i32_out(frames, pipelines::decoded_frame_count(f), "frames")
    })
}

/// Generates a clip from text into `out[0..out_count]` (`out_count` must
/// equal [`cogvideo_output_frame_count`] for `opts->num_frames`), and/or
/// its latents into `opts->latents_out`.
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
        let handle = pipeline_ref(p)?;
        let pipeline = &handle.pipeline;
        let o = unsafe { options::read(opts, "generate options") }?;
        let (mut gen_opts, noise) = unsafe { options::generate_options(&o) }?;
        let mode = resize_mode(o.resize_mode)?;
        let plan = pipeline.noise_plan_generate(&gen_opts)?;
        let (dh, dw, dt) = pipeline.default_video_size();
        let (h, w, t) = (
            gen_opts.height.unwrap_or(dh),
            gen_opts.width.unwrap_or(dw),
            gen_opts.num_frames.unwrap_or(dt),
        );
        let outputs = unsafe {
            Outputs::for_clip(
                pipeline,
                (out, out_count),
                (o.latents_out, o.latents_out_len),
                (h, w, t),
                mode,
            )
        }?;
        unsafe { noise.attach(&plan, &mut gen_opts.sampling.noise) }?;
        sample_and_deliver(
            handle,
            (o.progress, o.progress_user),
            outputs,
            |p, progress| p.generate_latents(&gen_opts, progress),
        )
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
        let handle = pipeline_ref(p)?;
        let pipeline = &handle.pipeline;
        let image = unsafe { image.as_ref() }.ok_or_else(|| Error::invalid("image is NULL"))?;
        let o = unsafe { options::read(opts, "animate options") }?;
        let (mut anim, noise) = unsafe { options::animate_options(&o) }?;
        let mode = resize_mode(o.resize_mode)?;
        let (h, w) = pipeline_working_size(pipeline, o.height, o.width)?;
        let plan = pipeline.noise_plan_animate(h, w, &anim)?;
        let outputs = unsafe {
            Outputs::for_clip(
                pipeline,
                (out, out_count),
                (o.latents_out, o.latents_out_len),
                (h, w, anim.num_frames),
                mode,
            )
        }?;
        pipeline.check_fits(
            h,
            w,
            anim.num_frames,
            anim.sampling.guidance_scale > 1.0,
            false,
        )?;
        unsafe { noise.attach(&plan, &mut anim.sampling.noise) }?;
        let frame = unsafe { frame_ref(image, "image") }?;
        sample_and_deliver(
            handle,
            (o.progress, o.progress_user),
            outputs,
            |p, progress| {
                let video = crate::frames::frames_to_video(&[frame], h, w, mode, p.device())?;
                p.animate_latents(&video.squeeze(2)?, &anim, progress)
            },
        )
    })
}

/// Borrows an input clip's first `usable` frames, checking each.
///
/// # Safety
/// `descs` must describe readable frames.
unsafe fn input_frames<'a>(descs: &[cogvideo_frame], usable: usize) -> Result<Vec<FrameRef<'a>>> {
    descs[..usable]
        .iter()
        .enumerate()
        .map(|(i, d)| unsafe { frame_ref(d, &format!("input frame {i}")) })
        .collect()
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
        let handle = pipeline_ref(p)?;
        let pipeline = &handle.pipeline;
        let o = unsafe { options::read(opts, "invert options") }?;
        let (mut inv_opts, noise) = options::invert_options(&o)?;
        let mode = resize_mode(o.resize_mode)?;
        let descs = unsafe { frame_list(frames, frame_count, "input frames") }?;
        let usable = pipeline.usable_edit_frames(descs.len())?;
        let (h, w) = pipeline_working_size(pipeline, o.height, o.width)?;
        let plan = pipeline.noise_plan_invert(h, w, usable, &inv_opts)?;
        pipeline.check_fits(h, w, usable, false, false)?;
        let inputs = unsafe { input_frames(descs, usable) }?;
        unsafe { noise.attach(&plan, &mut inv_opts.noise) }?;
        let mut cb = progress_fn(o.progress, o.progress_user);
        let mut progress = Progress::new(&mut cb);
        let _busy = handle.busy.lock();
        let video = crate::frames::frames_to_video(&inputs, h, w, mode, pipeline.device())?;
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
        let inv = inversion_ref(inv)?;
        i32_out(frames, pipelines::edited_frame_count(&inv.inner), "frames")
    })
}

/// The shape `[1, F, 16, h, w]` of this inversion's latents: what an edit
/// returns through `latents_out`.
///
/// # Safety
/// `inv` must be a live inversion; `shape` writable for 5 values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_inversion_latent_shape(
    inv: *const cogvideo_inversion,
    shape: *mut i64,
) -> cogvideo_status {
    guard(|| shape_out(inversion_ref(inv)?.inner.inverted_latents().dims(), shape))
}

/// Frees an inversion. NULL is ignored.
///
/// # Safety
/// `inv` must be NULL or a live inversion not in use by another call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_inversion_free(inv: *mut cogvideo_inversion) {
    if !inv.is_null() {
        // SAFETY: created by Box::into_raw in cogvideo_invert_video.
        let _ = catch_quietly(|| drop(unsafe { Box::from_raw(inv) }));
    }
}

/// Reconstructs an inverted clip under a new prompt into
/// `out[0..out_count]` (see [`cogvideo_inversion_frame_count`]) and/or its
/// latents into `opts->latents_out`.
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
        let handle = pipeline_ref(p)?;
        let pipeline = &handle.pipeline;
        let inv = &inversion_ref(inv)?.inner;
        let o = unsafe { options::read(opts, "edit options") }?;
        let (mut edit, noise) = unsafe { options::edit_options(&o) }?;
        let mode = resize_mode(o.resize_mode)?;
        let plan = pipeline.noise_plan_edit(inv, &edit)?;
        let outputs = unsafe {
            Outputs::new(
                out,
                out_count,
                pipelines::edited_frame_count(inv),
                (o.latents_out, o.latents_out_len),
                inv.inverted_latents().dims(),
                mode,
            )
        }?;
        unsafe { noise.attach(&plan, &mut edit.noise) }?;
        sample_and_deliver(
            handle,
            (o.progress, o.progress_user),
            outputs,
            |p, progress| p.edit_latents(inv, &edit, progress),
        )
    })
}

/// Restyles a clip by a prompt, as diffusers' `CogVideoXVideoToVideoPipeline`
/// (text-to-video checkpoints): the clip is cut to its longest usable
/// length as for [`cogvideo_invert_video`], resized to the working size,
/// encoded, noised to `opts->strength` and denoised. `out_count` must equal
/// [`cogvideo_output_frame_count`] of the usable length.
///
/// # Safety
/// Pointers as documented for [`cogvideo_frame`] and the options struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_video_to_video(
    p: *const cogvideo_pipeline,
    frames: *const cogvideo_frame,
    frame_count: usize,
    opts: *const cogvideo_video_to_video_options,
    out: *const cogvideo_frame,
    out_count: usize,
) -> cogvideo_status {
    guard(|| {
        let handle = pipeline_ref(p)?;
        let pipeline = &handle.pipeline;
        let o = unsafe { options::read(opts, "video-to-video options") }?;
        let (mut v2v, noise) = unsafe { options::video_to_video_options(&o) }?;
        let mode = resize_mode(o.resize_mode)?;
        let descs = unsafe { frame_list(frames, frame_count, "input frames") }?;
        let usable = pipeline.usable_edit_frames(descs.len())?;
        let (h, w) = pipeline_working_size(pipeline, o.height, o.width)?;
        let plan = pipeline.noise_plan_video_to_video(h, w, usable, &v2v)?;
        let outputs = unsafe {
            Outputs::for_clip(
                pipeline,
                (out, out_count),
                (o.latents_out, o.latents_out_len),
                (h, w, usable),
                mode,
            )
        }?;
        pipeline.check_fits(h, w, usable, v2v.sampling.guidance_scale > 1.0, false)?;
        let inputs = unsafe { input_frames(descs, usable) }?;
        unsafe { noise.attach(&plan, &mut v2v.sampling.noise) }?;
        sample_and_deliver(
            handle,
            (o.progress, o.progress_user),
            outputs,
            |p, progress| {
                let video = crate::frames::frames_to_video(&inputs, h, w, mode, p.device())?;
                p.video_to_video_latents(&video, &v2v, progress)
            },
        )
    })
}

/// Decodes latents (as a sampling call returned them through `latents_out`,
/// f32 `[1, F, 16, h, w]` row-major, `shape` giving those five numbers) into
/// `out[0..out_count]`, `out_count` being [`cogvideo_decoded_frame_count`]
/// of F. `opts` (NULL for defaults) chooses tiling for this call only.
///
/// # Safety
/// `latents` must hold the product of `shape` floats; frames as documented
/// for [`cogvideo_frame`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_decode_latents(
    p: *const cogvideo_pipeline,
    latents: *const f32,
    shape: *const i64,
    opts: *const cogvideo_decode_options,
    out: *const cogvideo_frame,
    out_count: usize,
) -> cogvideo_status {
    guard(|| {
        let handle = pipeline_ref(p)?;
        let pipeline = &handle.pipeline;
        if latents.is_null() || shape.is_null() {
            return Err(Error::invalid("latents or shape is NULL"));
        }
        // SAFETY: the caller passes 5 values.
        let raw = unsafe { std::slice::from_raw_parts(shape, 5) };
        let dims = raw
            .iter()
            .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0 && d <= 1 << 20))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                Error::invalid(format!(
                    "latent shape {raw:?} has a zero, negative or absurd size"
                ))
            })?;
        let o = unsafe { options::read(opts, "decode options") }?;
        let decode = options::decode_options(&o)?;
        let mode = resize_mode(o.resize_mode)?;
        // Checked before a value is read: the shape says how much to read.
        pipeline.check_latent_dims(&dims)?;
        let (f, h, w) = (dims[1], dims[3], dims[4]);
        pipeline.check_decode_fits(
            8 * h,
            8 * w,
            pipelines::decoded_frame_count(f),
            &decode,
            true,
        )?;
        let mut frames =
            unsafe { output_frames(out, out_count, pipelines::decoded_frame_count(f)) }?;
        let n: usize = dims.iter().product();
        let mut values = crate::memory::try_zeroed::<f32>(n, "latents")?;
        // SAFETY: the caller guarantees `n` readable floats.
        values.copy_from_slice(unsafe { std::slice::from_raw_parts(latents, n) });
        let tensor = Tensor::from_vec(values, dims, pipeline.device())?;
        let mut cb = progress_fn(o.progress, o.progress_user);
        let mut progress = Progress::new(&mut cb);
        let _busy = handle.busy.lock();
        let video = pipeline.decode_latents(&tensor, &decode, &mut progress)?;
        crate::frames::video_to_frames(&video, &mut frames, mode)
    })
}

/// Decodes an inversion's source latents (the clip as the model sees it,
/// after the VAE round trip, before any edit) into `out[0..out_count]`
/// ([`cogvideo_inversion_frame_count`] frames). `opts` may be NULL.
///
/// # Safety
/// As [`cogvideo_decode_latents`]; `inv` must come from the same pipeline.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_inversion_decode(
    p: *const cogvideo_pipeline,
    inv: *const cogvideo_inversion,
    opts: *const cogvideo_decode_options,
    out: *const cogvideo_frame,
    out_count: usize,
) -> cogvideo_status {
    guard(|| {
        let handle = pipeline_ref(p)?;
        let pipeline = &handle.pipeline;
        let inv = &inversion_ref(inv)?.inner;
        let o = unsafe { options::read(opts, "decode options") }?;
        let decode = options::decode_options(&o)?;
        let mode = resize_mode(o.resize_mode)?;
        let mut frames =
            unsafe { output_frames(out, out_count, pipelines::edited_frame_count(inv)) }?;
        let mut cb = progress_fn(o.progress, o.progress_user);
        let mut progress = Progress::new(&mut cb);
        let _busy = handle.busy.lock();
        let video = pipeline.decode_inversion(inv, &decode, &mut progress)?;
        crate::frames::video_to_frames(&video, &mut frames, mode)
    })
}

/// The random draws [`cogvideo_generate_video`] makes with these options:
/// `*count` receives their number and the first `capacity` are written to
/// `draws` (NULL with capacity 0 asks for the count only). Caller noise is
/// these draws' values concatenated: all of them, or a prefix ending at a
/// draw boundary (the seed supplies the rest). Never waits for a running call.
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
        let pipeline = &pipeline_ref(p)?.pipeline;
        let o = unsafe { options::read(opts, "generate options") }?;
        let (g, _) = unsafe { options::generate_options(&o) }?;
        let plan = pipeline.noise_plan_generate(&g)?;
        unsafe { plan_out(&plan, draws, capacity, count) }
    })
}

/// As [`cogvideo_generate_noise_plan`], for [`cogvideo_animate_image`].
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
        let pipeline = &pipeline_ref(p)?.pipeline;
        let o = unsafe { options::read(opts, "animate options") }?;
        let (a, _) = unsafe { options::animate_options(&o) }?;
        let (h, w) = pipeline_working_size(pipeline, o.height, o.width)?;
        let plan = pipeline.noise_plan_animate(h, w, &a)?;
        unsafe { plan_out(&plan, draws, capacity, count) }
    })
}

/// As [`cogvideo_generate_noise_plan`], for [`cogvideo_invert_video`] of a
/// clip of `frame_count` frames.
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
        let pipeline = &pipeline_ref(p)?.pipeline;
        let o = unsafe { options::read(opts, "invert options") }?;
        let (i, _) = options::invert_options(&o)?;
        let usable = pipeline.usable_edit_frames(frame_count)?;
        let (h, w) = pipeline_working_size(pipeline, o.height, o.width)?;
        let plan = pipeline.noise_plan_invert(h, w, usable, &i)?;
        unsafe { plan_out(&plan, draws, capacity, count) }
    })
}

/// As [`cogvideo_generate_noise_plan`], for [`cogvideo_edit_with_prompt`].
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
        let pipeline = &pipeline_ref(p)?.pipeline;
        let inv = &inversion_ref(inv)?.inner;
        let o = unsafe { options::read(opts, "edit options") }?;
        let (e, _) = unsafe { options::edit_options(&o) }?;
        let plan = pipeline.noise_plan_edit(inv, &e)?;
        unsafe { plan_out(&plan, draws, capacity, count) }
    })
}

/// As [`cogvideo_generate_noise_plan`], for [`cogvideo_video_to_video`] of
/// a clip of `frame_count` frames.
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
        let pipeline = &pipeline_ref(p)?.pipeline;
        let o = unsafe { options::read(opts, "video-to-video options") }?;
        let (v, _) = unsafe { options::video_to_video_options(&o) }?;
        let usable = pipeline.usable_edit_frames(frame_count)?;
        let (h, w) = pipeline_working_size(pipeline, o.height, o.width)?;
        let plan = pipeline.noise_plan_video_to_video(h, w, usable, &v)?;
        unsafe { plan_out(&plan, draws, capacity, count) }
    })
}

/// The working `(height, width)` an options struct asks for: 0 takes the
/// variant's default, negative values are refused.
fn working_size(height: i32, width: i32, default: (usize, usize)) -> Result<(usize, usize)> {
    let pick = |v: i32, d: usize, what: &str| match v {
        0 => Ok(d),
        v if v < 0 => Err(Error::invalid(format!(
            "{what} must be 0 (the default) or positive, got {v}"
        ))),
        v => Ok(v as usize),
    };
    Ok((
        pick(height, default.0, "height")?,
        pick(width, default.1, "width")?,
    ))
}

/// [`working_size`] with the pipeline's default size.
fn pipeline_working_size(p: &Pipeline, height: i32, width: i32) -> Result<(usize, usize)> {
    let (h, w, _) = p.default_video_size();
    working_size(height, width, (h, w))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: the library's own NUL-terminated message.
        unsafe { CStr::from_ptr(cogvideo_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn messages_are_one_line() {
        set_last_error("shape mismatch in matmul\nstack backtrace:\n   0: candle_core::error");
        assert_eq!(last_error(), "shape mismatch in matmul");
    }

    /// Runs itself in a child process (stderr is the point) where a call
    /// panics: the caller gets an internal error with the panic's message,
    /// and nothing reaches the host's stderr.
    #[test]
    fn panics_in_calls_are_errors_and_stay_off_stderr() {
        const CHILD: &str = "COGVIDEO_TEST_PANIC_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let st = guard(|| panic!("boom in a call"));
            assert_eq!(st, COGVIDEO_ERR_INTERNAL);
            assert_eq!(last_error(), "internal error (panic): boom in a call");
            eprintln!("child done");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ffi::tests::panics_in_calls_are_errors_and_stay_off_stderr",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("child done"), "the child ran: {stderr}");
        assert!(!stderr.contains("boom"), "the panic was printed: {stderr}");
    }
}
