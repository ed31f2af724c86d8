//! Options structs of the C API. Each has a `*_init` function that fills in
//! the defaults and sets `struct_size`; the library reads a struct only if
//! `struct_size` covers the fields it knows, so later versions can append
//! fields without breaking callers compiled against this header.

use std::ffi::{c_char, c_void};

use super::{dtype_of, str_arg};
use crate::error::{Error, Result};
use crate::pipelines::{
    AnimateOptions, DeviceKind, EditOptions, GenerateOptions, InvertOptions, LoadOptions,
    NoiseOptions, SamplingOptions, SchedulerKind,
};

/// Progress callback: `stage` is a `COGVIDEO_STAGE_*` value, `done` of
/// `total` units of that stage are finished. Return false to cancel; the
/// call then returns `COGVIDEO_ERR_CANCELLED` at the next step boundary.
/// It runs on the calling thread while the pipeline is busy, so it must not
/// call into the same pipeline (that call would wait forever).
pub type cogvideo_progress_fn =
    Option<extern "C" fn(user: *mut c_void, stage: i32, done: i32, total: i32) -> bool>;

pub const COGVIDEO_STAGE_ENCODE_TEXT: i32 = 0;
pub const COGVIDEO_STAGE_ENCODE_VIDEO: i32 = 1;
pub const COGVIDEO_STAGE_INVERT: i32 = 2;
pub const COGVIDEO_STAGE_DENOISE: i32 = 3;
pub const COGVIDEO_STAGE_DECODE_VIDEO: i32 = 4;

pub const COGVIDEO_DEVICE_CPU: u32 = 0;
pub const COGVIDEO_DEVICE_CUDA: u32 = 1;

pub const COGVIDEO_DTYPE_F32: u32 = 0;
pub const COGVIDEO_DTYPE_BF16: u32 = 1;
pub const COGVIDEO_DTYPE_F16: u32 = 2;

pub const COGVIDEO_SCHEDULER_DPM: u32 = 0;
pub const COGVIDEO_SCHEDULER_DDIM: u32 = 1;

pub const COGVIDEO_RESIZE_STRETCH: u32 = 0;
pub const COGVIDEO_RESIZE_CROP: u32 = 1;
pub const COGVIDEO_RESIZE_FIT: u32 = 2;

/// How to load a pipeline.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_load_options {
    /// `sizeof(cogvideo_load_options)`, set by the init function.
    pub struct_size: u32,
    /// `COGVIDEO_DEVICE_CPU` (default) or `COGVIDEO_DEVICE_CUDA`.
    pub device: u32,
    pub device_index: i32,
    /// `COGVIDEO_DTYPE_F32` (default, exact), `_BF16` or `_F16`.
    pub dtype: u32,
    /// Encode and decode the VAE in spatial tiles (less memory).
    pub vae_tiling: bool,
}

/// Text-to-video options.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_generate_options {
    pub struct_size: u32,
    /// UTF-8 prompt (NULL means "").
    pub prompt: *const c_char,
    /// UTF-8 negative prompt (NULL means "").
    pub negative_prompt: *const c_char,
    /// Working size in pixels; 0 takes the variant's default.
    pub width: i32,
    pub height: i32,
    /// 4k+1 frames; 0 takes the variant's default.
    pub num_frames: i32,
    /// Inference steps (default 50).
    pub steps: i32,
    /// Classifier-free guidance scale (default 6); 1 or less disables it.
    pub guidance_scale: f32,
    /// CogVideoX's cosine guidance schedule (default on).
    pub dynamic_cfg: bool,
    /// `COGVIDEO_SCHEDULER_DPM` (default) or `_DDIM`.
    pub scheduler: u32,
    pub seed: u64,
    /// Optional caller noise, f32, `noise_len` values: the draws of the call
    /// concatenated in the documented order (initial latents, then DPM step
    /// noise); the seed supplies whatever is not given.
    pub noise: *const f32,
    pub noise_len: usize,
    /// How the working size maps onto the output frames.
    pub resize_mode: u32,
    pub progress: cogvideo_progress_fn,
    pub progress_user: *mut c_void,
}

/// Image-to-video options.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_animate_options {
    pub struct_size: u32,
    pub prompt: *const c_char,
    pub negative_prompt: *const c_char,
    /// Working size; 0 takes the variant's default.
    pub width: i32,
    pub height: i32,
    /// 4k+1 frames (default 49).
    pub num_frames: i32,
    pub steps: i32,
    pub guidance_scale: f32,
    pub dynamic_cfg: bool,
    pub scheduler: u32,
    pub seed: u64,
    /// Optional caller noise: image posterior sample, initial latents, DPM
    /// step noise, concatenated.
    pub noise: *const f32,
    pub noise_len: usize,
    /// How the input image maps to the working size and the result onto
    /// the output frames (default `COGVIDEO_RESIZE_STRETCH`, which maps
    /// back onto the same picture area).
    pub resize_mode: u32,
    pub progress: cogvideo_progress_fn,
    pub progress_user: *mut c_void,
}

/// DDIM inversion options.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_invert_options {
    pub struct_size: u32,
    /// Working size; 0 takes the variant's default.
    pub width: i32,
    pub height: i32,
    /// Inversion steps (default 50); edits use the same number.
    pub steps: i32,
    pub seed: u64,
    /// Optional caller noise: the VAE posterior sample of the clip.
    pub noise: *const f32,
    pub noise_len: usize,
    pub resize_mode: u32,
    pub progress: cogvideo_progress_fn,
    pub progress_user: *mut c_void,
}

/// Prompt-editing options.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_edit_options {
    pub struct_size: u32,
    pub prompt: *const c_char,
    pub negative_prompt: *const c_char,
    pub guidance_scale: f32,
    /// Start from the inverted latent instead of fresh noise (keeps more of
    /// the source clip; the reference script starts from noise).
    pub start_from_inverted: bool,
    pub seed: u64,
    /// Optional caller noise: the starting latents.
    pub noise: *const f32,
    pub noise_len: usize,
    /// How the working size maps onto the output frames.
    pub resize_mode: u32,
    pub progress: cogvideo_progress_fn,
    pub progress_user: *mut c_void,
}

/// Reads an options struct, or its defaults when `p` is NULL.
///
/// # Safety
/// `p` must be NULL or point to a struct whose `struct_size` is readable and
/// which is valid for `struct_size` bytes.
pub(super) unsafe fn read<T: Copy + Defaults>(p: *const T, what: &str) -> Result<T> {
    if p.is_null() {
        return Ok(T::defaults());
    }
    // SAFETY: every options struct starts with a u32 struct_size.
    let size = unsafe { *(p as *const u32) } as usize;
    if size < std::mem::size_of::<T>() {
        return Err(Error::invalid(format!(
            "{what}: struct_size {size} is smaller than this library's {} bytes; initialise the struct with its _init function",
            std::mem::size_of::<T>()
        )));
    }
    // SAFETY: the caller's struct is at least as large as ours.
    Ok(unsafe { *p })
}

pub(super) trait Defaults {
    fn defaults() -> Self;
}

/// Writes the defaults into a caller's struct (NULL is ignored).
///
/// # Safety
/// `opts` must be NULL or writable.
unsafe fn write_defaults<T: Defaults>(opts: *mut T) {
    if !opts.is_null() {
        // SAFETY: checked non-null, caller-owned.
        unsafe { opts.write(T::defaults()) };
    }
}

fn size_of_u32<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

impl Defaults for cogvideo_load_options {
    fn defaults() -> Self {
        Self {
            struct_size: size_of_u32::<Self>(),
            device: COGVIDEO_DEVICE_CPU,
            device_index: 0,
            dtype: COGVIDEO_DTYPE_F32,
            vae_tiling: false,
        }
    }
}

impl Defaults for cogvideo_generate_options {
    fn defaults() -> Self {
        let d = SamplingOptions::default();
        Self {
            struct_size: size_of_u32::<Self>(),
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            width: 0,
            height: 0,
            num_frames: 0,
            steps: d.steps as i32,
            guidance_scale: d.guidance_scale as f32,
            dynamic_cfg: d.dynamic_cfg,
            scheduler: COGVIDEO_SCHEDULER_DPM,
            seed: d.noise.seed,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: COGVIDEO_RESIZE_STRETCH,
            progress: None,
            progress_user: std::ptr::null_mut(),
        }
    }
}

impl Defaults for cogvideo_animate_options {
    fn defaults() -> Self {
        let a = AnimateOptions::default();
        let d = &a.sampling;
        Self {
            struct_size: size_of_u32::<Self>(),
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            width: 0,
            height: 0,
            num_frames: a.num_frames as i32,
            steps: d.steps as i32,
            guidance_scale: d.guidance_scale as f32,
            dynamic_cfg: d.dynamic_cfg,
            scheduler: COGVIDEO_SCHEDULER_DPM,
            seed: d.noise.seed,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: COGVIDEO_RESIZE_STRETCH,
            progress: None,
            progress_user: std::ptr::null_mut(),
        }
    }
}

impl Defaults for cogvideo_invert_options {
    fn defaults() -> Self {
        let d = InvertOptions::default();
        Self {
            struct_size: size_of_u32::<Self>(),
            width: 0,
            height: 0,
            steps: d.steps as i32,
            seed: d.noise.seed,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: COGVIDEO_RESIZE_STRETCH,
            progress: None,
            progress_user: std::ptr::null_mut(),
        }
    }
}

impl Defaults for cogvideo_edit_options {
    fn defaults() -> Self {
        let d = EditOptions::default();
        Self {
            struct_size: size_of_u32::<Self>(),
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            guidance_scale: d.guidance_scale as f32,
            start_from_inverted: d.start_from_inverted,
            seed: d.noise.seed,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: COGVIDEO_RESIZE_STRETCH,
            progress: None,
            progress_user: std::ptr::null_mut(),
        }
    }
}

// cbindgen reads these signatures, so they are written out rather than
// generated by a macro.

/// Fills `opts` with the defaults and sets its `struct_size`.
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_load_options_init(opts: *mut cogvideo_load_options) {
    unsafe { write_defaults(opts) }
}

/// Fills `opts` with the defaults and sets its `struct_size`.
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_generate_options_init(opts: *mut cogvideo_generate_options) {
    unsafe { write_defaults(opts) }
}

/// Fills `opts` with the defaults and sets its `struct_size`.
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_animate_options_init(opts: *mut cogvideo_animate_options) {
    unsafe { write_defaults(opts) }
}

/// Fills `opts` with the defaults and sets its `struct_size`.
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_invert_options_init(opts: *mut cogvideo_invert_options) {
    unsafe { write_defaults(opts) }
}

/// Fills `opts` with the defaults and sets its `struct_size`.
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_edit_options_init(opts: *mut cogvideo_edit_options) {
    unsafe { write_defaults(opts) }
}

pub(super) fn load_options(o: &cogvideo_load_options) -> Result<LoadOptions> {
    let device = match o.device {
        COGVIDEO_DEVICE_CPU => DeviceKind::Cpu,
        COGVIDEO_DEVICE_CUDA if o.device_index >= 0 => DeviceKind::Cuda(o.device_index as usize),
        COGVIDEO_DEVICE_CUDA => return Err(Error::invalid("device_index must not be negative")),
        other => return Err(Error::invalid(format!("unknown device {other}"))),
    };
    Ok(LoadOptions {
        device,
        dtype: dtype_of(o.dtype)?,
        vae_tiling: o.vae_tiling,
    })
}

fn positive(v: i32, what: &str) -> Result<usize> {
    if v <= 0 || v > 10_000 {
        Err(Error::invalid(format!(
            "{what} must be between 1 and 10000, got {v}"
        )))
    } else {
        Ok(v as usize)
    }
}

fn optional(v: i32, what: &str) -> Result<Option<usize>> {
    if v == 0 {
        Ok(None)
    } else {
        positive(v, what).map(Some)
    }
}

fn scheduler(code: u32) -> Result<SchedulerKind> {
    match code {
        COGVIDEO_SCHEDULER_DPM => Ok(SchedulerKind::Dpm),
        COGVIDEO_SCHEDULER_DDIM => Ok(SchedulerKind::Ddim),
        other => Err(Error::invalid(format!("unknown scheduler {other}"))),
    }
}

fn guidance_scale(g: f32) -> Result<f64> {
    if g.is_finite() && (0.0..=100.0).contains(&g) {
        Ok(g as f64)
    } else {
        Err(Error::invalid(format!(
            "guidance_scale must be in 0..=100, got {g}"
        )))
    }
}

/// The caller's noise values; the pipeline splits them by the shapes of
/// its draws.
///
/// # Safety
/// `noise` must be NULL or point to `len` floats.
unsafe fn noise_options(seed: u64, noise: *const f32, len: usize) -> Result<NoiseOptions> {
    if len == 0 {
        return Ok(NoiseOptions::seed(seed));
    }
    if noise.is_null() {
        return Err(Error::invalid("noise is NULL but noise_len is not 0"));
    }
    if len > (1usize << 34) {
        return Err(Error::invalid("noise_len is absurdly large"));
    }
    // SAFETY: caller guarantees `len` readable floats.
    let supplied = unsafe { std::slice::from_raw_parts(noise, len) }.to_vec();
    Ok(NoiseOptions { seed, supplied })
}

/// The prompt and sampler fields common to text- and image-to-video.
///
/// # Safety
/// The string and noise pointers must be valid as documented.
#[allow(clippy::too_many_arguments)]
unsafe fn sampling_options(
    prompt: *const c_char,
    negative_prompt: *const c_char,
    steps: i32,
    guidance: f32,
    dynamic_cfg: bool,
    sched: u32,
    seed: u64,
    (noise, noise_len): (*const f32, usize),
) -> Result<SamplingOptions> {
    Ok(SamplingOptions {
        prompt: unsafe { str_arg(prompt, "prompt") }?,
        negative_prompt: unsafe { str_arg(negative_prompt, "negative_prompt") }?,
        steps: positive(steps, "steps")?,
        guidance_scale: guidance_scale(guidance)?,
        dynamic_cfg,
        scheduler: scheduler(sched)?,
        noise: unsafe { noise_options(seed, noise, noise_len) }?,
    })
}

pub(super) unsafe fn generate_options(o: &cogvideo_generate_options) -> Result<GenerateOptions> {
    Ok(GenerateOptions {
        sampling: unsafe {
            sampling_options(
                o.prompt,
                o.negative_prompt,
                o.steps,
                o.guidance_scale,
                o.dynamic_cfg,
                o.scheduler,
                o.seed,
                (o.noise, o.noise_len),
            )
        }?,
        height: optional(o.height, "height")?,
        width: optional(o.width, "width")?,
        num_frames: optional(o.num_frames, "num_frames")?,
    })
}

pub(super) unsafe fn animate_options(o: &cogvideo_animate_options) -> Result<AnimateOptions> {
    Ok(AnimateOptions {
        sampling: unsafe {
            sampling_options(
                o.prompt,
                o.negative_prompt,
                o.steps,
                o.guidance_scale,
                o.dynamic_cfg,
                o.scheduler,
                o.seed,
                (o.noise, o.noise_len),
            )
        }?,
        num_frames: positive(o.num_frames, "num_frames")?,
    })
}

pub(super) unsafe fn invert_options(o: &cogvideo_invert_options) -> Result<InvertOptions> {
    Ok(InvertOptions {
        steps: positive(o.steps, "steps")?,
        noise: unsafe { noise_options(o.seed, o.noise, o.noise_len) }?,
    })
}

pub(super) unsafe fn edit_options(o: &cogvideo_edit_options) -> Result<EditOptions> {
    Ok(EditOptions {
        prompt: unsafe { str_arg(o.prompt, "prompt") }?,
        negative_prompt: unsafe { str_arg(o.negative_prompt, "negative_prompt") }?,
        guidance_scale: guidance_scale(o.guidance_scale)?,
        start_from_inverted: o.start_from_inverted,
        noise: unsafe { noise_options(o.seed, o.noise, o.noise_len) }?,
    })
}
