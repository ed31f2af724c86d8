//! CogVideoX Generate: text-to-video laid over the segment. In the generator
//! context it makes the whole picture (black outside the segment); in the
//! filter context (for hosts without generators, such as MLT) it replaces
//! the source over the segment. The sampled latents are cached apart from
//! the decoded frames (in memory and on disk), so that a change of output
//! size (render scale) or resize mode only decodes again.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::capi::{self, PipelineHandle};
use crate::disk::Latents;
use crate::image::Frame;
use crate::model_settings::{self, LoraKey, Resolved, SpeedKey, StepCache};
use crate::segment::{
    LoadKey, ModelKey, Next, Outcome, Placement, RETRY, Reduced, Served, Waiter, next, on_progress,
    serve, wait_for,
};
use crate::worker::{self, Job};

/// Everything Generate's result depends on, read from parameters.
#[derive(Clone, Debug)]
pub struct GenerateSettings {
    pub load: LoadKey,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: i32,
    pub guidance: f32,
    pub seed: u64,
    pub width: i32,
    pub height: i32,
    pub resize_mode: u32,
    pub segment_start: i32,
    pub cache_version: i32,
    /// Speed (steps and size above are the ones it samples) and LoRA.
    pub model: Resolved,
}

/// Everything sampling depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LatentKey {
    model: ModelKey,
    prompt: String,
    negative_prompt: String,
    steps: i32,
    guidance_bits: u32,
    seed: u64,
    width: i32,
    height: i32,
    length: usize,
    cache_version: i32,
    lora: LoraKey,
    speed: SpeedKey,
}

/// Everything the decoded frames depend on beyond the latents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ResultKey {
    latents: LatentKey,
    resize_mode: u32,
    out_width: usize,
    out_height: usize,
    format: u32,
    start: i32,
    step: i32,
}

/// Latents kept per process (a small fraction of their frames' size).
const MAX_LATENTS: usize = 8;

static LATENTS: Mutex<Option<HashMap<LatentKey, Arc<Latents>>>> = Mutex::new(None);
static RESULTS: Mutex<Option<HashMap<ResultKey, Outcome>>> = Mutex::new(None);

/// Drops every cached latent and result (the host is short of memory).
pub fn purge() {
    *LATENTS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *RESULTS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// What to show at `place`; `blank` is what the host gave (the source in
/// the filter context, black in the generator context), shown with a
/// status until the clip is ready.
pub fn render(
    s: &GenerateSettings,
    pipe: &Arc<PipelineHandle>,
    place: &Placement,
    blank: &Frame,
    w: &Waiter,
    reduced: Option<Reduced>,
) -> Served {
    let latents = LatentKey {
        model: ModelKey::new(&s.load, pipe),
        prompt: s.prompt.clone(),
        negative_prompt: s.negative_prompt.clone(),
        steps: s.steps,
        guidance_bits: s.guidance.to_bits(),
        seed: s.seed,
        width: s.width,
        height: s.height,
        length: place.length,
        cache_version: s.cache_version,
        lora: s.model.lora_key(),
        speed: s.model.speed_key(),
    };
    let key = ResultKey {
        latents,
        resize_mode: s.resize_mode,
        out_width: blank.width,
        out_height: blank.height,
        format: blank.format,
        start: s.segment_start,
        step: place.step,
    };
    if let Some(reduced) = reduced {
        return full_size(&key, reduced, place, blank);
    }
    let id = crate::segment::job_id(&("generate", &key));
    worker::want(w.instance, id);
    model_settings::showing(w.instance, id, &s.model);
    let retry = RETRY.load(Ordering::SeqCst);
    loop {
        let mut results = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
        let map = results.get_or_insert_with(HashMap::new);
        match next(map.get(&key), w, retry) {
            Next::Ready(frames) => {
                drop(results);
                return serve(&frames, place, blank);
            }
            Next::Show(served) => return served,
            Next::Wait(job) => {
                drop(results);
                if let Some(served) = wait_for(&job, w) {
                    return served;
                }
                continue;
            }
            Next::Compute => {}
        }
        let entry = crate::disk::entry(&key, &[]);
        if let Some(frames) = crate::disk::read(&entry) {
            crate::log::line(&format!("clip read from {}", entry.display()));
            let frames = Arc::new(frames);
            map.insert(key.clone(), Outcome::Ready(frames.clone()));
            bound(map, &key);
            drop(results);
            return serve(&frames, place, blank);
        }
        let job = Job::new(id);
        map.insert(key.clone(), Outcome::Running(job.clone()));
        let work = {
            let (s, pipe, key) = (s.clone(), pipe.clone(), key.clone());
            move |job: &Job| finish(&s, &pipe, key, retry, job)
        };
        worker::submit(job, w.wait, work);
        if !w.wait {
            return Served::Source("CogVideoX: queued for processing".into());
        }
    }
}

/// A reduced render (`segment::Reduced`): the clip at full size (any
/// depth), downscaled, found in memory or, where the scale says the full
/// size, on disk; never a job (not even decoding the latents again).
fn full_size(key: &ResultKey, reduced: Reduced, place: &Placement, blank: &Frame) -> Served {
    let small = (key.out_width, key.out_height);
    let found = {
        let results = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
        results.iter().flat_map(|m| m.iter()).find_map(|(k, o)| {
            let same = ResultKey {
                out_width: key.out_width,
                out_height: key.out_height,
                format: key.format,
                ..k.clone()
            } == *key;
            match o {
                Outcome::Ready(frames)
                    if same && reduced.fits((k.out_width, k.out_height), small) =>
                {
                    Some(frames.clone())
                }
                _ => None,
            }
        })
    };
    let on_disk = || {
        let (out_width, out_height) = reduced.full(small)?;
        let full = ResultKey {
            out_width,
            out_height,
            ..key.clone()
        };
        crate::disk::read(&crate::disk::entry(&full, &[])).map(Arc::new)
    };
    match found.or_else(on_disk) {
        Some(frames) => serve(&frames, place, blank),
        None => reduced.no_result(),
    }
}

fn bound(map: &mut HashMap<ResultKey, Outcome>, keep: &ResultKey) {
    let cache = crate::memory::Cache::Generate;
    crate::memory::bound(cache, map, keep, Outcome::bytes, Outcome::done, |_| 0);
}

/// The latents for `key`: from memory, from disk, or `None`.
fn cached_latents(key: &LatentKey) -> Option<Arc<Latents>> {
    let mut all = LATENTS.lock().unwrap_or_else(|e| e.into_inner());
    let map = all.get_or_insert_with(HashMap::new);
    if let Some(l) = map.get(key) {
        return Some(l.clone());
    }
    let path = crate::disk::latents_entry(key);
    let l = Arc::new(crate::disk::read_latents(&path)?);
    crate::log::line(&format!("latents read from {}", path.display()));
    map.insert(key.clone(), l.clone());
    Some(l)
}

fn store_latents(key: &LatentKey, l: Latents) {
    let path = crate::disk::latents_entry(key);
    if let Err(e) = crate::disk::write_latents(&path, &l) {
        crate::log::line(&format!("cannot write {}: {e}", path.display()));
    }
    let mut all = LATENTS.lock().unwrap_or_else(|e| e.into_inner());
    let map = all.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_LATENTS {
        map.clear();
    }
    map.insert(key.clone(), Arc::new(l));
}

/// Samples (unless the latents are cached) and decodes on the worker, and
/// records the outcome.
fn finish(s: &GenerateSettings, pipe: &PipelineHandle, key: ResultKey, retry: u64, job: &Job) {
    let outcome = if job.cancelled() {
        Err(("cancelled before it started".to_string(), true))
    } else {
        match cached_latents(&key.latents) {
            Some(l) => {
                crate::log::line(&format!("decoding cached latents for {key:?}"));
                let format = crate::image::compact_format(key.format);
                let size = (key.out_width, key.out_height, format);
                decode(pipe, &l, size, s.resize_mode, job)
            }
            None => {
                crate::log::line(&format!("generating {key:?}"));
                generate(s, pipe, &key, job).map(|(l, frames)| {
                    store_latents(&key.latents, l);
                    frames
                })
            }
        }
    };
    let entry = crate::disk::entry(&key, &[]);
    crate::segment::finish_and_record(
        "clip",
        &entry,
        outcome.map(|f| ((), f)),
        retry,
        job,
        &RESULTS,
        &key,
        |map| vec![map],
        |map, ok| {
            if ok.is_some() {
                bound(map, &key);
            }
        },
    );
}

pub(crate) type Failure = (String, bool);

fn outputs(key: &ResultKey, n: usize) -> Vec<Frame> {
    (0..n)
        .map(|_| {
            let format = crate::image::compact_format(key.format);
            Frame::new(key.out_width, key.out_height, format)
        })
        .collect()
}

/// Text to video: the frames and their latents.
fn generate(
    s: &GenerateSettings,
    pipe: &PipelineHandle,
    key: &ResultKey,
    job: &Job,
) -> Result<(Latents, Vec<Frame>), Failure> {
    let api = pipe.api;
    let length = key.latents.length as i32;
    let n = pipe.output_frame_count(length).map_err(|e| (e, false))?;
    let shape = pipe
        .latent_shape(s.width, s.height, length)
        .map_err(|e| (e, false))?;
    let count = shape.iter().product::<i64>().max(0) as usize;
    let mut latents = Latents {
        shape,
        values: vec![0.0; count],
    };
    let mut out = outputs(key, n as usize);
    let descs: Vec<capi::Frame> = out.iter_mut().map(Frame::as_capi).collect();
    let prompt = CString::new(s.prompt.as_str()).map_err(|_| ("prompt has a NUL".into(), false))?;
    let negative = CString::new(s.negative_prompt.as_str())
        .map_err(|_| ("negative prompt has a NUL".into(), false))?;
    model_settings::apply(pipe, &s.model.adapters).map_err(|e| (e, false))?;
    let mut cache = StepCache::new(api, s.model.method);
    let mut o = api.generate_options_init.defaults();
    if let Some(c) = cache.as_deref_mut() {
        o.cache = &c.options;
        o.cache_report = &mut c.report;
    }
    o.prompt = prompt.as_ptr();
    o.negative_prompt = negative.as_ptr();
    o.width = s.width;
    o.height = s.height;
    o.num_frames = length;
    o.steps = s.steps;
    o.guidance_scale = s.guidance;
    o.seed = s.seed;
    o.resize_mode = s.resize_mode;
    o.progress = Some(on_progress);
    o.progress_user = job as *const Job as *mut c_void;
    o.latents_out = latents.values.as_mut_ptr();
    o.latents_out_len = latents.values.len();
    // SAFETY: the prompts, latents, cache and job `o` points at and the
    // frames `descs` describes live until the call returns.
    unsafe { pipe.generate_video(&o, &descs) }?;
    model_settings::record(job.id, cache.as_deref());
    Ok((latents, out))
}

/// Decodes latents into frames of `size` (width, height, C API format)
/// with `resize_mode`, as the sampling call that made them decodes.
pub(crate) fn decode(
    pipe: &PipelineHandle,
    l: &Latents,
    size: (usize, usize, u32),
    resize_mode: u32,
    job: &Job,
) -> Result<Vec<Frame>, Failure> {
    let api = pipe.api;
    let n = api
        .decoded_frame_count(l.shape[1] as i32)
        .map_err(|e| (e, false))?;
    let mut out: Vec<Frame> = (0..n).map(|_| Frame::new(size.0, size.1, size.2)).collect();
    let descs: Vec<capi::Frame> = out.iter_mut().map(Frame::as_capi).collect();
    let mut o = api.decode_options_init.defaults();
    o.resize_mode = resize_mode;
    o.progress = Some(on_progress);
    o.progress_user = job as *const Job as *mut c_void;
    // SAFETY: the job `o` points at and the frames `descs` describes live
    // until the call returns.
    unsafe { pipe.decode_latents(&l.values, &l.shape, &o, &descs) }?;
    Ok(out)
}
