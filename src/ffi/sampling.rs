//! The sampling calls (text-to-video, image-to-video, inversion and
//! editing, video-to-video, decoding) and inversions' lifetime and files.

use std::ffi::{c_char, c_void};

use candle_core::Tensor;

use super::args::*;
use super::cache::CallCache;
use super::frames::*;
use super::options::{self, *};
use super::pipeline::*;
use super::requests;
use super::status::*;
use crate::error::{Error, Result};
use crate::pipelines::{self, Pipeline, Progress};

/// The common end of the sampling calls: with the caller's progress
/// callback, the call's step cache and the pipeline to itself, samples with
/// `sample`, reports what the cache saved and delivers the latents (then the
/// frames) to `outputs`.
pub(super) fn sample_and_deliver(
    handle: &cogvideo_pipeline,
    (callback, user): (cogvideo_progress_fn, *mut c_void),
    cache: CallCache,
    mut outputs: Outputs,
    sample: impl FnOnce(&Pipeline, &mut Progress) -> Result<Tensor>,
) -> Result<()> {
    // SAFETY: the options' pointers, valid as their documentation says
    unsafe { cache.check() }?;
    let mut cb = progress_fn(callback, user);
    let mut progress = Progress::new(&mut cb);
    let _busy = handle.busy.lock();
    let latents = sample(&handle.pipeline, &mut progress)?;
    unsafe { cache.deliver(progress.cache_report(), progress.lora_report()) }?;
    outputs.deliver(&handle.pipeline, &latents, &mut progress)
}

/// Generates a clip from text into `out[0..out_count]` (`out_count` must
/// equal [`cogvideo_output_frame_count`] for `opts->num_frames`), and/or
/// its latents into `opts->latents_out`.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers,
/// options out of range, a frame count or size the model cannot use, output
/// frames of the wrong count, size or format, a caller noise buffer of the
/// wrong length); COGVIDEO_ERR_UNSUPPORTED_VARIANT (the loaded variant
/// cannot do this); COGVIDEO_ERR_OUT_OF_MEMORY (the working size does not
/// fit, checked before any work, or an allocation failed);
/// COGVIDEO_ERR_DEVICE (the GPU failed); COGVIDEO_ERR_IO or _BAD_CHECKPOINT
/// (per-component and streamed residency read weights during the call);
/// COGVIDEO_ERR_CANCELLED (the progress callback stopped it). On failure
/// the output frames may hold partial results.
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
        let mut r = unsafe { requests::generate(p, opts) }?;
        let o = &r.raw;
        let mode = resize_mode(o.resize_mode)?;
        let outputs = unsafe {
            Outputs::for_clip(
                r.pipeline(),
                (out, out_count),
                (o.latents_out, o.latents_out_len),
                r.size,
                mode,
            )
        }?;
        unsafe { r.noise.attach(&r.plan, &mut r.opts.sampling.noise) }?;
        let (o, gen_opts) = (&r.raw, &r.opts);
        sample_and_deliver(
            r.handle,
            (o.progress, o.progress_user),
            CallCache {
                report: o.cache_report,
            },
            outputs,
            |p, progress| p.generate_latents(gen_opts, progress),
        )
    })
}

/// Animates one image into a clip (image-to-video checkpoints only). The
/// image is resized to the working size with `opts->resize_mode`.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers,
/// options out of range, a frame count or size the model cannot use, output
/// frames of the wrong count, size or format, a caller noise buffer of the
/// wrong length); COGVIDEO_ERR_UNSUPPORTED_VARIANT (the loaded variant
/// cannot do this); COGVIDEO_ERR_OUT_OF_MEMORY (the working size does not
/// fit, checked before any work, or an allocation failed);
/// COGVIDEO_ERR_DEVICE (the GPU failed); COGVIDEO_ERR_IO or _BAD_CHECKPOINT
/// (per-component and streamed residency read weights during the call);
/// COGVIDEO_ERR_CANCELLED (the progress callback stopped it). On failure
/// the output frames may hold partial results.
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
        pipeline_ref(p)?;
        let image = unsafe { image.as_ref() }.ok_or_else(|| Error::invalid("image is NULL"))?;
        let mut r = unsafe { requests::animate(p, opts) }?;
        let o = &r.raw;
        let mode = resize_mode(o.resize_mode)?;
        let outputs = unsafe {
            Outputs::for_clip(
                r.pipeline(),
                (out, out_count),
                (o.latents_out, o.latents_out_len),
                r.size,
                mode,
            )
        }?;
        let (h, w, _) = r.size;
        unsafe { r.noise.attach(&r.plan, &mut r.opts.sampling.noise) }?;
        let frame = unsafe { frame_ref(image, "image") }?;
        let (o, anim) = (&r.raw, &r.opts);
        sample_and_deliver(
            r.handle,
            (o.progress, o.progress_user),
            CallCache {
                report: o.cache_report,
            },
            outputs,
            |p, progress| {
                let video = crate::frames::frames_to_video(&[frame], h, w, mode, p.device())?;
                p.animate_latents(&video.squeeze(2)?, anim, progress)
            },
        )
    })
}

/// Inverts a clip for editing. Frames are resized to the working size
/// (`opts->width`/`height`, or the variant's default when 0); the clip is
/// cut to the longest usable length (4k+1 frames; 8k+5 for 1.5 models).
/// On success `*out` holds an inversion to free with
/// [`cogvideo_inversion_free`].
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers,
/// options out of range, a frame count or size the model cannot use, output
/// frames of the wrong count, size or format, a caller noise buffer of the
/// wrong length); COGVIDEO_ERR_UNSUPPORTED_VARIANT (the loaded variant
/// cannot do this); COGVIDEO_ERR_OUT_OF_MEMORY (the working size does not
/// fit, checked before any work, or an allocation failed);
/// COGVIDEO_ERR_DEVICE (the GPU failed); COGVIDEO_ERR_IO or _BAD_CHECKPOINT
/// (per-component and streamed residency read weights during the call);
/// COGVIDEO_ERR_CANCELLED (the progress callback stopped it). On failure
/// the output frames may hold partial results.
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
        pipeline_ref(p)?;
        let descs = unsafe { frame_list(frames, frame_count, "input frames") }?;
        let mut r = unsafe { requests::invert(p, descs.len(), opts) }?;
        let mode = resize_mode(r.raw.resize_mode)?;
        let (h, w, usable) = r.size;
        let pipeline = &r.handle.pipeline;
        let inputs = unsafe { input_frames(descs, usable) }?;
        unsafe { r.noise.attach(&r.plan, &mut r.opts.noise) }?;
        let mut cb = progress_fn(r.raw.progress, r.raw.progress_user);
        let mut progress = Progress::new(&mut cb);
        let _busy = r.handle.busy.lock();
        let video = pipeline.video_from_frames(&inputs, (h, w), mode, false)?;
        let inversion = pipeline.invert_video(&video, &r.opts, &mut progress)?;
        unsafe { *out = Box::into_raw(Box::new(cogvideo_inversion { inner: inversion })) };
        Ok(())
    })
}

/// The number of frames an edit of this inversion produces (the frames
/// array passed to [`cogvideo_edit_with_prompt`] must have this length).
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
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
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT for a NULL or dead
/// handle or a NULL out pointer.
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

/// Writes an inversion made by `p` to the file `path` (UTF-8), in a
/// versioned format that records the checkpoint's identity; the file
/// appears under its name only once complete. Takes `p`'s lock like the
/// sampling calls. Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers, a
/// path that is not UTF-8, an inversion the pipeline cannot edit);
/// COGVIDEO_ERR_IO (the file cannot be written; no partial file is left
/// under path).
///
/// # Safety
/// `p` must be a live pipeline, `inv` a live inversion, `path` a
/// NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_inversion_save(
    p: *const cogvideo_pipeline,
    inv: *const cogvideo_inversion,
    path: *const c_char,
) -> cogvideo_status {
    guard(|| {
        let handle = pipeline_ref(p)?;
        let inv = inversion_ref(inv)?;
        if path.is_null() {
            return Err(Error::invalid("path is NULL"));
        }
        let path = unsafe { str_arg(path, "path") }?;
        let _busy = handle.busy.lock();
        handle
            .pipeline
            .save_inversion(&inv.inner, std::path::Path::new(&path))
    })
}

/// Reads an inversion that cogvideo_inversion_save wrote, for editing with
/// `p`, which must hold the same checkpoint (same identity, see
/// cogvideo_pipeline_identity). On success `*out` holds an inversion to
/// free with cogvideo_inversion_free. Since 1.3.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers, a
/// path that is not UTF-8, a file that is not an inversion, is truncated,
/// comes from another checkpoint or format version, or holds a clip `p`
/// cannot edit); COGVIDEO_ERR_IO (the file cannot be read);
/// COGVIDEO_ERR_OUT_OF_MEMORY (it does not fit).
///
/// # Safety
/// `p` must be a live pipeline, `path` a NUL-terminated string, `out`
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cogvideo_inversion_load(
    p: *const cogvideo_pipeline,
    path: *const c_char,
    out: *mut *mut cogvideo_inversion,
) -> cogvideo_status {
    guard(|| {
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        unsafe { *out = std::ptr::null_mut() };
        let handle = pipeline_ref(p)?;
        if path.is_null() {
            return Err(Error::invalid("path is NULL"));
        }
        let path = unsafe { str_arg(path, "path") }?;
        let _busy = handle.busy.lock();
        let inversion = handle
            .pipeline
            .load_inversion(std::path::Path::new(&path))?;
        unsafe { *out = Box::into_raw(Box::new(cogvideo_inversion { inner: inversion })) };
        Ok(())
    })
}

/// Reconstructs an inverted clip under a new prompt into
/// `out[0..out_count]` (see [`cogvideo_inversion_frame_count`]) and/or its
/// latents into `opts->latents_out`.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers,
/// options out of range, a frame count or size the model cannot use, output
/// frames of the wrong count, size or format, a caller noise buffer of the
/// wrong length); COGVIDEO_ERR_UNSUPPORTED_VARIANT (the loaded variant
/// cannot do this); COGVIDEO_ERR_OUT_OF_MEMORY (the working size does not
/// fit, checked before any work, or an allocation failed);
/// COGVIDEO_ERR_DEVICE (the GPU failed); COGVIDEO_ERR_IO or _BAD_CHECKPOINT
/// (per-component and streamed residency read weights during the call);
/// COGVIDEO_ERR_CANCELLED (the progress callback stopped it). On failure
/// the output frames may hold partial results.
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
        pipeline_ref(p)?;
        let inv = &inversion_ref(inv)?.inner;
        let mut r = unsafe { requests::edit(p, inv, opts) }?;
        let o = &r.raw;
        let mode = resize_mode(o.resize_mode)?;
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
        unsafe { r.noise.attach(&r.plan, &mut r.opts.noise) }?;
        let (o, edit) = (&r.raw, &r.opts);
        sample_and_deliver(
            r.handle,
            (o.progress, o.progress_user),
            CallCache {
                report: o.cache_report,
            },
            outputs,
            |p, progress| p.edit_latents(inv, edit, progress),
        )
    })
}

/// Restyles a clip by a prompt, as diffusers' `CogVideoXVideoToVideoPipeline`
/// (text-to-video checkpoints): the clip is cut to its longest usable
/// length as for [`cogvideo_invert_video`], resized to the working size,
/// encoded, noised to `opts->strength` and denoised. `out_count` must equal
/// [`cogvideo_output_frame_count`] of the usable length.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers,
/// options out of range, a frame count or size the model cannot use, output
/// frames of the wrong count, size or format, a caller noise buffer of the
/// wrong length); COGVIDEO_ERR_UNSUPPORTED_VARIANT (the loaded variant
/// cannot do this); COGVIDEO_ERR_OUT_OF_MEMORY (the working size does not
/// fit, checked before any work, or an allocation failed);
/// COGVIDEO_ERR_DEVICE (the GPU failed); COGVIDEO_ERR_IO or _BAD_CHECKPOINT
/// (per-component and streamed residency read weights during the call);
/// COGVIDEO_ERR_CANCELLED (the progress callback stopped it). On failure
/// the output frames may hold partial results.
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
        pipeline_ref(p)?;
        let descs = unsafe { frame_list(frames, frame_count, "input frames") }?;
        let mut r = unsafe { requests::video_to_video(p, descs.len(), opts) }?;
        let o = &r.raw;
        let mode = resize_mode(o.resize_mode)?;
        let outputs = unsafe {
            Outputs::for_clip(
                r.pipeline(),
                (out, out_count),
                (o.latents_out, o.latents_out_len),
                r.size,
                mode,
            )
        }?;
        let (h, w, usable) = r.size;
        let guided = r.opts.sampling.guidance_scale > 1.0;
        let inputs = unsafe { input_frames(descs, usable) }?;
        unsafe { r.noise.attach(&r.plan, &mut r.opts.sampling.noise) }?;
        let (o, v2v) = (&r.raw, &r.opts);
        sample_and_deliver(
            r.handle,
            (o.progress, o.progress_user),
            CallCache {
                report: o.cache_report,
            },
            outputs,
            |p, progress| {
                let video = p.video_from_frames(&inputs, (h, w), mode, guided)?;
                p.video_to_video_latents(&video, v2v, progress)
            },
        )
    })
}

/// Decodes latents (as a sampling call returned them through `latents_out`,
/// f32 `[1, F, 16, h, w]` row-major, `shape` giving those five numbers) into
/// `out[0..out_count]`, `out_count` being [`cogvideo_decoded_frame_count`]
/// of F. `opts` (NULL for defaults) chooses tiling for this call only.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers, a
/// latent shape the model cannot decode, output frames of the wrong count,
/// size or format); COGVIDEO_ERR_OUT_OF_MEMORY (does not fit, checked
/// before any work); COGVIDEO_ERR_DEVICE (the GPU failed);
/// COGVIDEO_ERR_CANCELLED (the progress callback stopped it).
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
        let o = unsafe { options::read(opts) }?;
        let decode = options::decode_options(&o)?;
        let mode = resize_mode(o.resize_mode)?;
        // Checked before a value is read: the shape says how much to read.
        pipeline.check_latent_dims(&dims)?;
        let f = dims[1];
        let mut frames =
            unsafe { output_frames(out, out_count, pipelines::decoded_frame_count(f)) }?;
        // SAFETY: the caller guarantees the product of `shape` readable floats.
        let values = unsafe { std::slice::from_raw_parts(latents, dims.iter().product()) };
        let mut cb = progress_fn(o.progress, o.progress_user);
        let mut progress = Progress::new(&mut cb);
        let _busy = handle.busy.lock();
        let video = pipeline.decode_latent_values(values, &dims, &decode, &mut progress)?;
        crate::frames::video_to_frames(&video, &mut frames, mode)
    })
}

/// Decodes an inversion's source latents (the clip as the model sees it,
/// after the VAE round trip, before any edit) into `out[0..out_count]`
/// ([`cogvideo_inversion_frame_count`] frames). `opts` may be NULL.
///
/// Returns COGVIDEO_OK; COGVIDEO_ERR_INVALID_ARGUMENT (NULL pointers, a
/// latent shape the model cannot decode, output frames of the wrong count,
/// size or format); COGVIDEO_ERR_OUT_OF_MEMORY (does not fit, checked
/// before any work); COGVIDEO_ERR_DEVICE (the GPU failed);
/// COGVIDEO_ERR_CANCELLED (the progress callback stopped it).
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
        let o = unsafe { options::read(opts) }?;
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
