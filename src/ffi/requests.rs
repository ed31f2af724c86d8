//! What a sampling call and its noise plan share: the pipeline, the
//! caller's options read (under the growth rule) and converted, the working
//! size, and the call's random draws, all checked before a frame is touched.

use super::args::*;
use super::options::{self, *};
use super::pipeline::*;
use crate::error::Result;
use crate::pipelines::{
    AnimateOptions, EditOptions, GenerateOptions, Inversion, InvertOptions, NoisePlan, Pipeline,
    VideoToVideoOptions,
};

pub(super) struct Request<'a, T, O> {
    pub(super) handle: &'a cogvideo_pipeline,
    /// The caller's options struct as read.
    pub(super) raw: T,
    pub(super) opts: O,
    /// The caller's noise, attached to `opts` once the outputs are checked.
    pub(super) noise: RawNoise,
    /// Working height, width and frame count.
    pub(super) size: (usize, usize, usize),
    pub(super) plan: NoisePlan,
}

impl<T, O> Request<'_, T, O> {
    pub(super) fn pipeline(&self) -> &Pipeline {
        &self.handle.pipeline
    }
}

/// # Safety
/// `p` NULL or a live pipeline; `opts` NULL or valid for its `struct_size`.
pub(super) unsafe fn generate<'a>(
    p: *const cogvideo_pipeline,
    opts: *const cogvideo_generate_options,
) -> Result<Request<'a, cogvideo_generate_options, GenerateOptions>> {
    let handle = pipeline_ref(p)?;
    let pipeline = &handle.pipeline;
    let raw = unsafe { options::read(opts) }?;
    let (opts, noise) = unsafe { options::generate_options(&raw) }?;
    let plan = pipeline.noise_plan_generate(&opts)?;
    let (h, w) = pipeline.working_size(opts.height, opts.width);
    let size = (
        h,
        w,
        opts.num_frames.unwrap_or(pipeline.default_video_size().2),
    );
    Ok(Request {
        handle,
        raw,
        opts,
        noise,
        size,
        plan,
    })
}

/// # Safety
/// As [`generate`].
pub(super) unsafe fn animate<'a>(
    p: *const cogvideo_pipeline,
    opts: *const cogvideo_animate_options,
) -> Result<Request<'a, cogvideo_animate_options, AnimateOptions>> {
    let handle = pipeline_ref(p)?;
    let pipeline = &handle.pipeline;
    let raw = unsafe { options::read(opts) }?;
    let (opts, noise) = unsafe { options::animate_options(&raw) }?;
    let (h, w) = pipeline_working_size(pipeline, raw.height, raw.width)?;
    let plan = pipeline.noise_plan_animate(h, w, &opts)?;
    let size = (h, w, opts.num_frames);
    Ok(Request {
        handle,
        raw,
        opts,
        noise,
        size,
        plan,
    })
}

/// An inversion of the longest usable prefix of a clip of `frame_count`
/// frames.
///
/// # Safety
/// As [`generate`].
pub(super) unsafe fn invert<'a>(
    p: *const cogvideo_pipeline,
    frame_count: usize,
    opts: *const cogvideo_invert_options,
) -> Result<Request<'a, cogvideo_invert_options, InvertOptions>> {
    let handle = pipeline_ref(p)?;
    let pipeline = &handle.pipeline;
    let raw = unsafe { options::read(opts) }?;
    let (opts, noise) = options::invert_options(&raw)?;
    let usable = pipeline.usable_edit_frames(frame_count)?;
    let (h, w) = pipeline_working_size(pipeline, raw.height, raw.width)?;
    let plan = pipeline.noise_plan_invert(h, w, usable, &opts)?;
    Ok(Request {
        handle,
        raw,
        opts,
        noise,
        size: (h, w, usable),
        plan,
    })
}

/// An edit of `inv`.
///
/// # Safety
/// As [`generate`].
pub(super) unsafe fn edit<'a>(
    p: *const cogvideo_pipeline,
    inv: &Inversion,
    opts: *const cogvideo_edit_options,
) -> Result<Request<'a, cogvideo_edit_options, EditOptions>> {
    let handle = pipeline_ref(p)?;
    let raw = unsafe { options::read(opts) }?;
    let (opts, noise) = unsafe { options::edit_options(&raw) }?;
    let plan = handle.pipeline.noise_plan_edit(inv, &opts)?;
    Ok(Request {
        handle,
        raw,
        opts,
        noise,
        size: inv.video_size(),
        plan,
    })
}

/// Video-to-video of the longest usable prefix of a clip of `frame_count`
/// frames.
///
/// # Safety
/// As [`generate`].
pub(super) unsafe fn video_to_video<'a>(
    p: *const cogvideo_pipeline,
    frame_count: usize,
    opts: *const cogvideo_video_to_video_options,
) -> Result<Request<'a, cogvideo_video_to_video_options, VideoToVideoOptions>> {
    let handle = pipeline_ref(p)?;
    let pipeline = &handle.pipeline;
    let raw = unsafe { options::read(opts) }?;
    let (opts, noise) = unsafe { options::video_to_video_options(&raw) }?;
    let usable = pipeline.usable_edit_frames(frame_count)?;
    let (h, w) = pipeline_working_size(pipeline, raw.height, raw.width)?;
    let plan = pipeline.noise_plan_video_to_video(h, w, usable, &opts)?;
    Ok(Request {
        handle,
        raw,
        opts,
        noise,
        size: (h, w, usable),
        plan,
    })
}
