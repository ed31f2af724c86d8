//! Pipeline lifetime (load, free) and the queries that never wait for a
//! running call: sizes, frame counts, identity, device, memory.

use std::ffi::c_char;

use candle_core::DType;
use parking_lot::Mutex;

use super::args::*;
use super::options::{self, *};
use super::status::*;
use crate::error::Error;
use crate::pipelines::{self, Inversion, Pipeline, Progress};

/// A loaded checkpoint. Calls on one pipeline from several threads are
/// safe; generating calls run one after another, while read-only queries
/// (sizes, frame counts, fps, noise plans) never wait for them.
pub struct cogvideo_pipeline {
    pub(super) pipeline: Pipeline,
    /// Held by the long calls: one at a time keeps the memory of one call.
    pub(super) busy: Mutex<()>,
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
    pub(super) inner: Inversion,
}

/// Loads a checkpoint folder in the diffusers layout. `opts` may be NULL
/// for defaults. On success `*out` holds a pipeline to free with
/// [`cogvideo_pipeline_free`].
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL path or out,
/// options out of range); COGVIDEO_ERR_IO (a file or folder cannot be
/// read); COGVIDEO_ERR_BAD_CHECKPOINT (missing, malformed or inconsistent
/// files, an unknown variant); COGVIDEO_ERR_OUT_OF_MEMORY (the weights do
/// not fit); COGVIDEO_ERR_DEVICE (the GPU cannot be opened or fails);
/// COGVIDEO_ERR_CANCELLED (the progress callback stopped it; nothing is
/// kept).
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
        let opts = unsafe { options::read(opts) }?;
        let load = options::load_options(&opts)?;
        let mut cb = progress_fn(opts.progress, opts.progress_user);
        let pipeline = Pipeline::load_with_progress(path, &load, &mut Progress::new(&mut cb))?;
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
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
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

pub const COGVIDEO_OPERATION_GENERATE: u32 = 0;
pub const COGVIDEO_OPERATION_ANIMATE: u32 = 1;
/// Inversion and the edits of it.
pub const COGVIDEO_OPERATION_EDIT: u32 = 2;
pub const COGVIDEO_OPERATION_VIDEO_TO_VIDEO: u32 = 3;

/// The frame count an operation (`COGVIDEO_OPERATION_*`) takes by default:
/// for text- and image-to-video what `num_frames` 0 means, for editing and
/// video-to-video the length of the input clip that gives a default-length
/// result (49 for CogVideoX 1.0; 77 for 1.5, the longest 8k+5 within its 81).
/// Never waits for a running call. Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer, or an unknown operation;
/// COGVIDEO_ERR_UNSUPPORTED_VARIANT for an operation the variant cannot do.
///
/// # Safety
/// `p` must be a live pipeline; `frames` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_default_frames(
    p: *const cogvideo_pipeline,
    operation: u32,
    frames: *mut i32,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        let op = match operation {
            COGVIDEO_OPERATION_GENERATE => pipelines::Operation::Generate,
            COGVIDEO_OPERATION_ANIMATE => pipelines::Operation::Animate,
            COGVIDEO_OPERATION_EDIT => pipelines::Operation::Edit,
            COGVIDEO_OPERATION_VIDEO_TO_VIDEO => pipelines::Operation::VideoToVideo,
            other => {
                return Err(Error::invalid(format!(
                    "operation {other} is not one of COGVIDEO_OPERATION_GENERATE (0), _ANIMATE (1), _EDIT (2) or _VIDEO_TO_VIDEO (3)"
                )));
            }
        };
        i32_out(frames, pipeline.default_frames(op), "frames")
    })
}

/// The identity of the loaded checkpoint: a hash of its configs, tokenizer
/// files and weight headers (not the weights' values), the same in every
/// process and on every device, computed at load. Key caches of results on
/// it together with the call's options. Never waits for a running call.
/// Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
///
/// # Safety
/// `p` must be a live pipeline; `identity` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_identity(
    p: *const cogvideo_pipeline,
    identity: *mut u64,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        // SAFETY: NULL or a writable slot.
        let out = unsafe { identity.as_mut() }.ok_or_else(|| Error::invalid("identity is NULL"))?;
        *out = pipeline.identity();
        Ok(())
    })
}

/// Frames per second of the loaded variant's results (8 for CogVideoX 1.0
/// models, 16 for 1.5), for writing videos. Never waits for a running call.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
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
/// Initialise with `cogvideo_memory_info_init(&info)`.
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

impl options::Layout for cogvideo_memory_info {
    const NAME: &'static str = "cogvideo_memory_info";
    const SIZES: &'static [usize] = &[std::mem::size_of::<Self>()];
    fn defaults() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>() as u32,
            residency: 0,
            weight_bytes: 0,
            kept_weight_bytes: 0,
            estimated_peak_bytes: 0,
            peak_rss_bytes: 0,
            current_rss_bytes: 0,
        }
    }
}

/// Sets the `struct_size` of the caller's `cogvideo_memory_info` of `size`
/// bytes to `size` and zeroes the rest; call it through the
/// `cogvideo_memory_info_init(info)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` when `info` is NULL or `size` is neither
/// the size of a version of the struct nor a larger one of at most 4096
/// bytes (a newer header's). Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `info` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_memory_info_init_sized(
    info: *mut cogvideo_memory_info,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { options::init_sized(info, size) })
}

/// The 1.2 header's init: writes the 1.2 layout.
///
/// # Safety
/// `info` must be NULL (ignored) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_memory_info_init(info: *mut cogvideo_memory_info) {
    unsafe { options::init_oldest(info) }
}

/// The residency in effect, the weights' size, and the estimated and
/// measured peak memory (see [`cogvideo_memory_info`]); fills `info` up to
/// its `struct_size`. Never waits for a running call, so a progress
/// callback may call it to show the figures. Since 1.2.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
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
        let r = pipeline.memory_report();
        let out = cogvideo_memory_info {
            struct_size: 0,
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
        unsafe { options::write_out(info, &out) }
    })
}

/// What stays loaded (`COGVIDEO_RESIDENCY_*`, the choice `_AUTO` made), the
/// bytes of all models' weights in their compute dtypes, and the process's
/// peak resident memory so far (bytes; 0 where the system does not say).
/// Any pointer may be NULL. Never waits for a running call. Since 1.1;
/// [`cogvideo_pipeline_memory_info`] reports more.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
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
    let mut info = <cogvideo_memory_info as options::Layout>::defaults();
    // SAFETY: `info` is today's layout, as its struct_size says.
    let status = unsafe { cogvideo_pipeline_memory_info(p, &mut info) };
    if status != cogvideo_status::COGVIDEO_OK {
        return status;
    }
    // SAFETY: each out pointer is NULL or writable.
    unsafe {
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
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
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
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
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
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer, or for sizes or counts out of range.
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
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer, or for sizes or counts out of range.
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
        let (h, w) = pipeline_working_size(pipeline, height, width)?;
        let t = size_arg(num_frames, "num_frames")?.unwrap_or(pipeline.default_video_size().2);
        shape_out(&pipeline.latent_shape(h, w, t)?, shape)
    })
}

/// The number of frames [`cogvideo_decode_latents`] produces from
/// `latent_frames` latent frames (an odd count F gives 4(F-1)+1 frames, an
/// even one 4F, as diffusers decodes).
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL pointer or
/// a count below 1.
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
