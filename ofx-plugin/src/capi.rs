//! libcogvideo's C API (`include/cogvideo.h`), declared by hand and loaded
//! at run time, exactly as a C program would use it. The plugin opens
//! `libcogvideo.so` by name; its `$ORIGIN` run path finds the copy beside it
//! in the bundle. Loading lazily keeps the plugin describable (and able to
//! explain what is wrong) when the library is missing. The declarations are
//! those of the released header of [`HEADER_VERSION`] (the library takes
//! every released layout of its options structs, so a newer library serves
//! them unchanged), checked against it by `tests/header.rs`.

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::Path;
use std::sync::OnceLock;

pub type Status = i32;
pub const OK: Status = 0;
pub const ERR_CANCELLED: Status = 7;

pub const ABI_MAJOR: u32 = 1;

/// The released header these declarations copy: `tests/abi/cogvideo-1.4.h`.
pub const HEADER_VERSION: &str = "1.4";

pub const FORMAT_RGBA8: u32 = 1;
pub const FORMAT_RGBA16: u32 = 2;
pub const FORMAT_RGBA32F: u32 = 3;

/// `COGVIDEO_OPERATION_*`, for `cogvideo_pipeline_default_frames`.
pub const OPERATION_GENERATE: u32 = 0;
pub const OPERATION_ANIMATE: u32 = 1;
pub const OPERATION_EDIT: u32 = 2;

/// `COGVIDEO_CACHE_*` (C API 1.4): the step cache of a sampling call.
pub const CACHE_PYRAMID_ATTENTION_BROADCAST: u32 = 2;
pub const CACHE_FASTER_CACHE: u32 = 3;
pub const CACHE_TAYLORSEER: u32 = 4;

pub type ProgressFn = Option<unsafe extern "C" fn(*mut c_void, i32, i32, i32) -> bool>;

#[repr(C)]
pub struct Pipeline {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct Inversion {
    _opaque: [u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    pub struct_size: u32,
    pub device: u32,
    pub device_index: i32,
    pub dtype: u32,
    pub vae_tiling: bool,
    /// `COGVIDEO_RESIDENCY_*`; the init function's default (auto) is kept.
    pub residency: u32,
    pub memory_budget: u64,
    /// Since 1.3 (a 1.2 library's init leaves the struct at the 1.2 size,
    /// so that library does not read these).
    pub progress: ProgressFn,
    pub progress_user: *mut c_void,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            struct_size: 0,
            device: 0,
            device_index: 0,
            dtype: 0,
            vae_tiling: false,
            residency: 0,
            memory_budget: 0,
            progress: None,
            progress_user: std::ptr::null_mut(),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub data: *mut c_void,
    pub width: i32,
    pub height: i32,
    pub stride_bytes: i64,
    pub format: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InvertOptions {
    pub struct_size: u32,
    pub width: i32,
    pub height: i32,
    pub steps: i32,
    pub seed: u64,
    pub noise: *const f32,
    pub noise_len: usize,
    pub resize_mode: u32,
    pub progress: ProgressFn,
    pub progress_user: *mut c_void,
    pub posterior_mean: bool,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EditOptions {
    pub struct_size: u32,
    pub prompt: *const c_char,
    pub negative_prompt: *const c_char,
    pub guidance_scale: f32,
    pub start_from_inverted: bool,
    pub seed: u64,
    pub noise: *const f32,
    pub noise_len: usize,
    pub resize_mode: u32,
    pub progress: ProgressFn,
    pub progress_user: *mut c_void,
    pub strength: f64,
    pub latents_out: *mut f32,
    pub latents_out_len: usize,
    /// Since 1.4: the step cache (NULL: exact) and what it saved.
    pub cache: *const CacheOptions,
    pub cache_report: *mut CacheReport,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenerateOptions {
    pub struct_size: u32,
    pub prompt: *const c_char,
    pub negative_prompt: *const c_char,
    pub width: i32,
    pub height: i32,
    pub num_frames: i32,
    pub steps: i32,
    pub guidance_scale: f32,
    pub dynamic_cfg: bool,
    pub scheduler: u32,
    pub seed: u64,
    pub noise: *const f32,
    pub noise_len: usize,
    pub resize_mode: u32,
    pub progress: ProgressFn,
    pub progress_user: *mut c_void,
    pub latents_out: *mut f32,
    pub latents_out_len: usize,
    /// Since 1.4: the step cache (NULL: exact) and what it saved.
    pub cache: *const CacheOptions,
    pub cache_report: *mut CacheReport,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct DecodeOptions {
    pub struct_size: u32,
    pub tiling: u32,
    pub tile_width: i32,
    pub tile_height: i32,
    pub resize_mode: u32,
    pub progress: ProgressFn,
    pub progress_user: *mut c_void,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct AnimateOptions {
    pub struct_size: u32,
    pub prompt: *const c_char,
    pub negative_prompt: *const c_char,
    pub width: i32,
    pub height: i32,
    pub num_frames: i32,
    pub steps: i32,
    pub guidance_scale: f32,
    pub dynamic_cfg: bool,
    pub scheduler: u32,
    pub seed: u64,
    pub noise: *const f32,
    pub noise_len: usize,
    pub resize_mode: u32,
    pub progress: ProgressFn,
    pub progress_user: *mut c_void,
    pub latents_out: *mut f32,
    pub latents_out_len: usize,
    /// Since 1.4: the step cache (NULL: exact) and what it saved.
    pub cache: *const CacheOptions,
    pub cache_report: *mut CacheReport,
}

impl Default for AnimateOptions {
    fn default() -> Self {
        AnimateOptions {
            struct_size: 0,
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            width: 0,
            height: 0,
            num_frames: 0,
            steps: 0,
            guidance_scale: 0.0,
            dynamic_cfg: false,
            scheduler: 0,
            seed: 0,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: 0,
            progress: None,
            progress_user: std::ptr::null_mut(),
            latents_out: std::ptr::null_mut(),
            latents_out_len: 0,
            cache: std::ptr::null(),
            cache_report: std::ptr::null_mut(),
        }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            struct_size: 0,
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            width: 0,
            height: 0,
            num_frames: 0,
            steps: 0,
            guidance_scale: 0.0,
            dynamic_cfg: false,
            scheduler: 0,
            seed: 0,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: 0,
            progress: None,
            progress_user: std::ptr::null_mut(),
            latents_out: std::ptr::null_mut(),
            latents_out_len: 0,
            cache: std::ptr::null(),
            cache_report: std::ptr::null_mut(),
        }
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            struct_size: 0,
            tiling: 0,
            tile_width: 0,
            tile_height: 0,
            resize_mode: 0,
            progress: None,
            progress_user: std::ptr::null_mut(),
        }
    }
}

impl Default for InvertOptions {
    fn default() -> Self {
        InvertOptions {
            struct_size: 0,
            width: 0,
            height: 0,
            steps: 0,
            seed: 0,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: 0,
            progress: None,
            progress_user: std::ptr::null_mut(),
            posterior_mean: false,
        }
    }
}

impl Default for EditOptions {
    fn default() -> Self {
        EditOptions {
            struct_size: 0,
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            guidance_scale: 0.0,
            start_from_inverted: false,
            seed: 0,
            noise: std::ptr::null(),
            noise_len: 0,
            resize_mode: 0,
            progress: None,
            progress_user: std::ptr::null_mut(),
            strength: 0.0,
            latents_out: std::ptr::null_mut(),
            latents_out_len: 0,
            cache: std::ptr::null(),
            cache_report: std::ptr::null_mut(),
        }
    }
}

/// `cogvideo_cache_options` (since 1.4), filled by its init with
/// diffusers' documented CogVideoX settings; the plugin sets `method` only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheOptions {
    pub struct_size: u32,
    pub method: u32,
    pub first_block_threshold: f64,
    pub pab_skip_range: i32,
    pub pab_timestep_min: f64,
    pub pab_timestep_max: f64,
    pub faster_attention_skip_range: i32,
    pub faster_attention_timestep_min: f64,
    pub faster_attention_timestep_max: f64,
    pub faster_attention_weight: f64,
    pub faster_uncond_skip_range: i32,
    pub faster_uncond_timestep_min: f64,
    pub faster_uncond_timestep_max: f64,
    pub faster_low_frequency_weight: f64,
    pub faster_low_frequency_timestep_min: f64,
    pub faster_low_frequency_timestep_max: f64,
    pub faster_high_frequency_weight: f64,
    pub faster_high_frequency_timestep_min: f64,
    pub faster_high_frequency_timestep_max: f64,
    pub taylorseer_warmup_steps: i32,
    pub taylorseer_cache_interval: i32,
    pub taylorseer_last_cached_step: i32,
    pub taylorseer_max_order: i32,
}

/// `cogvideo_cache_report` (since 1.4): what a call's step cache saved.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheReport {
    pub struct_size: u32,
    pub steps: u32,
    pub block_evaluations: u64,
    pub blocks_skipped: u64,
    pub attention_skipped: u64,
}

/// The sizes an options struct of this plugin's layout had in the older
/// released headers, newest first: a 1.3 library refuses the 1.4 size, and
/// is given its own (the fields past it are then not read).
pub trait Released {
    const OLDER: &'static [usize] = &[];
}

impl Released for LoadOptions {}
impl Released for DecodeOptions {}
impl Released for InvertOptions {}
impl Released for CacheOptions {}
impl Released for CacheReport {}
// 1.4 appended `cache` and `cache_report`.
impl Released for GenerateOptions {
    const OLDER: &'static [usize] = &[std::mem::offset_of!(GenerateOptions, cache)];
}
impl Released for AnimateOptions {
    const OLDER: &'static [usize] = &[std::mem::offset_of!(AnimateOptions, cache)];
}
impl Released for EditOptions {
    const OLDER: &'static [usize] = &[std::mem::offset_of!(EditOptions, cache)];
}

/// The functions the plugin uses, resolved from the loaded library.
pub struct Api {
    pub last_error: unsafe extern "C" fn() -> *const c_char,
    pub version: unsafe extern "C" fn() -> *const c_char,
    pub abi_version: unsafe extern "C" fn() -> u32,
    pub load_pipeline:
        unsafe extern "C" fn(*const c_char, *const LoadOptions, *mut *mut Pipeline) -> Status,
    pub pipeline_free: unsafe extern "C" fn(*mut Pipeline),
    pub pipeline_default_size:
        unsafe extern "C" fn(*const Pipeline, *mut i32, *mut i32, *mut i32) -> Status,
    pub pipeline_fps: unsafe extern "C" fn(*const Pipeline, *mut i32) -> Status,
    pub invert_video: unsafe extern "C" fn(
        *const Pipeline,
        *const Frame,
        usize,
        *const InvertOptions,
        *mut *mut Inversion,
    ) -> Status,
    pub inversion_frame_count: unsafe extern "C" fn(*const Inversion, *mut i32) -> Status,
    pub inversion_free: unsafe extern "C" fn(*mut Inversion),
    pub edit_with_prompt: unsafe extern "C" fn(
        *const Pipeline,
        *const Inversion,
        *const EditOptions,
        *const Frame,
        usize,
    ) -> Status,
    pub output_frame_count: unsafe extern "C" fn(*const Pipeline, i32, *mut i32) -> Status,
    pub generate_video: unsafe extern "C" fn(
        *const Pipeline,
        *const GenerateOptions,
        *const Frame,
        usize,
    ) -> Status,
    pub latent_shape: unsafe extern "C" fn(*const Pipeline, i32, i32, i32, *mut i64) -> Status,
    pub inversion_latent_shape: unsafe extern "C" fn(*const Inversion, *mut i64) -> Status,
    pub decoded_frame_count: unsafe extern "C" fn(i32, *mut i32) -> Status,
    pub decode_latents: unsafe extern "C" fn(
        *const Pipeline,
        *const f32,
        *const i64,
        *const DecodeOptions,
        *const Frame,
        usize,
    ) -> Status,
    pub animate_image: unsafe extern "C" fn(
        *const Pipeline,
        *const Frame,
        *const AnimateOptions,
        *const Frame,
        usize,
    ) -> Status,
    /// Since 1.3 (`None` in an older library, see the methods using them).
    pub pipeline_default_frames:
        Option<unsafe extern "C" fn(*const Pipeline, u32, *mut i32) -> Status>,
    pub pipeline_identity: Option<unsafe extern "C" fn(*const Pipeline, *mut u64) -> Status>,
    pub inversion_save:
        Option<unsafe extern "C" fn(*const Pipeline, *const Inversion, *const c_char) -> Status>,
    pub inversion_load:
        Option<unsafe extern "C" fn(*const Pipeline, *const c_char, *mut *mut Inversion) -> Status>,
    pub load_options_init: Init<LoadOptions>,
    pub generate_options_init: Init<GenerateOptions>,
    pub decode_options_init: Init<DecodeOptions>,
    pub animate_options_init: Init<AnimateOptions>,
    pub invert_options_init: Init<InvertOptions>,
    pub edit_options_init: Init<EditOptions>,
    /// Since 1.4: step caching and LoRA adapters (`None` in an older
    /// library: the plugin then computes exact results, without LoRA).
    pub cache_options_init: Option<unsafe extern "C" fn(*mut CacheOptions, usize) -> Status>,
    pub cache_report_init: Option<unsafe extern "C" fn(*mut CacheReport, usize) -> Status>,
    pub pipeline_load_lora:
        Option<unsafe extern "C" fn(*const Pipeline, *const c_char, *const c_char) -> Status>,
    pub pipeline_set_adapters: Option<
        unsafe extern "C" fn(*const Pipeline, *const *const c_char, *const f64, usize) -> Status,
    >,
    pub pipeline_remove_lora:
        Option<unsafe extern "C" fn(*const Pipeline, *const c_char) -> Status>,
    // Keeps the functions above valid.
    _lib: libloading::Library,
}

/// An options struct's init function (see `Api::open`).
pub struct Init<T> {
    sized: Option<unsafe extern "C" fn(*mut T, usize) -> Status>,
    legacy: unsafe extern "C" fn(*mut T),
}

impl<T: Released> Init<T> {
    /// Fills `opts` with the library's defaults for the plugin's layout, or
    /// for the newest older layout the library knows.
    ///
    /// # Safety
    /// `T` must be the header's struct of this init (the plugin's
    /// declarations are checked against the header by tests/header.rs).
    pub unsafe fn run(&self, opts: &mut T) {
        match self.sized {
            // The plugin's layouts are released ones: one of them is the
            // library's.
            Some(f) => {
                for size in
                    std::iter::once(std::mem::size_of::<T>()).chain(T::OLDER.iter().copied())
                {
                    // SAFETY: `opts` is writable for its own size, and the
                    // older sizes are smaller.
                    if unsafe { f(opts, size) } == OK {
                        break;
                    }
                }
            }
            // SAFETY: as documented.
            None => unsafe { (self.legacy)(opts) },
        }
    }

    /// The library's defaults for the plugin's layout of `T`.
    pub fn defaults(&self) -> T
    where
        T: Default,
    {
        let mut opts = T::default();
        // SAFETY: an `Init<T>` is made only by `Api::open`, from the
        // header's init function of `T`; `opts` is writable.
        unsafe { self.run(&mut opts) };
        opts
    }
}

/// The library's file name; the bundle puts it beside the plugin binary.
pub const LIBRARY: &str = "libcogvideo.so";

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// The process-wide library, opened on first use.
pub fn api() -> Result<&'static Api, String> {
    API.get_or_init(|| Api::open(LIBRARY))
        .as_ref()
        .map_err(Clone::clone)
}

impl Api {
    /// Opens `name` (a file name searched as the dynamic loader does, or a
    /// path) and resolves every function, refusing an incompatible ABI.
    pub fn open(name: &str) -> Result<Api, String> {
        // SAFETY: loading libcogvideo runs no initialisers with preconditions.
        let lib = unsafe { libloading::Library::new(name) }
            .map_err(|e| format!("cannot load {name}: {e}"))?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the declared type matches the header's prototype
                // (checked by tests/header.rs).
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("{name} lacks {}: {e}", $name))?
            };
        }
        // A call an older library lacks.
        macro_rules! since {
            ($name:literal) => {
                // SAFETY: the declared type matches the header's prototype.
                unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .ok()
                    .map(|f| *f)
            };
        }
        // A 1.3 library's sized init, given this plugin's struct size; an
        // older library has only the one-argument init, which writes that
        // library's layout: never larger than the plugin's, which declares
        // the 1.2 layouts.
        macro_rules! init {
            ($name:literal) => {
                Init {
                    // SAFETY: the declared type matches the header's prototype.
                    sized: unsafe { lib.get(concat!($name, "_sized\0").as_bytes()) }
                        .ok()
                        .map(|f| *f),
                    legacy: sym!($name),
                }
            };
        }
        let api = Api {
            last_error: sym!("cogvideo_last_error"),
            version: sym!("cogvideo_version"),
            abi_version: sym!("cogvideo_abi_version"),
            load_pipeline: sym!("cogvideo_load_pipeline"),
            pipeline_free: sym!("cogvideo_pipeline_free"),
            pipeline_default_size: sym!("cogvideo_pipeline_default_size"),
            pipeline_fps: sym!("cogvideo_pipeline_fps"),
            invert_video: sym!("cogvideo_invert_video"),
            inversion_frame_count: sym!("cogvideo_inversion_frame_count"),
            inversion_free: sym!("cogvideo_inversion_free"),
            edit_with_prompt: sym!("cogvideo_edit_with_prompt"),
            output_frame_count: sym!("cogvideo_output_frame_count"),
            generate_video: sym!("cogvideo_generate_video"),
            latent_shape: sym!("cogvideo_latent_shape"),
            inversion_latent_shape: sym!("cogvideo_inversion_latent_shape"),
            decoded_frame_count: sym!("cogvideo_decoded_frame_count"),
            decode_latents: sym!("cogvideo_decode_latents"),
            animate_image: sym!("cogvideo_animate_image"),
            pipeline_default_frames: since!("cogvideo_pipeline_default_frames"),
            pipeline_identity: since!("cogvideo_pipeline_identity"),
            inversion_save: since!("cogvideo_inversion_save"),
            inversion_load: since!("cogvideo_inversion_load"),
            load_options_init: init!("cogvideo_load_options_init"),
            generate_options_init: init!("cogvideo_generate_options_init"),
            decode_options_init: init!("cogvideo_decode_options_init"),
            animate_options_init: init!("cogvideo_animate_options_init"),
            invert_options_init: init!("cogvideo_invert_options_init"),
            edit_options_init: init!("cogvideo_edit_options_init"),
            cache_options_init: since!("cogvideo_cache_options_init_sized"),
            cache_report_init: since!("cogvideo_cache_report_init_sized"),
            pipeline_load_lora: since!("cogvideo_pipeline_load_lora"),
            pipeline_set_adapters: since!("cogvideo_pipeline_set_adapters"),
            pipeline_remove_lora: since!("cogvideo_pipeline_remove_lora"),
            _lib: lib,
        };
        // SAFETY: a plain query.
        let abi = unsafe { (api.abi_version)() };
        if abi >> 16 != ABI_MAJOR || abi & 0xffff < 1 {
            return Err(format!(
                "{name} implements C ABI {}.{}; this plugin needs {ABI_MAJOR}.1 or a later {ABI_MAJOR}.x",
                abi >> 16,
                abi & 0xffff
            ));
        }
        Ok(api)
    }

    /// The calling thread's last error message, as an owned string.
    pub fn error(&self, status: Status) -> String {
        // SAFETY: the library returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr((self.last_error)()) };
        format!("libcogvideo error {status}: {}", msg.to_string_lossy())
    }

    /// `Ok(())` for `OK`, else the status with the library's message.
    pub fn check(&self, status: Status) -> Result<(), String> {
        if status == OK {
            Ok(())
        } else {
            Err(self.error(status))
        }
    }

    /// As `check`, telling a cancelled call apart.
    fn check_call(&self, status: Status) -> Result<(), CallError> {
        self.check(status).map_err(|message| CallError {
            message,
            cancelled: status == ERR_CANCELLED,
        })
    }

    /// The library's C ABI version (`major << 16 | minor`).
    pub fn abi(&self) -> u32 {
        // SAFETY: a plain query without arguments.
        unsafe { (self.abi_version)() }
    }

    /// How many frames latents of `latent_frames` frames decode to.
    pub fn decoded_frame_count(&self, latent_frames: i32) -> Result<i32, String> {
        let mut n = 0;
        // SAFETY: a plain query with a writable output.
        self.check(unsafe { (self.decoded_frame_count)(latent_frames, &mut n) })?;
        Ok(n)
    }

    /// The library's defaults for a step cache and its report, or `None`
    /// from a library older than 1.4.
    pub fn cache_defaults(&self) -> Option<(CacheOptions, CacheReport)> {
        let (init, report_init) = (self.cache_options_init?, self.cache_report_init?);
        let (mut options, mut report) = (CacheOptions::default(), CacheReport::default());
        // SAFETY: writable structs of the 1.4 layouts, given their sizes.
        unsafe {
            init(&mut options, std::mem::size_of::<CacheOptions>());
            report_init(&mut report, std::mem::size_of::<CacheReport>());
        }
        Some((options, report))
    }
}

/// A failed long call: the library's message, and whether it stopped
/// because its progress callback cancelled it.
#[derive(Debug)]
pub struct CallError {
    pub message: String,
    pub cancelled: bool,
}

// The effect files' failures: the message, and whether it was cancelled.
impl From<CallError> for (String, bool) {
    fn from(e: CallError) -> Self {
        (e.message, e.cancelled)
    }
}

/// A loaded pipeline; the library allows calls from several threads.
pub struct PipelineHandle {
    pub api: &'static Api,
    pub ptr: *mut Pipeline,
    /// The LoRA adapters loaded into it (`model_settings.rs`), by the
    /// identity of their files' content.
    pub adapters: std::sync::Mutex<Vec<u64>>,
}

// SAFETY: cogvideo.h: "Calls on one pipeline from several threads are safe".
unsafe impl Send for PipelineHandle {}
// SAFETY: as above.
unsafe impl Sync for PipelineHandle {}

impl PipelineHandle {
    pub fn load(api: &'static Api, path: &str, opts: &LoadOptions) -> Result<Self, String> {
        let c_path =
            CString::new(path).map_err(|_| format!("checkpoint path {path:?} contains a NUL"))?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid string, options and out pointer.
        api.check(unsafe { (api.load_pipeline)(c_path.as_ptr(), opts, &mut ptr) })?;
        Ok(Self {
            api,
            ptr,
            adapters: Default::default(),
        })
    }

    /// The variant's default `(width, height, frames)`.
    pub fn default_size(&self) -> Result<(i32, i32, i32), String> {
        let (mut w, mut h, mut f) = (0, 0, 0);
        // SAFETY: live pipeline, writable outputs.
        self.api
            .check(unsafe { (self.api.pipeline_default_size)(self.ptr, &mut w, &mut h, &mut f) })?;
        Ok((w, h, f))
    }

    /// The frame count `operation` (`OPERATION_*`) takes by default; an
    /// older library's default frame count for every operation.
    pub fn default_frames(&self, operation: u32) -> Result<i32, String> {
        let Some(f) = self.api.pipeline_default_frames else {
            return Ok(self.default_size()?.2);
        };
        let mut n = 0;
        // SAFETY: live pipeline, writable output.
        self.api.check(unsafe { f(self.ptr, operation, &mut n) })?;
        Ok(n)
    }

    /// The checkpoint's identity (the same in every process and wherever
    /// the checkpoint lies), or `None` from an older library.
    pub fn identity(&self) -> Option<u64> {
        let f = self.api.pipeline_identity?;
        let mut id = 0;
        // SAFETY: live pipeline, writable output.
        (unsafe { f(self.ptr, &mut id) } == OK).then_some(id)
    }

    pub fn fps(&self) -> Result<i32, String> {
        let mut fps = 0;
        // SAFETY: live pipeline, writable output.
        self.api
            .check(unsafe { (self.api.pipeline_fps)(self.ptr, &mut fps) })?;
        Ok(fps)
    }

    /// How many frames a sampling call of `num_frames` frames makes.
    pub fn output_frame_count(&self, num_frames: i32) -> Result<i32, String> {
        let mut n = 0;
        // SAFETY: live pipeline, writable output.
        self.api
            .check(unsafe { (self.api.output_frame_count)(self.ptr, num_frames, &mut n) })?;
        Ok(n)
    }

    /// The latents' shape of a sampling call at this size (`num_frames` 0:
    /// the default); an error for a size the pipeline does not take.
    pub fn latent_shape(
        &self,
        width: i32,
        height: i32,
        num_frames: i32,
    ) -> Result<[i64; 5], String> {
        let mut shape = [0i64; 5];
        // SAFETY: live pipeline, room for the five values it writes.
        self.api.check(unsafe {
            (self.api.latent_shape)(self.ptr, width, height, num_frames, shape.as_mut_ptr())
        })?;
        Ok(shape)
    }

    /// Text to video into `out`.
    ///
    /// # Safety
    /// The pointers `opts` holds (prompts, latents buffer, step cache,
    /// progress user data) and `out`'s must be live and sized as the header
    /// says for the whole call: the descriptors cannot say so to Rust.
    pub unsafe fn generate_video(
        &self,
        opts: &GenerateOptions,
        out: &[Frame],
    ) -> Result<(), CallError> {
        // SAFETY: live pipeline; options and output descriptions valid for
        // the call, as this method's contract asks of its caller.
        self.api.check_call(unsafe {
            (self.api.generate_video)(self.ptr, opts, out.as_ptr(), out.len())
        })
    }

    /// Image to video into `out`.
    ///
    /// # Safety
    /// The pointers `opts`, `image` and `out` hold must be valid for the
    /// call, as for [`Self::generate_video`].
    pub unsafe fn animate_image(
        &self,
        image: &Frame,
        opts: &AnimateOptions,
        out: &[Frame],
    ) -> Result<(), CallError> {
        // SAFETY: live pipeline; image, options and output descriptions
        // valid for the call, as this method's safety contract asks.
        self.api.check_call(unsafe {
            (self.api.animate_image)(self.ptr, image, opts, out.as_ptr(), out.len())
        })
    }

    /// Inverts `frames`.
    ///
    /// # Safety
    /// The pointers `opts` and `frames` hold must be valid for the call, as
    /// for [`Self::generate_video`].
    pub unsafe fn invert_video(
        &self,
        frames: &[Frame],
        opts: &InvertOptions,
    ) -> Result<InversionHandle, CallError> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: live pipeline; frames and options valid for the call, as
        // this method's contract asks of its caller; writable out pointer.
        self.api.check_call(unsafe {
            (self.api.invert_video)(self.ptr, frames.as_ptr(), frames.len(), opts, &mut ptr)
        })?;
        Ok(InversionHandle { api: self.api, ptr })
    }

    /// Edits `inv` (made by this pipeline) into `out`.
    ///
    /// # Safety
    /// The pointers `opts` and `out` hold must be valid for the call, as
    /// for [`Self::generate_video`].
    pub unsafe fn edit_with_prompt(
        &self,
        inv: &InversionHandle,
        opts: &EditOptions,
        out: &[Frame],
    ) -> Result<(), CallError> {
        // SAFETY: live pipeline and inversion; options and output
        // descriptions valid for the call, as this method's safety contract asks.
        self.api.check_call(unsafe {
            (self.api.edit_with_prompt)(self.ptr, inv.ptr, opts, out.as_ptr(), out.len())
        })
    }

    /// Decodes `values` of `shape` into `out`.
    ///
    /// # Safety
    /// The pointers `opts` and `out` hold must be valid for the call, as
    /// for [`Self::generate_video`].
    pub unsafe fn decode_latents(
        &self,
        values: &[f32],
        shape: &[i64; 5],
        opts: &DecodeOptions,
        out: &[Frame],
    ) -> Result<(), CallError> {
        // The library reads the product of the shape's values.
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?));
        if count != Some(values.len()) {
            return Err(CallError {
                message: format!("{} latent values for the shape {shape:?}", values.len()),
                cancelled: false,
            });
        }
        // SAFETY: live pipeline; `values` holds the product of `shape`
        // (checked above); options and outputs valid as the contract asks.
        self.api.check_call(unsafe {
            (self.api.decode_latents)(
                self.ptr,
                values.as_ptr(),
                shape.as_ptr(),
                opts,
                out.as_ptr(),
                out.len(),
            )
        })
    }

    /// Loads the LoRA at `path` as adapter `name` (since C API 1.4).
    pub fn load_lora(&self, path: &CStr, name: &CStr) -> Result<(), String> {
        let f = self
            .api
            .pipeline_load_lora
            .ok_or("the library lacks cogvideo_pipeline_load_lora")?;
        // SAFETY: live pipeline, NUL-terminated path and name.
        self.api
            .check(unsafe { f(self.ptr, path.as_ptr(), name.as_ptr()) })
    }

    /// Unloads adapter `name` (since C API 1.4).
    pub fn remove_lora(&self, name: &CStr) -> Result<(), String> {
        let f = self
            .api
            .pipeline_remove_lora
            .ok_or("the library lacks cogvideo_pipeline_remove_lora")?;
        // SAFETY: live pipeline, NUL-terminated name.
        self.api.check(unsafe { f(self.ptr, name.as_ptr()) })
    }

    /// Makes `names` the active adapters with `weights` (since C API 1.4).
    pub fn set_adapters(&self, names: &[CString], weights: &[f64]) -> Result<(), String> {
        let f = self
            .api
            .pipeline_set_adapters
            .ok_or("the library lacks cogvideo_pipeline_set_adapters")?;
        if names.len() != weights.len() {
            return Err(format!(
                "{} adapters, {} weights",
                names.len(),
                weights.len()
            ));
        }
        let ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        // SAFETY: live pipeline; `ptrs` (NUL-terminated names, alive in
        // `names`) and `weights` hold the same number of entries.
        self.api
            .check(unsafe { f(self.ptr, ptrs.as_ptr(), weights.as_ptr(), ptrs.len()) })
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        // SAFETY: owned, and no call is in progress once the last Arc is gone.
        unsafe { (self.api.pipeline_free)(self.ptr) }
    }
}

/// An inversion, freed on drop.
pub struct InversionHandle {
    pub api: &'static Api,
    pub ptr: *mut Inversion,
}

// SAFETY: the library's handles are not tied to a thread.
unsafe impl Send for InversionHandle {}
// SAFETY: edits only read the inversion.
unsafe impl Sync for InversionHandle {}

impl InversionHandle {
    pub fn frame_count(&self) -> Result<usize, String> {
        let mut n = 0;
        // SAFETY: live inversion, writable output.
        self.api
            .check(unsafe { (self.api.inversion_frame_count)(self.ptr, &mut n) })?;
        Ok(n as usize)
    }

    /// The shape of the inversion's latents.
    pub fn latent_shape(&self) -> Result<[i64; 5], String> {
        let mut shape = [0i64; 5];
        // SAFETY: live inversion, room for the five values it writes.
        self.api
            .check(unsafe { (self.api.inversion_latent_shape)(self.ptr, shape.as_mut_ptr()) })?;
        Ok(shape)
    }
}

impl InversionHandle {
    /// Writes the inversion (made by `pipe`) to `path`; `Ok(false)` from an
    /// older library, which cannot.
    pub fn save(&self, pipe: &PipelineHandle, path: &Path) -> Result<bool, String> {
        let Some(f) = self.api.inversion_save else {
            return Ok(false);
        };
        let c_path = path_cstring(path)?;
        // SAFETY: live pipeline and inversion, NUL-terminated path.
        self.api
            .check(unsafe { f(pipe.ptr, self.ptr, c_path.as_ptr()) })?;
        Ok(true)
    }

    /// Reads an inversion `save` wrote for `pipe`'s checkpoint; `Ok(None)`
    /// from an older library. A missing, foreign or damaged file is an
    /// error with the library's message.
    pub fn load(pipe: &PipelineHandle, path: &Path) -> Result<Option<Self>, String> {
        let Some(f) = pipe.api.inversion_load else {
            return Ok(None);
        };
        let c_path = path_cstring(path)?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: live pipeline, NUL-terminated path, writable out pointer.
        pipe.api
            .check(unsafe { f(pipe.ptr, c_path.as_ptr(), &mut ptr) })?;
        Ok(Some(Self { api: pipe.api, ptr }))
    }
}

fn path_cstring(path: &Path) -> Result<CString, String> {
    let s = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL"))
}

impl Drop for InversionHandle {
    fn drop(&mut self) {
        // SAFETY: owned and not in use once dropped.
        unsafe { (self.api.inversion_free)(self.ptr) }
    }
}
