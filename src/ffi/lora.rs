//! LoRA adapters through the C API (since 1.4): load a file under a name,
//! choose the active adapters and weights, remove one, fuse or unfuse, and
//! the hash of the current setting for result caches. None of these waits
//! for a running call; a call applies the setting it started with.

use std::ffi::c_char;

use super::args::*;
use super::pipeline::*;
use super::status::*;
use crate::error::Error;

/// The most adapters [`cogvideo_pipeline_set_adapters`] takes at once.
const MAX_ADAPTERS: usize = 1024;

/// A non-NULL, non-empty adapter name.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
unsafe fn name_arg(name: *const c_char, what: &str) -> crate::Result<String> {
    if name.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { str_arg(name, what) }
}

/// Reads the LoRA file at `path` (safetensors in the diffusers/PEFT
/// layout, see the README) under `name` and makes it the active adapter at
/// weight 1, as diffusers' `load_lora_weights` does. A name in use, or a
/// file that does not fit the loaded transformer, fails with a message
/// naming the key (`COGVIDEO_ERR_BAD_CHECKPOINT` for the file's faults) and
/// changes nothing. Since 1.4.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL or empty path
/// or name, not UTF-8, a name already loaded); COGVIDEO_ERR_IO (the file
/// cannot be read); COGVIDEO_ERR_BAD_CHECKPOINT (not a LoRA of this
/// transformer: the message names the key); COGVIDEO_ERR_OUT_OF_MEMORY.
///
/// # Safety
/// `p` must be a live pipeline; `path` and `name` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_load_lora(
    p: *const cogvideo_pipeline,
    path: *const c_char,
    name: *const c_char,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        let path = unsafe { name_arg(path, "path") }?;
        let name = unsafe { name_arg(name, "name") }?;
        pipeline.load_lora(path, &name)
    })
}

/// Sets the active adapters, `names[i]` at `weights[i]` for `i < n`, applied
/// in that order (diffusers' `set_adapters(names, weights)`); `n` = 0 applies
/// none (both arrays may then be NULL). Each name must be loaded, once, with
/// a finite weight; weight 0 gives the output without that adapter exactly.
/// On error nothing changes. Since 1.4.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL arrays when n
/// is not 0, more than 1024 adapters, a name not loaded or given twice, a
/// weight that is not finite).
///
/// # Safety
/// `p` must be a live pipeline; `names` and `weights` must hold `n` entries,
/// each name a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_set_adapters(
    p: *const cogvideo_pipeline,
    names: *const *const c_char,
    weights: *const f64,
    n: usize,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        if n > MAX_ADAPTERS {
            return Err(Error::invalid(format!(
                "{n} adapters; at most {MAX_ADAPTERS}"
            )));
        }
        if n > 0 && (names.is_null() || weights.is_null()) {
            return Err(Error::invalid("names or weights is NULL"));
        }
        let mut list = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: the caller passes `n` readable entries in each array.
            let (name, weight) = unsafe { (*names.add(i), *weights.add(i)) };
            let name = unsafe { name_arg(name, &format!("names[{i}]")) }?;
            list.push((name, weight));
        }
        let pairs: Vec<(&str, f64)> = list.iter().map(|(s, w)| (s.as_str(), *w)).collect();
        pipeline.set_adapters(&pairs)
    })
}

/// Unloads the adapter `name` and drops it from the active ones (diffusers'
/// `delete_adapters`). Since 1.4.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL handle or
/// name, a name not loaded).
///
/// # Safety
/// `p` must be a live pipeline; `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_remove_lora(
    p: *const cogvideo_pipeline,
    name: *const c_char,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        let name = unsafe { name_arg(name, "name") }?;
        pipeline.remove_lora(&name)
    })
}

/// With `fused` non-zero, later calls apply the active adapters merged into
/// the transformer's weights (diffusers' `fuse_lora`: faster steps, a copy
/// of each adapted layer's weights while the transformer is kept); with 0,
/// beside the layers (`unfuse_lora`; the base weights are never changed,
/// so the output without adapters stays bit for bit the same). Since 1.4.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle.
///
/// # Safety
/// `p` must be a live pipeline.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_fuse_lora(
    p: *const cogvideo_pipeline,
    fused: i32,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        if fused != 0 {
            pipeline.fuse_lora();
        } else {
            pipeline.unfuse_lora();
        }
        Ok(())
    })
}

/// A 64-bit hash of what the current LoRA setting changes in the output:
/// the content of each active adapter file of non-zero weight, the weights
/// and their order, fused or not; 0 when no adapter applies. Key result
/// caches on it beside `cogvideo_pipeline_identity`. `*fused` (if not NULL)
/// receives 1 when adapters are fused, `*active` (if not NULL) the number of
/// active adapters (weight-0 ones included). Since 1.4.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL hash.
///
/// # Safety
/// `p` must be a live pipeline; `hash` writable; `active` and `fused` NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_pipeline_lora_state(
    p: *const cogvideo_pipeline,
    hash: *mut u64,
    active: *mut usize,
    fused: *mut i32,
) -> cogvideo_status {
    guard(|| {
        let pipeline = &pipeline_ref(p)?.pipeline;
        // SAFETY: NULL or writable slots.
        let hash = unsafe { hash.as_mut() }.ok_or_else(|| Error::invalid("hash is NULL"))?;
        let (h, setting) = pipeline.lora_state();
        *hash = h;
        if let Some(a) = unsafe { active.as_mut() } {
            *a = setting.adapters.len();
        }
        if let Some(f) = unsafe { fused.as_mut() } {
            *f = i32::from(setting.fused);
        }
        Ok(())
    })
}
