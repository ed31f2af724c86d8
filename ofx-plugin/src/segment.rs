//! What the three effects share: the per-process pipelines (loaded on the
//! worker, kept per checkpoint and load options), where a host frame falls
//! in its segment, a result's cache entry (`Outcome`) and what a render
//! does about it (serve, show a status, wait for a job), how a job's
//! outcome is written and recorded (`finish_and_record`), and job names.
//! Each effect keeps its own cache of sources and results (`edit.rs`,
//! `animate.rs`, `generate.rs`).

use std::collections::HashMap;
use std::ffi::c_void;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::capi::{self, PipelineHandle};
use crate::image::Frame;
use crate::worker::{self, Job};

/// How a pipeline is loaded; one pipeline per key and process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadKey {
    pub checkpoint: String,
    pub device: u32,
    pub device_index: i32,
    pub dtype: u32,
    pub vae_tiling: bool,
}

/// What results depend on about the model: the checkpoint's identity
/// (C API 1.3's `cogvideo_pipeline_identity`: not its path, so a moved or
/// copied checkpoint keeps its results, and the same in every process) and
/// how it runs. The device index is left out: the same kind of device
/// gives the same numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelKey {
    identity: u64,
    device: u32,
    dtype: u32,
    vae_tiling: bool,
}

impl ModelKey {
    pub fn new(load: &LoadKey, pipe: &PipelineHandle) -> Self {
        // An older library has no identity: the checkpoint files' sizes and
        // times stand in for it.
        let identity = pipe.identity().unwrap_or_else(|| {
            crate::disk::checkpoint_stamp(std::path::Path::new(&load.checkpoint))
        });
        ModelKey {
            identity,
            device: load.device,
            dtype: load.dtype,
            vae_tiling: load.vae_tiling,
        }
    }
}

/// Which host frames form the segment: `start` (host frame), `length`
/// (model frames, 0: the model's default) and `step` (host frames per model
/// frame, 0: automatic).
#[derive(Clone, Copy, Debug)]
pub struct SegmentParams {
    pub start: i32,
    pub length: i32,
    pub step: i32,
}

pub(crate) enum Outcome {
    Running(Arc<Job>),
    Ready(Arc<Vec<Frame>>),
    /// The message and the retry generation it failed in: a failed segment
    /// is not retried on every request, only after "Process".
    Failed(String, u64),
}

impl Outcome {
    /// Bytes of frames a finished result holds.
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Outcome::Ready(frames) => frames.iter().map(Frame::bytes).sum::<usize>() as u64,
            _ => 0,
        }
    }

    /// Whether no job works on it (it may be dropped).
    pub(crate) fn done(&self) -> bool {
        !matches!(self, Outcome::Running(j) if !j.finished())
    }
}

/// A pipeline being loaded (on the worker), loaded, or failed with the
/// retry generation it failed in (a broken checkpoint is not reloaded on
/// every frame).
enum Loaded {
    Loading(Arc<Job>),
    Ready(Arc<PipelineHandle>),
    Failed(String, u64),
}

static PIPELINES: Mutex<Vec<(LoadKey, Loaded)>> = Mutex::new(Vec::new());
/// The retry generation: "Process" counts it up, so that failures
/// remembered in an earlier one are tried again.
pub(crate) static RETRY: AtomicU64 = AtomicU64::new(0);

/// Lets segments that failed be processed again ("Process" button).
pub fn retry_failed() {
    RETRY.fetch_add(1, Ordering::SeqCst);
}

/// The process's pipeline for `key`, loaded on the worker on first use
/// (loading a large checkpoint takes long). `Ok(None)` while it loads,
/// unless `w` is a final render, which waits for it (`Ok(None)` again if
/// its host aborts meanwhile).
pub fn pipeline(key: &LoadKey, w: Option<&Waiter>) -> Result<Option<Arc<PipelineHandle>>, String> {
    let wait = w.filter(|w| w.wait);
    loop {
        let job = {
            let mut pipes = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
            let retry = RETRY.load(Ordering::SeqCst);
            match pipes.iter().find(|(k, _)| k == key).map(|(_, p)| p) {
                Some(Loaded::Ready(p)) => return Ok(Some(p.clone())),
                Some(Loaded::Failed(msg, generation)) if *generation == retry => {
                    return Err(msg.clone());
                }
                Some(Loaded::Loading(job)) if job.finished() => {
                    return Err("loading ended without a result".into());
                }
                Some(Loaded::Loading(job)) => job.clone(),
                _ => {
                    pipes.retain(|(k, _)| k != key);
                    let job = Job::new(job_id(&("load", key)));
                    job.set_status("loading the checkpoint");
                    pipes.push((key.clone(), Loaded::Loading(job.clone())));
                    let k = key.clone();
                    worker::submit(job.clone(), wait.is_some(), move |job: &Job| {
                        finish_load(k, retry, job)
                    });
                    job
                }
            }
        };
        let Some(w) = wait else { return Ok(None) };
        if (w.progress)(0.0) {
            return Ok(None);
        }
        job.wait(Duration::from_millis(100));
    }
}

/// The process's pipeline for `key` if it is loaded; starts nothing.
pub fn loaded(key: &LoadKey) -> Option<Arc<PipelineHandle>> {
    let pipes = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    pipes.iter().find_map(|(k, p)| match p {
        Loaded::Ready(p) if k == key => Some(p.clone()),
        _ => None,
    })
}

/// A render that never starts a load or a job: it is served from a result
/// computed at full size, downscaled, or passes the source through. One
/// job at full size serves every scale.
#[derive(Clone, Copy, Debug)]
pub enum Reduced {
    /// Below full size at this render scale, where the host gives every
    /// frame it needs (Resolve's proxies, Natron's viewer zoomed out).
    Scale([f64; 2]),
    /// Resolve's thumbnails (184x92, the Source clip's
    /// `kOfxImageClipPropThumbnail`): from any larger result.
    Thumbnail,
}

impl Reduced {
    /// Whether a result of size `full` is the full-size one for a render
    /// of size `small`.
    pub fn fits(&self, full: (usize, usize), small: (usize, usize)) -> bool {
        match self {
            Reduced::Scale(s) => {
                let scaled = |n: usize, s: f64| (n as f64 * s).round() as usize;
                full.0 > small.0
                    && scaled(full.0, s[0]) == small.0
                    && scaled(full.1, s[1]) == small.1
            }
            Reduced::Thumbnail => full.0 >= small.0 && full.1 >= small.1,
        }
    }

    /// The full size a render of size `small` comes from, where the scale
    /// says it (to look for it on disk).
    pub fn full(&self, small: (usize, usize)) -> Option<(usize, usize)> {
        match self {
            Reduced::Scale(s) => Some((
                (small.0 as f64 / s[0]).round() as usize,
                (small.1 as f64 / s[1]).round() as usize,
            )),
            Reduced::Thumbnail => None,
        }
    }

    /// What shows without a full-size result.
    pub fn no_result(&self) -> Served {
        Served::Source(match self {
            Reduced::Scale(_) => "CogVideoX: results are computed at full resolution: render this frame at 100% (not a proxy or zoomed out) first".into(),
            Reduced::Thumbnail => "CogVideoX: thumbnail: no full-size result yet; the source is shown".into(),
        })
    }
}

/// Loads on the worker and records the pipeline or the failure.
fn finish_load(key: LoadKey, retry: u64, job: &Job) {
    let loaded = match load(&key, job) {
        Ok(p) => Loaded::Ready(Arc::new(p)),
        Err(e) => {
            crate::log::line(&format!("loading failed: {e}"));
            Loaded::Failed(e, retry)
        }
    };
    let mut pipes = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    // Unless purged meanwhile.
    if let Some((_, slot)) = pipes.iter_mut().find(|(k, l)| {
        *k == key && matches!(l, Loaded::Loading(j) if std::ptr::eq(j.as_ref(), job))
    }) {
        *slot = loaded;
    }
}

fn load(key: &LoadKey, job: &Job) -> Result<PipelineHandle, String> {
    if key.checkpoint.is_empty() {
        return Err("no checkpoint folder is set".into());
    }
    let api = capi::api()?;
    let mut opts = api.load_options_init.defaults();
    opts.device = key.device;
    opts.device_index = key.device_index;
    opts.dtype = key.dtype;
    opts.vae_tiling = key.vae_tiling;
    // Since C API 1.3 loading reports progress (a 5B checkpoint takes
    // minutes) and stops when the job is cancelled; an older library
    // leaves these fields out of its struct_size.
    opts.progress = Some(on_progress);
    opts.progress_user = job as *const Job as *mut c_void;
    crate::log::line(&format!("loading {key:?}"));
    PipelineHandle::load(api, &key.checkpoint, &opts)
}

/// Where a host frame falls in the segment.
pub struct Placement {
    /// The model frame at or before the host frame.
    pub index: usize,
    /// How far towards the next model frame, in [0, 1).
    pub frac: f32,
    pub length: usize,
    pub step: i32,
}

/// Maps host time `t` into the segment, or `None` outside it. `host_fps`
/// and the model's fps choose the automatic frame step; the default length
/// is what the library gives `operation` (`capi::OPERATION_*`: an edit of
/// CogVideoX 1.5 takes 77 frames, where generating makes 81).
pub fn place(
    seg: &SegmentParams,
    pipe: &PipelineHandle,
    t: f64,
    host_fps: f64,
    operation: u32,
) -> Result<Option<Placement>, String> {
    let length = if seg.length > 0 {
        seg.length
    } else {
        pipe.default_frames(operation)?
    } as usize;
    let step = if seg.step > 0 {
        seg.step
    } else {
        let model_fps = pipe.fps()? as f64;
        ((host_fps / model_fps).round() as i32).max(1)
    };
    let rel = (t - seg.start as f64) / step as f64;
    if rel < 0.0 || rel > (length - 1) as f64 {
        return Ok(None);
    }
    let index = rel.floor() as usize;
    Ok(Some(Placement {
        index,
        frac: (rel - index as f64) as f32,
        length,
        step,
    }))
}

/// What a render should show.
pub enum Served {
    /// The edited frame.
    Result(Frame),
    /// The source, with a status line.
    Source(String),
}

/// How a render deals with a segment that is not ready.
pub struct Waiter<'a> {
    /// The instance (its handle's address): the job it wants.
    pub instance: usize,
    /// A final render: waits for the result; an interactive one shows the
    /// source with a status meanwhile.
    pub wait: bool,
    /// Reports the fraction done on the render thread; true when the host
    /// wants the render stopped.
    pub progress: &'a dyn Fn(f64) -> bool,
}

/// The library's progress callback: `user` is the job.
pub(crate) unsafe extern "C" fn on_progress(
    user: *mut c_void,
    stage: i32,
    done: i32,
    total: i32,
) -> bool {
    // SAFETY: `user` is the `Job` passed with this call.
    let job = unsafe { &*(user as *const Job) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        job.report(stage, done, total)
    }))
    .unwrap_or(false)
}

/// What to do about a result's cache entry.
pub(crate) enum Next {
    Ready(Arc<Vec<Frame>>),
    Show(Served),
    /// A final render waits for this job (the lock released).
    Wait(Arc<Job>),
    /// Nothing is cached, running or remembered as failed: compute it.
    Compute,
}

pub(crate) fn failed(msg: &str) -> String {
    format!(
        "CogVideoX failed: {msg} (log: {}; press Process to retry)",
        crate::log::path().display()
    )
}

/// Decides from a result's cache entry.
pub(crate) fn next(outcome: Option<&Outcome>, w: &Waiter, retry: u64) -> Next {
    match outcome {
        // Wanted again after it went stale: a new job replaces it (the old
        // one's result, if it has one, is dropped).
        Some(Outcome::Running(job)) if job.cancelled() && !job.finished() => Next::Compute,
        Some(Outcome::Ready(frames)) => Next::Ready(frames.clone()),
        Some(Outcome::Running(job)) if job.finished() => {
            Next::Show(Served::Source(failed("the job ended without a result")))
        }
        Some(Outcome::Running(job)) => {
            if w.wait {
                Next::Wait(job.clone())
            } else {
                Next::Show(Served::Source(format!("CogVideoX: {}", job.status())))
            }
        }
        Some(Outcome::Failed(msg, generation)) if *generation == retry => {
            Next::Show(Served::Source(failed(msg)))
        }
        _ => Next::Compute,
    }
}

/// A final render's wait for `job`, the cache lock released: reports
/// progress and cancels the job when the host aborts. `Some` is what to
/// show after an abort.
pub(crate) fn wait_for(job: &Job, w: &Waiter) -> Option<Served> {
    worker::hurry(job.id);
    if (w.progress)(job.fraction()) {
        crate::log::line(&format!("job {:016x}: the host aborted", job.id));
        job.cancel();
        return Some(Served::Source("CogVideoX: aborted".into()));
    }
    job.wait(Duration::from_millis(100));
    None
}

/// Identifies a job by what it computes.
pub(crate) fn job_id(key: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Source images at other host times (hosts with temporal access).
pub type Fetch<'a> = &'a dyn Fn(f64) -> Option<Frame>;

/// Whether `outcome` is still `job` running: a job whose entry was
/// dropped (the source changed, a purge) must not record its result.
fn current(outcome: Option<&Outcome>, job: &Job) -> bool {
    matches!(outcome, Some(Outcome::Running(j)) if std::ptr::eq(j.as_ref(), job))
}

pub(crate) fn serve(frames: &[Frame], place: &Placement, source: &Frame) -> Served {
    let Some(a) = frames.get(place.index) else {
        return Served::Source(format!(
            "CogVideoX: the model produced {} frames; frame {} is past them",
            frames.len(),
            place.index
        ));
    };
    let (w, h) = (source.width, source.height);
    if a.width < w || a.height < h {
        return Served::Source("CogVideoX: the source size changed".into());
    }
    // A full-size result for a render below full size.
    let sized = |f: &Frame| {
        if (f.width, f.height) == (w, h) {
            f.clone()
        } else {
            f.downscale(w, h)
        }
    };
    match frames.get(place.index + 1) {
        Some(b) if place.frac > 0.0 => {
            Served::Result(crate::image::blend(&sized(a), &sized(b), place.frac))
        }
        _ => Served::Result(sized(a)),
    }
}

pub(crate) type Failure = (String, bool);

/// A job's frames and what else it made (Edit's inversion), or why there
/// are none.
pub(crate) type Computed<T> = Result<(T, Vec<Frame>), Failure>;

/// How every job ends: its frames are written to the disk cache at
/// `entry`; then, under `cache`'s lock, its outcome is recorded in each
/// result map `holders` gives whose entry for `key` is still this job
/// (every instance that joined it; none when the entry was dropped
/// meanwhile: a changed source, a purge): the frames, or a failure
/// remembered for the retry generation `retry`, or nothing after a
/// cancellation (the next request starts again). `done` runs next under
/// the same lock, given on success what came with the frames and the
/// frames as recorded. `what` names the result in the log.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_and_record<M: Default, K: Eq + Hash, T>(
    what: &str,
    entry: &Path,
    computed: Computed<T>,
    retry: u64,
    job: &Job,
    cache: &Mutex<Option<M>>,
    key: &K,
    holders: impl FnOnce(&mut M) -> Vec<&mut HashMap<K, Outcome>>,
    done: impl FnOnce(&mut M, Option<(&T, &Arc<Vec<Frame>>)>),
) {
    if let Ok((_, frames)) = &computed
        && let Err(e) = crate::disk::write(entry, frames)
    {
        crate::log::line(&format!("cannot write {}: {e}", entry.display()));
    }
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(M::default);
    let mut waiting: Vec<&mut HashMap<K, Outcome>> = holders(map)
        .into_iter()
        .filter(|m| current(m.get(key), job))
        .collect();
    if waiting.is_empty() {
        crate::log::line(&format!(
            "the {what}'s entry was dropped while processing: its result is dropped"
        ));
        return;
    }
    let computed = computed.map(|(extra, frames)| (extra, Arc::new(frames)));
    match &computed {
        Ok(_) => crate::log::line(&format!("{what} done")),
        Err((msg, _)) => crate::log::line(&format!("{what} failed: {msg}")),
    }
    for m in waiting.iter_mut() {
        let slot = m.get_mut(key).expect("a waiting entry");
        match &computed {
            Ok((_, frames)) => *slot = Outcome::Ready(frames.clone()),
            Err((msg, false)) => *slot = Outcome::Failed(msg.clone(), retry),
            // A cancellation is not a failure: the next request starts again.
            Err((_, true)) => {
                m.remove(key);
            }
        }
    }
    drop(waiting);
    done(
        map,
        computed
            .as_ref()
            .ok()
            .map(|(extra, frames)| (extra, frames)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn an_interactive_render_does_not_wait_for_a_load_and_a_failed_load_is_kept() {
        let key = LoadKey {
            checkpoint: "/nonexistent/cogvideox".into(),
            device: 0,
            device_index: 0,
            dtype: 0,
            vae_tiling: false,
        };
        let no_abort = |_: f64| false;
        let w = Waiter {
            instance: 4001,
            wait: false,
            progress: &no_abort,
        };
        assert!(matches!(super::pipeline(&key, Some(&w)), Ok(None)));
        let deadline = Instant::now() + Duration::from_secs(300);
        let err = loop {
            match super::pipeline(&key, Some(&w)) {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Ok(Some(_)) => panic!("a pipeline from no checkpoint"),
                Err(e) => break e,
            }
            assert!(Instant::now() < deadline, "no answer in 300 s");
        };
        // Remembered: a final render gets the failure without a new load.
        let fin = Waiter { wait: true, ..w };
        assert_eq!(super::pipeline(&key, Some(&fin)).err(), Some(err));
        let pipes = PIPELINES.lock().unwrap();
        let entry = pipes.iter().find(|(k, _)| *k == key).map(|(_, l)| l);
        assert!(matches!(entry, Some(Loaded::Failed(..))));
    }
}
