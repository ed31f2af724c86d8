//! Step caching in the C API (since 1.4): the `cogvideo_cache_options` a
//! sampling call points to and the `cogvideo_cache_report` it fills (since
//! 1.5 with the LoRA setting the call ran with).

use std::ffi::c_char;

use super::options::{self, Layout};
use super::status::{cogvideo_status, guard};
use crate::error::{Error, Result};
use crate::hooks::{
    CacheConfig, CacheReport, FasterCacheConfig, FirstBlockCacheConfig,
    PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig,
};
use crate::pipelines::LoraReport;

/// No cache: every block of every step runs (exact; the default).
pub const COGVIDEO_CACHE_OFF: u32 = 0;
/// First-block cache: skip the other blocks when the first block's
/// residual changed by at most `first_block_threshold` (adaptive).
pub const COGVIDEO_CACHE_FIRST_BLOCK: u32 = 1;
/// Pyramid Attention Broadcast: reuse each block's attention on a schedule.
pub const COGVIDEO_CACHE_PYRAMID_ATTENTION_BROADCAST: u32 = 2;
/// FasterCache: extrapolate attention and approximate the unconditional
/// branch of guidance (needs `guidance_scale` above 1; not for edits).
pub const COGVIDEO_CACHE_FASTER_CACHE: u32 = 3;
/// TaylorSeer: forecast each block's attention from its last refreshes.
pub const COGVIDEO_CACHE_TAYLORSEER: u32 = 4;

/// Step caching of a sampling call (since 1.4), as diffusers' cache hooks
/// (`FirstBlockCacheConfig`, `PyramidAttentionBroadcastConfig`,
/// `FasterCacheConfig`, `TaylorSeerCacheConfig`): faster, approximate
/// results, deterministic for a given seed and setting. Initialise with
/// `cogvideo_cache_options_init(&c)` (method `COGVIDEO_CACHE_OFF` and every
/// method's defaults: diffusers' documented CogVideoX settings), choose
/// `method`, change its fields if wanted, and point the call's options'
/// `cache` at it. Timestep ranges are open intervals `(min, max)` of the
/// scheduler's timesteps (999 first, 0 last).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_cache_options {
    pub struct_size: u32,
    /// A `COGVIDEO_CACHE_*` value.
    pub method: u32,
    /// First-block cache: largest relative change that skips (default
    /// 0.05; 0 skips nothing).
    pub first_block_threshold: f64,
    /// Pyramid Attention Broadcast: attention computed every N-th step
    /// (default 2), reused in between, within the range (default 100..800).
    pub pab_skip_range: i32,
    pub pab_timestep_min: f64,
    pub pab_timestep_max: f64,
    /// FasterCache: attention computed every N-th step (default 2) within
    /// the range (default -1..681), else extrapolated with the weight
    /// (default 0.3).
    pub faster_attention_skip_range: i32,
    pub faster_attention_timestep_min: f64,
    pub faster_attention_timestep_max: f64,
    pub faster_attention_weight: f64,
    /// FasterCache: the unconditional branch computed every N-th step
    /// (default 5) within the range (default -1..641), else approximated.
    pub faster_uncond_skip_range: i32,
    pub faster_uncond_timestep_min: f64,
    pub faster_uncond_timestep_max: f64,
    /// FasterCache: the weights of the approximation's low and high
    /// frequencies (default 1.1 each) and where they apply (default
    /// 99..641 and -1..301).
    pub faster_low_frequency_weight: f64,
    pub faster_low_frequency_timestep_min: f64,
    pub faster_low_frequency_timestep_max: f64,
    pub faster_high_frequency_weight: f64,
    pub faster_high_frequency_timestep_min: f64,
    pub faster_high_frequency_timestep_max: f64,
    /// TaylorSeer: the first N steps compute (default 3), then one in every
    /// `taylorseer_cache_interval` (default 5); from step
    /// `taylorseer_last_cached_step` on (0, the default: never) all compute.
    pub taylorseer_warmup_steps: i32,
    pub taylorseer_cache_interval: i32,
    pub taylorseer_last_cached_step: i32,
    /// TaylorSeer: order of the forecast, 1 to 4 (default 1).
    pub taylorseer_max_order: i32,
}

/// What a call ran with and what its step cache saved (since 1.4), filled
/// when the call's options point `cache_report` at it; the cache's counts
/// are all zero for a call without a cache. Initialise with
/// `cogvideo_cache_report_init(&r)`. A block evaluation is one transformer
/// block over one sample (guidance runs two samples per step). Since 1.5
/// it also names the LoRA setting the call ran with: the one in effect
/// when it started, whatever changed meanwhile.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cogvideo_cache_report {
    pub struct_size: u32,
    /// Denoising steps run.
    pub steps: u32,
    /// Block evaluations the call would have made without a cache.
    pub block_evaluations: u64,
    /// Block evaluations not run (First-block cache's skipped blocks,
    /// FasterCache's skipped unconditional branch).
    pub blocks_skipped: u64,
    /// Attention evaluations reused or forecast in blocks that ran.
    pub attention_skipped: u64,
    /// Since 1.5: the hash of the LoRA setting the call ran with, as
    /// `cogvideo_pipeline_lora_state` gives it (0: no adapter changed the
    /// output).
    pub lora_hash: u64,
    /// Since 1.5: 1 when the adapters were fused, else 0.
    pub lora_fused: u32,
    /// Since 1.5: the adapters of the setting, weight 0 included.
    pub lora_count: u32,
    /// Since 1.5, set by the caller: room for `lora_capacity` weights, or
    /// NULL. The call writes the first `min(lora_count, lora_capacity)`
    /// adapters' weights, in the setting's order.
    pub lora_weights: *mut f64,
    pub lora_capacity: usize,
    /// Since 1.5, set by the caller: a buffer of `lora_names_size` bytes,
    /// or NULL. The call writes the adapters' names in the setting's
    /// order, each ending with a NUL, one after another, as many whole
    /// names as fit.
    pub lora_names: *mut c_char,
    pub lora_names_size: usize,
    /// Since 1.5: the bytes all the names take, their NULs included.
    pub lora_names_needed: usize,
}

impl Layout for cogvideo_cache_options {
    const NAME: &'static str = "cogvideo_cache_options";
    const SIZES: &'static [usize] = &[std::mem::size_of::<Self>()];
    fn defaults() -> Self {
        let fbc = FirstBlockCacheConfig::default();
        let pab = PyramidAttentionBroadcastConfig::default();
        let fc = FasterCacheConfig::default();
        let ts = TaylorSeerCacheConfig::default();
        Self {
            struct_size: std::mem::size_of::<Self>() as u32,
            method: COGVIDEO_CACHE_OFF,
            first_block_threshold: fbc.threshold,
            pab_skip_range: pab.spatial_attention_block_skip_range as i32,
            pab_timestep_min: pab.spatial_attention_timestep_skip_range.0,
            pab_timestep_max: pab.spatial_attention_timestep_skip_range.1,
            faster_attention_skip_range: fc.spatial_attention_block_skip_range as i32,
            faster_attention_timestep_min: fc.spatial_attention_timestep_skip_range.0,
            faster_attention_timestep_max: fc.spatial_attention_timestep_skip_range.1,
            faster_attention_weight: fc.attention_weight,
            faster_uncond_skip_range: fc.unconditional_batch_skip_range as i32,
            faster_uncond_timestep_min: fc.unconditional_batch_timestep_skip_range.0,
            faster_uncond_timestep_max: fc.unconditional_batch_timestep_skip_range.1,
            faster_low_frequency_weight: fc.alpha_low_frequency,
            faster_low_frequency_timestep_min: fc.low_frequency_weight_update_timestep_range.0,
            faster_low_frequency_timestep_max: fc.low_frequency_weight_update_timestep_range.1,
            faster_high_frequency_weight: fc.alpha_high_frequency,
            faster_high_frequency_timestep_min: fc.high_frequency_weight_update_timestep_range.0,
            faster_high_frequency_timestep_max: fc.high_frequency_weight_update_timestep_range.1,
            taylorseer_warmup_steps: ts.disable_cache_before_step as i32,
            taylorseer_cache_interval: ts.cache_interval as i32,
            taylorseer_last_cached_step: ts.disable_cache_after_step.unwrap_or(0) as i32,
            taylorseer_max_order: ts.max_order as i32,
        }
    }
}

impl Layout for cogvideo_cache_report {
    const NAME: &'static str = "cogvideo_cache_report";
    const SIZES: &'static [usize] = &[
        std::mem::offset_of!(Self, lora_hash),
        std::mem::size_of::<Self>(),
    ];
    fn defaults() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>() as u32,
            steps: 0,
            block_evaluations: 0,
            blocks_skipped: 0,
            attention_skipped: 0,
            lora_hash: 0,
            lora_fused: 0,
            lora_count: 0,
            lora_weights: std::ptr::null_mut(),
            lora_capacity: 0,
            lora_names: std::ptr::null_mut(),
            lora_names_size: 0,
            lora_names_needed: 0,
        }
    }
}

/// Fills the caller's `cogvideo_cache_options` of `size` bytes with the
/// defaults (method `COGVIDEO_CACHE_OFF`) and sets `struct_size`; call it
/// through the `cogvideo_cache_options_init(opts)` macro. Fails with
/// `COGVIDEO_ERR_INVALID_ARGUMENT` for NULL or a size no version of the
/// struct has. Since 1.4.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT as stated above (the
/// struct is then left as it was).
///
/// # Safety
/// `opts` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_cache_options_init_sized(
    opts: *mut cogvideo_cache_options,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { options::init_sized(opts, size) })
}

/// Sets up the caller's `cogvideo_cache_report` of `size` bytes (zeros,
/// `struct_size`); call it through the `cogvideo_cache_report_init(r)`
/// macro. Since 1.4.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for NULL or a size no
/// version of the struct has (the struct is then left as it was).
///
/// # Safety
/// `report` must be NULL or writable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_cache_report_init_sized(
    report: *mut cogvideo_cache_report,
    size: usize,
) -> cogvideo_status {
    guard(|| unsafe { options::init_sized(report, size) })
}

/// The symbol behind `cogvideo_cache_options_init` for callers that cannot
/// use the macro (bindings): writes the 1.4 layout (see
/// [`options::init_oldest`]).
///
/// # Safety
/// `opts` must be NULL (ignored) or writable for the 1.4 struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_cache_options_init(opts: *mut cogvideo_cache_options) {
    unsafe { options::init_oldest(opts) }
}

/// As [`cogvideo_cache_options_init`], for `cogvideo_cache_report`.
///
/// # Safety
/// `report` must be NULL (ignored) or writable for the 1.4 struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_cache_report_init(report: *mut cogvideo_cache_report) {
    unsafe { options::init_oldest(report) }
}

fn positive(v: i32, what: &str) -> Result<usize> {
    if v >= 1 {
        Ok(v as usize)
    } else {
        Err(Error::invalid(format!(
            "cogvideo_cache_options.{what} must be 1 or more, got {v}"
        )))
    }
}

/// The cache a call's options point to (NULL: none), checked.
///
/// # Safety
/// `p` must be NULL or valid for its `struct_size`.
pub(super) unsafe fn cache_config(p: *const cogvideo_cache_options) -> Result<CacheConfig> {
    if p.is_null() {
        return Ok(CacheConfig::Off);
    }
    let c = unsafe { options::read(p) }?;
    let config = match c.method {
        COGVIDEO_CACHE_OFF => CacheConfig::Off,
        COGVIDEO_CACHE_FIRST_BLOCK => CacheConfig::FirstBlock(FirstBlockCacheConfig {
            threshold: c.first_block_threshold,
        }),
        COGVIDEO_CACHE_PYRAMID_ATTENTION_BROADCAST => {
            CacheConfig::PyramidAttentionBroadcast(PyramidAttentionBroadcastConfig {
                spatial_attention_block_skip_range: positive(c.pab_skip_range, "pab_skip_range")?,
                spatial_attention_timestep_skip_range: (c.pab_timestep_min, c.pab_timestep_max),
            })
        }
        COGVIDEO_CACHE_FASTER_CACHE => CacheConfig::FasterCache(FasterCacheConfig {
            spatial_attention_block_skip_range: positive(
                c.faster_attention_skip_range,
                "faster_attention_skip_range",
            )?,
            spatial_attention_timestep_skip_range: (
                c.faster_attention_timestep_min,
                c.faster_attention_timestep_max,
            ),
            low_frequency_weight_update_timestep_range: (
                c.faster_low_frequency_timestep_min,
                c.faster_low_frequency_timestep_max,
            ),
            high_frequency_weight_update_timestep_range: (
                c.faster_high_frequency_timestep_min,
                c.faster_high_frequency_timestep_max,
            ),
            alpha_low_frequency: c.faster_low_frequency_weight,
            alpha_high_frequency: c.faster_high_frequency_weight,
            unconditional_batch_skip_range: positive(
                c.faster_uncond_skip_range,
                "faster_uncond_skip_range",
            )?,
            unconditional_batch_timestep_skip_range: (
                c.faster_uncond_timestep_min,
                c.faster_uncond_timestep_max,
            ),
            attention_weight: c.faster_attention_weight,
        }),
        COGVIDEO_CACHE_TAYLORSEER => CacheConfig::TaylorSeer(TaylorSeerCacheConfig {
            cache_interval: positive(c.taylorseer_cache_interval, "taylorseer_cache_interval")?,
            disable_cache_before_step: positive(
                c.taylorseer_warmup_steps,
                "taylorseer_warmup_steps",
            )?,
            disable_cache_after_step: match c.taylorseer_last_cached_step {
                0 => None,
                v => Some(positive(v, "taylorseer_last_cached_step")?),
            },
            max_order: positive(c.taylorseer_max_order, "taylorseer_max_order")?,
        }),
        other => {
            return Err(Error::invalid(format!(
                "cogvideo_cache_options.method {other} is not one of COGVIDEO_CACHE_OFF (0), _FIRST_BLOCK (1), _PYRAMID_ATTENTION_BROADCAST (2), _FASTER_CACHE (3) or _TAYLORSEER (4)"
            )));
        }
    };
    config.validate()?;
    Ok(config)
}

/// Where a call's cache report goes.
#[derive(Clone, Copy)]
pub(super) struct CallCache {
    pub(super) report: *mut cogvideo_cache_report,
}

impl CallCache {
    /// Checks the report's `struct_size` before any work.
    ///
    /// # Safety
    /// `report` must be NULL or valid for its `struct_size`.
    pub(super) unsafe fn check(self) -> Result<()> {
        if !self.report.is_null() {
            // SAFETY: starts with its u32 struct_size
            let size = unsafe { *(self.report as *const u32) } as usize;
            options::check_size::<cogvideo_cache_report>(size)?;
        }
        Ok(())
    }

    /// Fills the report, if asked for: the cache's counts and the LoRA
    /// setting, with its weights and names in the caller's buffers.
    ///
    /// # Safety
    /// As [`Self::check`], and the report's buffers valid for the sizes it
    /// gives.
    pub(super) unsafe fn deliver(
        self,
        report: Option<&CacheReport>,
        lora: Option<&LoraReport>,
    ) -> Result<()> {
        if self.report.is_null() {
            return Ok(());
        }
        // the caller's buffers (NULL in a 1.4 layout)
        let given = unsafe { options::read(self.report as *const cogvideo_cache_report) }?;
        let mut out = cogvideo_cache_report {
            lora_weights: given.lora_weights,
            lora_capacity: given.lora_capacity,
            lora_names: given.lora_names,
            lora_names_size: given.lora_names_size,
            ..cogvideo_cache_report::defaults()
        };
        if let Some(r) = report {
            out.steps = r.steps.len() as u32;
            out.block_evaluations = r.block_evaluations;
            out.blocks_skipped = r.blocks_skipped;
            out.attention_skipped = r.attention_skipped;
        }
        if let Some(l) = lora {
            let adapters = &l.setting.adapters;
            out.lora_hash = l.hash;
            out.lora_fused = l.setting.fused as u32;
            out.lora_count = adapters.len() as u32;
            out.lora_names_needed = adapters.iter().map(|(n, _)| n.len() + 1).sum();
            if !out.lora_weights.is_null() {
                for (i, (_, w)) in adapters.iter().take(out.lora_capacity).enumerate() {
                    // SAFETY: the caller's array holds lora_capacity weights
                    unsafe { out.lora_weights.add(i).write(*w) };
                }
            }
            if !out.lora_names.is_null() {
                let mut at = 0;
                for (name, _) in adapters {
                    if at + name.len() + 1 > out.lora_names_size {
                        break;
                    }
                    // SAFETY: within the caller's lora_names_size bytes
                    unsafe {
                        let dst = out.lora_names.add(at) as *mut u8;
                        std::ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len());
                        dst.add(name.len()).write(0);
                    }
                    at += name.len() + 1;
                }
            }
        }
        unsafe { options::write_out(self.report, &out) }
    }
}
