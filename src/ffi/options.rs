//! Options structs of the C API. Each has a `*_init` function that fills in
//! the defaults and sets `struct_size`; the library reads a struct only if
//! `struct_size` covers the fields it knows, so later versions can append
//! fields without breaking callers compiled against this header.

use std::ffi::{c_char, c_void};

use super::args::{dtype_of, str_arg};
use super::cache::{cogvideo_cache_options, cogvideo_cache_report};
use super::status::{cogvideo_status, guard};
use crate::error::{Error, Result};
use crate::hooks::CacheConfig;
use crate::pipelines::{
    AnimateOptions, DecodeOptions, DeviceKind, EditOptions, GenerateOptions, InvertOptions,
    LoadOptions, NoiseOptions, NoisePlan, Residency, SamplingOptions, SchedulerKind, VaeTiling,
    VideoToVideoOptions,
};

/// Progress callback: `stage` is a `COGVIDEO_STAGE_*` value, `done` of
/// `total` units of that stage are finished. Return false to cancel: the
/// call returns `COGVIDEO_ERR_CANCELLED`. Within a denoising or inversion
/// step the callback is also called before each transformer block with the
/// counts unchanged (since 1.3), and encoding and decoding report each frame
/// batch and tile, so a cancel lands within one block or tile; a caller
/// that draws progress may skip repeated counts.
/// It runs on the calling thread while the pipeline is busy, so it must not
/// call into the same pipeline (that call would wait forever).
pub type cogvideo_progress_fn =
    Option<extern "C" fn(user: *mut c_void, stage: i32, done: i32, total: i32) -> bool>;

pub const COGVIDEO_STAGE_ENCODE_TEXT: i32 = 0;
pub const COGVIDEO_STAGE_ENCODE_VIDEO: i32 = 1;
pub const COGVIDEO_STAGE_INVERT: i32 = 2;
pub const COGVIDEO_STAGE_DENOISE: i32 = 3;
pub const COGVIDEO_STAGE_DECODE_VIDEO: i32 = 4;
/// Since 1.3: loading a checkpoint (cogvideo_load_options.progress), in MiB
/// of weights; reported before loading and after each model.
pub const COGVIDEO_STAGE_LOAD: i32 = 5;

pub const COGVIDEO_DEVICE_CPU: u32 = 0;
pub const COGVIDEO_DEVICE_CUDA: u32 = 1;
/// Since 1.2 (the default): the first CUDA device when the library is built
/// with CUDA and one opens, else the CPU; `device_index` is not used.
pub const COGVIDEO_DEVICE_AUTO: u32 = 2;

pub const COGVIDEO_DTYPE_F32: u32 = 0;
pub const COGVIDEO_DTYPE_BF16: u32 = 1;
pub const COGVIDEO_DTYPE_F16: u32 = 2;
/// Since 1.2 (the default): bf16 on a GPU, f32 on the CPU.
pub const COGVIDEO_DTYPE_AUTO: u32 = 3;

pub const COGVIDEO_SCHEDULER_DPM: u32 = 0;
pub const COGVIDEO_SCHEDULER_DDIM: u32 = 1;

pub const COGVIDEO_RESIZE_STRETCH: u32 = 0;
pub const COGVIDEO_RESIZE_CROP: u32 = 1;
pub const COGVIDEO_RESIZE_FIT: u32 = 2;

/// How to load a pipeline.
/// Initialise with `cogvideo_load_options_init(&opts)` (defaults and
/// `struct_size`), then set the fields to change.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_load_options {
    /// The size of the caller's struct, set by the init function (see
    /// Compatibility at the top of this header).
    pub struct_size: u32,
    /// `COGVIDEO_DEVICE_AUTO` (default since 1.2; 1.0 and 1.1 defaulted to
    /// `_CPU`), `COGVIDEO_DEVICE_CPU` or `COGVIDEO_DEVICE_CUDA`.
    pub device: u32,
    /// The CUDA device's ordinal, for `COGVIDEO_DEVICE_CUDA`.
    pub device_index: i32,
    /// `COGVIDEO_DTYPE_AUTO` (default since 1.2: bf16 on a GPU, f32 on the
    /// CPU), `_F32` (exact), `_BF16` or `_F16`. Timestep and rotary tables,
    /// scheduler arithmetic and guidance run in f32 whatever this is.
    pub dtype: u32,
    /// Encode and decode the VAE in spatial tiles (less memory).
    pub vae_tiling: bool,
    /// Since 1.1: what stays loaded between calls, a `COGVIDEO_RESIDENCY_*`
    /// value. `_AUTO` (default) takes the first of `_RESIDENT`,
    /// `_PER_COMPONENT` and `_STREAMED` whose weights and a default-size
    /// call fit in nine tenths of the memory budget (`_STREAMED` when none
    /// does).
    pub residency: u32,
    /// Since 1.1: the memory `_AUTO` plans for and decoding keeps to (it
    /// tiles when the untiled decode would not fit), in bytes; 0 takes what
    /// the device has available (host RAM, or a GPU's free memory).
    pub memory_budget: u64,
    /// Since 1.3: reports `COGVIDEO_STAGE_LOAD` (MiB of weights loaded:
    /// before loading and after each model, 100% at the end) and may
    /// cancel; a cancelled load returns `COGVIDEO_ERR_CANCELLED` having
    /// freed everything it loaded.
    pub progress: cogvideo_progress_fn,
    pub progress_user: *mut c_void,
}

pub const COGVIDEO_RESIDENCY_AUTO: u32 = 0;
pub const COGVIDEO_RESIDENCY_RESIDENT: u32 = 1;
/// The T5 encoder and the transformer are loaded for each use; the VAE stays.
pub const COGVIDEO_RESIDENCY_PER_COMPONENT: u32 = 2;
/// The blocks of the T5 encoder and of the transformer are read from the
/// checkpoint right before they run, the next one while the current one
/// runs; the rest stays loaded.
pub const COGVIDEO_RESIDENCY_STREAMED: u32 = 3;

/// Text-to-video options.
/// Initialise with `cogvideo_generate_options_init(&opts)` (defaults and
/// `struct_size`), then set the fields to change.
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
    /// Since 1.1. Optional caller buffer for the final latents (f32,
    /// `[1, F, 16, h, w]` row-major, `latents_out_len` values as
    /// [`cogvideo_latent_shape`] reports), written before decoding starts,
    /// so they survive a failed or cancelled decode; decode them again with
    /// [`cogvideo_decode_latents`]. With `out == NULL` and `out_count == 0`
    /// the call samples only and does not decode.
    pub latents_out: *mut f32,
    pub latents_out_len: usize,
    /// Since 1.4: step caching for this call (NULL, the default: none, the
    /// exact result); see [`cogvideo_cache_options`].
    pub cache: *const cogvideo_cache_options,
    /// Since 1.4: filled with what the cache saved (NULL: not wanted).
    pub cache_report: *mut cogvideo_cache_report,
}

/// Image-to-video options.
/// Initialise with `cogvideo_animate_options_init(&opts)` (defaults and
/// `struct_size`), then set the fields to change.
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
    /// Since 1.1: final latents, as in [`cogvideo_generate_options`].
    pub latents_out: *mut f32,
    pub latents_out_len: usize,
    /// Since 1.4: step caching for this call (NULL, the default: none, the
    /// exact result); see [`cogvideo_cache_options`].
    pub cache: *const cogvideo_cache_options,
    /// Since 1.4: filled with what the cache saved (NULL: not wanted).
    pub cache_report: *mut cogvideo_cache_report,
}

/// DDIM inversion options.
/// Initialise with `cogvideo_invert_options_init(&opts)` (defaults and
/// `struct_size`), then set the fields to change.
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
    /// Since 1.1: encode the clip to its VAE posterior's mean instead of a
    /// sample (deterministic; no noise is drawn).
    pub posterior_mean: bool,
}

/// Prompt-editing options.
/// Initialise with `cogvideo_edit_options_init(&opts)` (defaults and
/// `struct_size`), then set the fields to change.
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
    /// Since 1.1: how much of the schedule the edit re-runs, in (0, 1]
    /// (default 1, the full reconstruction). Below 1 the edit runs only the
    /// last `floor(steps * strength)` steps, starting from the inverted
    /// clip's latent at that noise level (with the reference attention as
    /// usual), so small strengths stay close to the source clip; when no
    /// step is left the result is the source clip's own latents, as
    /// [`cogvideo_inversion_decode`] shows them. `start_from_inverted` only
    /// matters at strength 1.
    pub strength: f64,
    /// Since 1.1: final latents, as in [`cogvideo_generate_options`]; see
    /// [`cogvideo_inversion_latent_shape`].
    pub latents_out: *mut f32,
    pub latents_out_len: usize,
    /// Since 1.4: step caching for this call (NULL, the default: none, the
    /// exact result); see [`cogvideo_cache_options`].
    pub cache: *const cogvideo_cache_options,
    /// Since 1.4: filled with what the cache saved (NULL: not wanted).
    pub cache_report: *mut cogvideo_cache_report,
}

pub const COGVIDEO_TILING_AS_LOADED: u32 = 0;
pub const COGVIDEO_TILING_OFF: u32 = 1;
pub const COGVIDEO_TILING_ON: u32 = 2;

/// Decoding options (since 1.1).
/// Initialise with `cogvideo_decode_options_init(&opts)` (defaults and
/// `struct_size`), then set the fields to change.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_decode_options {
    pub struct_size: u32,
    /// `COGVIDEO_TILING_AS_LOADED` (default: `cogvideo_load_options.vae_tiling`),
    /// `_OFF` or `_ON` (spatial tiles: less memory, slightly different
    /// numbers at the seams).
    pub tiling: u32,
    /// Largest tile size in pixels with `COGVIDEO_TILING_ON` (rounded down to
    /// tiles that line up with the default overlaps: multiples of 48 rows
    /// and 40 columns for the CogVideoX VAEs); 0 and 0 take the VAE's
    /// default tile (half the model's sample size).
    pub tile_width: i32,
    pub tile_height: i32,
    /// How the working size maps onto the output frames.
    pub resize_mode: u32,
    /// Reports `COGVIDEO_STAGE_DECODE_VIDEO` per frame batch and tile; may cancel.
    pub progress: cogvideo_progress_fn,
    pub progress_user: *mut c_void,
}

/// Video-to-video options (since 1.1), as diffusers'
/// `CogVideoXVideoToVideoPipeline`: the clip is encoded, noised to
/// `strength` and denoised with the prompt.
/// Initialise with `cogvideo_video_to_video_options_init(&opts)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_video_to_video_options {
    pub struct_size: u32,
    pub prompt: *const c_char,
    pub negative_prompt: *const c_char,
    /// Working size; 0 takes the variant's default.
    pub width: i32,
    pub height: i32,
    pub steps: i32,
    pub guidance_scale: f32,
    pub dynamic_cfg: bool,
    pub scheduler: u32,
    /// How far the clip is noised, in (0, 1] (default 0.8): the call runs the
    /// last `floor(steps * strength)` steps; at least one must run.
    pub strength: f64,
    pub seed: u64,
    /// Optional caller noise: the clip's VAE posterior sample, the noise
    /// added to its latents, then the DPM step noise.
    pub noise: *const f32,
    pub noise_len: usize,
    /// How the input frames map to the working size and the result onto
    /// the output frames.
    pub resize_mode: u32,
    pub progress: cogvideo_progress_fn,
    pub progress_user: *mut c_void,
    /// Final latents, as in [`cogvideo_generate_options`].
    pub latents_out: *mut f32,
    pub latents_out_len: usize,
    /// Since 1.4: step caching for this call (NULL, the default: none, the
    /// exact result); see [`cogvideo_cache_options`].
    pub cache: *const cogvideo_cache_options,
    /// Since 1.4: filled with what the cache saved (NULL: not wanted).
    pub cache_report: *mut cogvideo_cache_report,
}

/// One random draw of a call, as [`cogvideo_generate_noise_plan`] and its
/// siblings report it: caller noise is these draws' values, f32 row-major
/// in `shape`, concatenated in order.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_noise_draw {
    /// NUL-terminated, e.g. "initial latents", "VAE posterior sample",
    /// "DPM step 3".
    pub purpose: [c_char; 32],
    pub ndim: i32,
    pub shape: [i64; 5],
    /// Index of the draw's first value in the caller's noise array.
    pub offset: u64,
    /// Values in the draw (the product of `shape`).
    pub count: u64,
}

/// How the library reads and writes a caller's struct whose first field is
/// `uint32_t struct_size` (the header states the same rule for C callers):
/// - `struct_size` must be the size of one released layout of the struct
///   ([`Layout::SIZES`]) or larger than today's (a caller built against a
///   newer header); anything else is refused before a byte past the size
///   field is touched, so an uninitialised struct is an error, not a read of
///   stray memory;
/// - the library reads and writes exactly `struct_size` bytes: the fields
///   an older caller lacks take their defaults, and the bytes of a newer
///   caller's unknown fields must be zero (zero is every later field's
///   default), else the call is refused rather than silently ignoring them.
pub(super) trait Layout: Copy {
    /// The C name, for messages.
    const NAME: &'static str;
    /// `sizeof` in each released ABI version that changed the struct,
    /// oldest first (an older one as the offset of the first field its
    /// successor added), the last today's. A field appended without its
    /// entry here makes the previous version's callers fail `tests/abi`.
    const SIZES: &'static [usize];
    /// Today's layout with the defaults (`struct_size` is today's size).
    fn defaults() -> Self;
}

/// The largest `struct_size` accepted from a caller built against a newer
/// header; past it the value is taken for garbage rather than read.
const MAX_STRUCT_SIZE: usize = 4096;

pub(super) fn check_size<T: Layout>(size: usize) -> Result<()> {
    let ours = std::mem::size_of::<T>();
    if T::SIZES.contains(&size) || (size > ours && size <= MAX_STRUCT_SIZE) {
        return Ok(());
    }
    let sizes: Vec<String> = T::SIZES.iter().map(usize::to_string).collect();
    Err(Error::invalid(format!(
        "{}: struct_size {size} is not the size of any version of the struct ({} bytes); initialise it with {}_init",
        T::NAME,
        sizes.join(", "),
        T::NAME
    )))
}

/// Reads an options struct, or its defaults when `p` is NULL, under the
/// rule of [`Layout`].
///
/// # Safety
/// `p` must be NULL or point to a struct whose `struct_size` is readable and
/// which is valid for `struct_size` bytes.
pub(super) unsafe fn read<T: Layout>(p: *const T) -> Result<T> {
    let mut out = T::defaults();
    if p.is_null() {
        return Ok(out);
    }
    // SAFETY: every such struct starts with a u32 struct_size, which its
    // alignment keeps aligned.
    let size = unsafe { *(p as *const u32) } as usize;
    check_size::<T>(size)?;
    let ours = std::mem::size_of::<T>();
    // SAFETY: the caller's struct is valid for `size` bytes and ours for
    // `ours`; both are plain data (pointers, numbers, bools that the
    // caller's own struct holds).
    unsafe {
        std::ptr::copy_nonoverlapping(
            p as *const u8,
            (&mut out as *mut T) as *mut u8,
            size.min(ours),
        );
    }
    if size > ours {
        // SAFETY: within the caller's `size` bytes.
        let unknown =
            unsafe { std::slice::from_raw_parts((p as *const u8).add(ours), size - ours) };
        if unknown.iter().any(|&b| b != 0) {
            return Err(Error::invalid(format!(
                "{}: fields past the {ours} bytes this library knows are set (struct_size {size}): the program was built against a newer header than this library (C ABI {}.{})",
                T::NAME,
                super::COGVIDEO_ABI_VERSION >> 16,
                super::COGVIDEO_ABI_VERSION & 0xffff
            )));
        }
    }
    Ok(out)
}

/// Writes `value` into a caller's struct of `size` bytes under the rule of
/// [`Layout`]: the fields the caller's layout has, `struct_size` set to
/// `size`, zeros in the bytes of fields this library does not know.
///
/// # Safety
/// `p` must be non-null and writable for `size` bytes, and `size` checked
/// with [`check_size`].
unsafe fn write_sized<T: Layout>(p: *mut T, value: &T, size: usize) {
    let ours = std::mem::size_of::<T>();
    let bytes = p as *mut u8;
    // SAFETY: the caller's struct is writable for `size` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping((value as *const T) as *const u8, bytes, size.min(ours));
        if size > ours {
            std::ptr::write_bytes(bytes.add(ours), 0, size - ours);
        }
        (p as *mut u32).write(size as u32);
    }
}

/// What the `*_init_sized` functions do: the defaults in the caller's
/// layout of `size` bytes.
///
/// # Safety
/// `p` must be NULL or writable for `size` bytes.
pub(super) unsafe fn init_sized<T: Layout>(p: *mut T, size: usize) -> Result<()> {
    if p.is_null() {
        return Err(Error::invalid(format!("{}: the struct is NULL", T::NAME)));
    }
    check_size::<T>(size)?;
    unsafe { write_sized(p, &T::defaults(), size) };
    Ok(())
}

/// What the one-argument `*_init` symbols of the 1.0 to 1.2 headers do for
/// programs built against them: they cannot say how large their struct is,
/// so only the oldest layout, which every released header's struct holds,
/// is written (and named in `struct_size`). Fields a program sets past it
/// are not read; rebuilt against a 1.3 header, whose `*_init` macros pass
/// `sizeof`, they are.
///
/// # Safety
/// `p` must be NULL (ignored) or writable for `T::SIZES[0]` bytes.
pub(super) unsafe fn init_oldest<T: Layout>(p: *mut T) {
    if !p.is_null() {
        unsafe { write_sized(p, &T::defaults(), T::SIZES[0]) };
    }
}

/// Fills a caller's output struct (such as [`super::cogvideo_memory_info`])
/// up to its `struct_size`, under the rule of [`Layout`].
///
/// # Safety
/// `p` must be NULL or point to a struct whose `struct_size` is readable and
/// which is writable for `struct_size` bytes.
pub(super) unsafe fn write_out<T: Layout>(p: *mut T, value: &T) -> Result<()> {
    if p.is_null() {
        return Err(Error::invalid(format!("{}: the struct is NULL", T::NAME)));
    }
    // SAFETY: the struct starts with its u32 struct_size.
    let size = unsafe { *(p as *const u32) } as usize;
    check_size::<T>(size)?;
    unsafe { write_sized(p, value, size) };
    Ok(())
}

fn size_of_u32<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

impl Layout for cogvideo_load_options {
    const NAME: &'static str = "cogvideo_load_options";
    const SIZES: &'static [usize] = &[
        std::mem::offset_of!(Self, residency),
        std::mem::offset_of!(Self, progress),
        std::mem::size_of::<Self>(),
    ];
    fn defaults() -> Self {
        Self {
            struct_size: size_of_u32::<Self>(),
            device: COGVIDEO_DEVICE_AUTO,
            device_index: 0,
            dtype: COGVIDEO_DTYPE_AUTO,
            vae_tiling: false,
            residency: COGVIDEO_RESIDENCY_AUTO,
            memory_budget: 0,
            progress: None,
            progress_user: std::ptr::null_mut(),
        }
    }
}

impl Layout for cogvideo_generate_options {
    const NAME: &'static str = "cogvideo_generate_options";
    const SIZES: &'static [usize] = &[
        std::mem::offset_of!(Self, latents_out),
        std::mem::offset_of!(Self, cache),
        std::mem::size_of::<Self>(),
    ];
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
            latents_out: std::ptr::null_mut(),
            latents_out_len: 0,
            cache: std::ptr::null(),
            cache_report: std::ptr::null_mut(),
        }
    }
}

impl Layout for cogvideo_animate_options {
    const NAME: &'static str = "cogvideo_animate_options";
    const SIZES: &'static [usize] = &[
        std::mem::offset_of!(Self, latents_out),
        std::mem::offset_of!(Self, cache),
        std::mem::size_of::<Self>(),
    ];
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
            latents_out: std::ptr::null_mut(),
            latents_out_len: 0,
            cache: std::ptr::null(),
            cache_report: std::ptr::null_mut(),
        }
    }
}

impl Layout for cogvideo_invert_options {
    const NAME: &'static str = "cogvideo_invert_options";
    const SIZES: &'static [usize] = &[
        std::mem::offset_of!(Self, posterior_mean),
        std::mem::size_of::<Self>(),
    ];
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
            posterior_mean: d.posterior_mean,
        }
    }
}

impl Layout for cogvideo_edit_options {
    const NAME: &'static str = "cogvideo_edit_options";
    const SIZES: &'static [usize] = &[
        std::mem::offset_of!(Self, strength),
        std::mem::offset_of!(Self, cache),
        std::mem::size_of::<Self>(),
    ];
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
            strength: d.strength,
            latents_out: std::ptr::null_mut(),
            latents_out_len: 0,
            cache: std::ptr::null(),
            cache_report: std::ptr::null_mut(),
        }
    }
}

impl Layout for cogvideo_decode_options {
    const NAME: &'static str = "cogvideo_decode_options";
    const SIZES: &'static [usize] = &[std::mem::size_of::<Self>()];
    fn defaults() -> Self {
        Self {
            struct_size: size_of_u32::<Self>(),
            tiling: COGVIDEO_TILING_AS_LOADED,
            tile_width: 0,
            tile_height: 0,
            resize_mode: COGVIDEO_RESIZE_STRETCH,
            progress: None,
            progress_user: std::ptr::null_mut(),
        }
    }
}

impl Layout for cogvideo_video_to_video_options {
    const NAME: &'static str = "cogvideo_video_to_video_options";
    const SIZES: &'static [usize] = &[
        std::mem::offset_of!(Self, cache),
        std::mem::size_of::<Self>(),
    ];
    fn defaults() -> Self {
        let v = VideoToVideoOptions::default();
        let d = &v.sampling;
        Self {
            struct_size: size_of_u32::<Self>(),
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            width: 0,
            height: 0,
            steps: d.steps as i32,
            guidance_scale: d.guidance_scale as f32,
            dynamic_cfg: d.dynamic_cfg,
            scheduler: COGVIDEO_SCHEDULER_DPM,
            strength: v.strength,
            seed: d.noise.seed,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: COGVIDEO_RESIZE_STRETCH,
            progress: None,
            progress_user: std::ptr::null_mut(),
            latents_out: std::ptr::null_mut(),
            latents_out_len: 0,
            cache: std::ptr::null(),
            cache_report: std::ptr::null_mut(),
        }
    }
}

// cbindgen reads these signatures, so they are written out rather than
// generated by a macro. The header's `*_init(opts)` macros call the sized
// functions with `sizeof *(opts)`; the one-argument symbols of the same
// names stay exported for programs built against the 1.0 to 1.2 headers
// (cbindgen.toml leaves them out of the header).

/// Fills the caller's `cogvideo_load_options` of `size` bytes (`sizeof` as the caller's
/// header declares it) with the defaults and sets `struct_size` to `size`;
/// call it through the `cogvideo_load_options_init(opts)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` when `opts` is NULL or `size` is neither
/// the size of a version of the struct nor a larger one of at most 4096
/// bytes (a newer header's). Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `opts` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_load_options_init_sized(
    opts: *mut cogvideo_load_options,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { init_sized(opts, size) })
}

/// The 1.0 to 1.2 headers' init: writes the oldest layout (see [`init_oldest`]).
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_load_options_init(opts: *mut cogvideo_load_options) {
    unsafe { init_oldest(opts) }
}

/// Fills the caller's `cogvideo_generate_options` of `size` bytes (`sizeof` as the caller's
/// header declares it) with the defaults and sets `struct_size` to `size`;
/// call it through the `cogvideo_generate_options_init(opts)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` when `opts` is NULL or `size` is neither
/// the size of a version of the struct nor a larger one of at most 4096
/// bytes (a newer header's). Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `opts` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_generate_options_init_sized(
    opts: *mut cogvideo_generate_options,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { init_sized(opts, size) })
}

/// The 1.0 to 1.2 headers' init: writes the oldest layout (see [`init_oldest`]).
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_generate_options_init(opts: *mut cogvideo_generate_options) {
    unsafe { init_oldest(opts) }
}

/// Fills the caller's `cogvideo_animate_options` of `size` bytes (`sizeof` as the caller's
/// header declares it) with the defaults and sets `struct_size` to `size`;
/// call it through the `cogvideo_animate_options_init(opts)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` when `opts` is NULL or `size` is neither
/// the size of a version of the struct nor a larger one of at most 4096
/// bytes (a newer header's). Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `opts` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_animate_options_init_sized(
    opts: *mut cogvideo_animate_options,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { init_sized(opts, size) })
}

/// The 1.0 to 1.2 headers' init: writes the oldest layout (see [`init_oldest`]).
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_animate_options_init(opts: *mut cogvideo_animate_options) {
    unsafe { init_oldest(opts) }
}

/// Fills the caller's `cogvideo_invert_options` of `size` bytes (`sizeof` as the caller's
/// header declares it) with the defaults and sets `struct_size` to `size`;
/// call it through the `cogvideo_invert_options_init(opts)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` when `opts` is NULL or `size` is neither
/// the size of a version of the struct nor a larger one of at most 4096
/// bytes (a newer header's). Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `opts` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_invert_options_init_sized(
    opts: *mut cogvideo_invert_options,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { init_sized(opts, size) })
}

/// The 1.0 to 1.2 headers' init: writes the oldest layout (see [`init_oldest`]).
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_invert_options_init(opts: *mut cogvideo_invert_options) {
    unsafe { init_oldest(opts) }
}

/// Fills the caller's `cogvideo_edit_options` of `size` bytes (`sizeof` as the caller's
/// header declares it) with the defaults and sets `struct_size` to `size`;
/// call it through the `cogvideo_edit_options_init(opts)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` when `opts` is NULL or `size` is neither
/// the size of a version of the struct nor a larger one of at most 4096
/// bytes (a newer header's). Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `opts` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_edit_options_init_sized(
    opts: *mut cogvideo_edit_options,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { init_sized(opts, size) })
}

/// The 1.0 to 1.2 headers' init: writes the oldest layout (see [`init_oldest`]).
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_edit_options_init(opts: *mut cogvideo_edit_options) {
    unsafe { init_oldest(opts) }
}

/// Fills the caller's `cogvideo_decode_options` of `size` bytes (`sizeof` as the caller's
/// header declares it) with the defaults and sets `struct_size` to `size`;
/// call it through the `cogvideo_decode_options_init(opts)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` when `opts` is NULL or `size` is neither
/// the size of a version of the struct nor a larger one of at most 4096
/// bytes (a newer header's). Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `opts` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_decode_options_init_sized(
    opts: *mut cogvideo_decode_options,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { init_sized(opts, size) })
}

/// The 1.1 to 1.2 headers' init: writes the oldest layout (see [`init_oldest`]).
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_decode_options_init(opts: *mut cogvideo_decode_options) {
    unsafe { init_oldest(opts) }
}

/// Fills the caller's `cogvideo_video_to_video_options` of `size` bytes (`sizeof` as the caller's
/// header declares it) with the defaults and sets `struct_size` to `size`;
/// call it through the `cogvideo_video_to_video_options_init(opts)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` when `opts` is NULL or `size` is neither
/// the size of a version of the struct nor a larger one of at most 4096
/// bytes (a newer header's). Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `opts` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_video_to_video_options_init_sized(
    opts: *mut cogvideo_video_to_video_options,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { init_sized(opts, size) })
}

/// The 1.1 to 1.2 headers' init: writes the oldest layout (see [`init_oldest`]).
///
/// # Safety
/// `opts` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_video_to_video_options_init(
    opts: *mut cogvideo_video_to_video_options,
) {
    unsafe { init_oldest(opts) }
}

pub(super) fn load_options(o: &cogvideo_load_options) -> Result<LoadOptions> {
    let device = match o.device {
        COGVIDEO_DEVICE_AUTO => DeviceKind::Auto,
        COGVIDEO_DEVICE_CPU => DeviceKind::Cpu,
        COGVIDEO_DEVICE_CUDA if o.device_index >= 0 => DeviceKind::Cuda(o.device_index as usize),
        COGVIDEO_DEVICE_CUDA => {
            return Err(Error::invalid(format!(
                "device_index must be 0 or more, got {}",
                o.device_index
            )));
        }
        other => {
            return Err(Error::invalid(format!(
                "device {other} is not one of COGVIDEO_DEVICE_CPU (0), _CUDA (1) or _AUTO (2)"
            )));
        }
    };
    let residency = match o.residency {
        COGVIDEO_RESIDENCY_AUTO => Residency::Auto,
        COGVIDEO_RESIDENCY_RESIDENT => Residency::Resident,
        COGVIDEO_RESIDENCY_PER_COMPONENT => Residency::PerComponent,
        COGVIDEO_RESIDENCY_STREAMED => Residency::Streamed,
        other => {
            return Err(Error::invalid(format!(
                "residency {other} is not one of COGVIDEO_RESIDENCY_AUTO (0), _RESIDENT (1), _PER_COMPONENT (2) or _STREAMED (3)"
            )));
        }
    };
    Ok(LoadOptions {
        device,
        dtype: match o.dtype {
            COGVIDEO_DTYPE_AUTO => None,
            code => Some(dtype_of(code)?),
        },
        vae_tiling: o.vae_tiling,
        residency,
        memory_budget: (o.memory_budget != 0).then_some(o.memory_budget),
    })
}

/// A count the pipeline checks against its own range; only the sign is
/// checked here so that the range is stated in one place.
fn count(v: i32, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(format!("{what} must be positive, got {v}")))
}

/// 0 takes the default; the pipeline checks positive values.
fn optional(v: i32, what: &str) -> Result<Option<usize>> {
    match v {
        0 => Ok(None),
        v if v < 0 => Err(Error::invalid(format!(
            "{what} must be 0 (the default) or positive, got {v}"
        ))),
        v => Ok(Some(v as usize)),
    }
}

fn scheduler(code: u32) -> Result<SchedulerKind> {
    match code {
        COGVIDEO_SCHEDULER_DPM => Ok(SchedulerKind::Dpm),
        COGVIDEO_SCHEDULER_DDIM => Ok(SchedulerKind::Ddim),
        other => Err(Error::invalid(format!(
            "scheduler {other} is not one of COGVIDEO_SCHEDULER_DPM (0) or COGVIDEO_SCHEDULER_DDIM (1)"
        ))),
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

/// Caller noise as passed: checked against the call's draws
/// ([`RawNoise::attach`]) before a single value is copied.
#[derive(Clone, Copy)]
pub(super) struct RawNoise {
    ptr: *const f32,
    len: usize,
}

impl RawNoise {
    /// Checks the length against `plan` and copies the values into `noise`.
    ///
    /// # Safety
    /// `ptr` must be NULL or point to `len` floats.
    pub(super) unsafe fn attach(self, plan: &NoisePlan, noise: &mut NoiseOptions) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        if self.ptr.is_null() {
            return Err(Error::invalid(format!(
                "noise is NULL but noise_len is {}",
                self.len
            )));
        }
        plan.check_supplied(self.len)?;
        let mut values = crate::memory::try_zeroed::<f32>(self.len, "caller noise")?;
        // SAFETY: the caller guarantees `len` readable floats.
        values.copy_from_slice(unsafe { std::slice::from_raw_parts(self.ptr, self.len) });
        noise.supplied = values;
        Ok(())
    }
}

/// The prompt, sampler and cache fields common to the sampling calls.
///
/// # Safety
/// The string pointers and `cache` must be valid as documented.
#[allow(
    clippy::too_many_arguments,
    reason = "the C struct's fields, one by one"
)]
unsafe fn sampling_options(
    prompt: *const c_char,
    negative_prompt: *const c_char,
    steps: i32,
    guidance: f32,
    dynamic_cfg: bool,
    sched: u32,
    seed: u64,
    cache: *const cogvideo_cache_options,
) -> Result<SamplingOptions> {
    Ok(SamplingOptions {
        prompt: unsafe { str_arg(prompt, "prompt") }?,
        negative_prompt: unsafe { str_arg(negative_prompt, "negative_prompt") }?,
        steps: count(steps, "steps")?,
        guidance_scale: guidance_scale(guidance)?,
        dynamic_cfg,
        scheduler: scheduler(sched)?,
        noise: NoiseOptions::seed(seed),
        cache: unsafe { super::cache::cache_config(cache) }?,
    })
}

pub(super) unsafe fn generate_options(
    o: &cogvideo_generate_options,
) -> Result<(GenerateOptions, RawNoise)> {
    let opts = GenerateOptions {
        sampling: unsafe {
            sampling_options(
                o.prompt,
                o.negative_prompt,
                o.steps,
                o.guidance_scale,
                o.dynamic_cfg,
                o.scheduler,
                o.seed,
                o.cache,
            )
        }?,
        height: optional(o.height, "height")?,
        width: optional(o.width, "width")?,
        num_frames: optional(o.num_frames, "num_frames")?,
    };
    Ok((
        opts,
        RawNoise {
            ptr: o.noise,
            len: o.noise_len,
        },
    ))
}

pub(super) unsafe fn animate_options(
    o: &cogvideo_animate_options,
) -> Result<(AnimateOptions, RawNoise)> {
    let opts = AnimateOptions {
        sampling: unsafe {
            sampling_options(
                o.prompt,
                o.negative_prompt,
                o.steps,
                o.guidance_scale,
                o.dynamic_cfg,
                o.scheduler,
                o.seed,
                o.cache,
            )
        }?,
        num_frames: count(o.num_frames, "num_frames")?,
    };
    Ok((
        opts,
        RawNoise {
            ptr: o.noise,
            len: o.noise_len,
        },
    ))
}

pub(super) fn invert_options(o: &cogvideo_invert_options) -> Result<(InvertOptions, RawNoise)> {
    let opts = InvertOptions {
        steps: count(o.steps, "steps")?,
        posterior_mean: o.posterior_mean,
        noise: NoiseOptions::seed(o.seed),
        // The C API keeps inversions exact.
        cache: CacheConfig::Off,
    };
    Ok((
        opts,
        RawNoise {
            ptr: o.noise,
            len: o.noise_len,
        },
    ))
}

pub(super) unsafe fn edit_options(o: &cogvideo_edit_options) -> Result<(EditOptions, RawNoise)> {
    let opts = EditOptions {
        prompt: unsafe { str_arg(o.prompt, "prompt") }?,
        negative_prompt: unsafe { str_arg(o.negative_prompt, "negative_prompt") }?,
        guidance_scale: guidance_scale(o.guidance_scale)?,
        start_from_inverted: o.start_from_inverted,
        strength: o.strength,
        noise: NoiseOptions::seed(o.seed),
        cache: unsafe { super::cache::cache_config(o.cache) }?,
    };
    Ok((
        opts,
        RawNoise {
            ptr: o.noise,
            len: o.noise_len,
        },
    ))
}

pub(super) unsafe fn video_to_video_options(
    o: &cogvideo_video_to_video_options,
) -> Result<(VideoToVideoOptions, RawNoise)> {
    let opts = VideoToVideoOptions {
        sampling: unsafe {
            sampling_options(
                o.prompt,
                o.negative_prompt,
                o.steps,
                o.guidance_scale,
                o.dynamic_cfg,
                o.scheduler,
                o.seed,
                o.cache,
            )
        }?,
        strength: o.strength,
    };
    Ok((
        opts,
        RawNoise {
            ptr: o.noise,
            len: o.noise_len,
        },
    ))
}

pub(super) fn decode_options(o: &cogvideo_decode_options) -> Result<DecodeOptions> {
    let tiling = match o.tiling {
        COGVIDEO_TILING_AS_LOADED => VaeTiling::Model,
        COGVIDEO_TILING_OFF => VaeTiling::Off,
        COGVIDEO_TILING_ON if o.tile_width == 0 && o.tile_height == 0 => VaeTiling::Default,
        COGVIDEO_TILING_ON => VaeTiling::Pixels {
            height: count(o.tile_height, "tile_height")?,
            width: count(o.tile_width, "tile_width")?,
        },
        other => {
            return Err(Error::invalid(format!(
                "tiling {other} is not one of COGVIDEO_TILING_AS_LOADED (0), _OFF (1) or _ON (2)"
            )));
        }
    };
    Ok(DecodeOptions { tiling })
}
