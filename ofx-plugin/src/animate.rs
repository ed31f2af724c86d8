//! CogVideoX Animate: the source frame at `source_frame` becomes a clip
//! (image-to-video) laid over the segment. The image is collected when the
//! host renders that frame (hosts such as MLT give no access to other
//! times); the clip is then computed once on the worker and served from
//! the cache, in memory and on disk.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::capi::{self, PipelineHandle};
use crate::disk::Latents;
use crate::image::Frame;
use crate::model_settings::{self, LoraKey, Resolved, SpeedKey, StepCache};
use crate::segment::{
    Fetch, LoadKey, ModelKey, Next, Outcome, Placement, RETRY, Reduced, Served, Waiter, next,
    on_progress, serve, wait_for,
};
use crate::worker::{self, Job};

/// Everything Animate's result depends on, read from parameters.
#[derive(Clone, Debug)]
pub struct AnimateSettings {
    pub load: LoadKey,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: i32,
    pub guidance: f32,
    pub seed: u64,
    pub width: i32,
    pub height: i32,
    pub resize_mode: u32,
    pub source_frame: i32,
    pub segment_start: i32,
    pub cache_version: i32,
    /// Speed (steps and size above are the ones it samples) and LoRA.
    pub model: Resolved,
}

/// Identifies the collected source image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ImageKey {
    /// The instance whose clip this is, where the host keeps instances and
    /// gives other times' frames (0 elsewhere, and in result keys, where
    /// the image's content identifies it).
    owner: usize,
    model: ModelKey,
    source_frame: i32,
    width: usize,
    height: usize,
    format: u32,
    cache_version: i32,
}

/// Everything a result depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ResultKey {
    image: ImageKey,
    image_hash: u64,
    prompt: String,
    negative_prompt: String,
    steps: i32,
    guidance_bits: u32,
    seed: u64,
    width: i32,
    height: i32,
    resize_mode: u32,
    start: i32,
    length: usize,
    step: i32,
    lora: LoraKey,
    speed: SpeedKey,
}

/// The collected image: its host frame's content hash and the image as kept
/// (`Frame::compact`).
type Image = (u64, Arc<Frame>);

static IMAGES: Mutex<Option<HashMap<ImageKey, Image>>> = Mutex::new(None);
static RESULTS: Mutex<Option<HashMap<ResultKey, Outcome>>> = Mutex::new(None);

/// Whether `owner` holds the image to animate for these parameters (at any
/// size).
pub fn image_held(owner: usize, model: &ModelKey, source_frame: i32, cache_version: i32) -> bool {
    let images = IMAGES.lock().unwrap_or_else(|e| e.into_inner());
    images.iter().flat_map(|m| m.keys()).any(|k| {
        k.owner == owner
            && k.model == *model
            && k.source_frame == source_frame
            && k.cache_version == cache_version
    })
}

/// Drops every cached image and result (the host is short of memory).
pub fn purge() {
    *IMAGES.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *RESULTS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Collects `source` when it is the host frame `time` at `source_frame`,
/// and returns what to show at `place` (`None`: outside the segment).
#[allow(clippy::too_many_arguments)]
pub fn render(
    s: &AnimateSettings,
    pipe: &Arc<PipelineHandle>,
    time: f64,
    place: Option<&Placement>,
    source: &Frame,
    w: &Waiter,
    fetch: Option<Fetch>,
    reduced: Option<Reduced>,
) -> Option<Served> {
    if let Some(reduced) = reduced {
        return Some(full_size(s, pipe, place?, source, w, reduced));
    }
    let image_key = ImageKey {
        owner: if fetch.is_some() { w.instance } else { 0 },
        model: ModelKey::new(&s.load, pipe),
        source_frame: s.source_frame,
        width: source.width,
        height: source.height,
        format: source.format,
        cache_version: s.cache_version,
    };
    // Hashed without the lock, copied only when new.
    let rendered = (time == s.source_frame as f64).then(|| source.content_hash());
    let image = {
        let mut images = IMAGES.lock().unwrap_or_else(|e| e.into_inner());
        let map = images.get_or_insert_with(HashMap::new);
        if let Some(hash) = rendered
            && map.get(&image_key).map(|(h, _)| *h) != Some(hash)
        {
            map.insert(image_key.clone(), (hash, Arc::new(source.compact())));
            bound_images(map, &image_key);
        }
        map.get(&image_key).cloned()
    };
    let place = place?;
    // Where the host gives other times' frames, the image is fetched.
    let image = image.or_else(|| {
        let f = fetch?(s.source_frame as f64)?;
        if (f.width, f.height, f.format) != (source.width, source.height, source.format) {
            crate::log::line(
                "the image to animate differs in size or depth from the frame rendered",
            );
            return None;
        }
        let entry = (f.content_hash(), Arc::new(f.compact()));
        let mut images = IMAGES.lock().unwrap_or_else(|e| e.into_inner());
        let map = images.get_or_insert_with(HashMap::new);
        map.insert(image_key.clone(), entry.clone());
        bound_images(map, &image_key);
        Some(entry)
    });
    let Some((image_hash, image)) = image else {
        return Some(Served::Source(format!(
            "CogVideoX Animate: waiting for host frame {} (the image to animate) to be rendered",
            s.source_frame
        )));
    };
    let key = result_key(s, image_key, image_hash, place);
    let id = crate::segment::job_id(&key);
    worker::want(w.instance, id);
    model_settings::showing(w.instance, id, &s.model);
    let retry = RETRY.load(Ordering::SeqCst);
    loop {
        let mut results = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
        let map = results.get_or_insert_with(HashMap::new);
        match next(map.get(&key), w, retry) {
            Next::Ready(frames) => {
                drop(results);
                return Some(serve(&frames, place, source));
            }
            Next::Show(served) => return Some(served),
            Next::Wait(job) => {
                drop(results);
                if let Some(served) = wait_for(&job, w) {
                    return Some(served);
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
            bound_results(map, &key);
            drop(results);
            return Some(serve(&frames, place, source));
        }
        let job = Job::new(id);
        map.insert(key.clone(), Outcome::Running(job.clone()));
        let work = {
            let (s, pipe, key, image) = (s.clone(), pipe.clone(), key.clone(), image.clone());
            let length = place.length;
            move |job: &Job| finish(&s, &pipe, key, length, image, entry, retry, job)
        };
        worker::submit(job, w.wait, work);
        if !w.wait {
            return Some(Served::Source("CogVideoX: queued for processing".into()));
        }
    }
}

/// The result of animating the image `image` (its content `image_hash`).
fn result_key(
    s: &AnimateSettings,
    image: ImageKey,
    image_hash: u64,
    place: &Placement,
) -> ResultKey {
    ResultKey {
        image: ImageKey { owner: 0, ..image },
        image_hash,
        prompt: s.prompt.clone(),
        negative_prompt: s.negative_prompt.clone(),
        steps: s.steps,
        guidance_bits: s.guidance.to_bits(),
        seed: s.seed,
        width: s.width,
        height: s.height,
        resize_mode: s.resize_mode,
        start: s.segment_start,
        length: place.length,
        step: place.step,
        lora: s.model.lora_key(),
        speed: s.model.speed_key(),
    }
}

/// A reduced render (`segment::Reduced`): the instance's clip animated
/// from its image at full size, downscaled, found in memory or on disk;
/// never a job.
fn full_size(
    s: &AnimateSettings,
    pipe: &PipelineHandle,
    place: &Placement,
    source: &Frame,
    w: &Waiter,
    reduced: Reduced,
) -> Served {
    let model = ModelKey::new(&s.load, pipe);
    // The instance's image at full size: its key and content.
    let images: Vec<(ImageKey, u64)> = {
        let images = IMAGES.lock().unwrap_or_else(|e| e.into_inner());
        images
            .iter()
            .flat_map(|m| m.iter())
            .filter(|(k, _)| {
                k.owner == w.instance
                    && k.model == model
                    && k.source_frame == s.source_frame
                    && k.cache_version == s.cache_version
                    && reduced.fits((k.width, k.height), (source.width, source.height))
            })
            .map(|(k, (hash, _))| (k.clone(), *hash))
            .collect()
    };
    for (image, hash) in images {
        let key = result_key(s, image, hash, place);
        let ready = {
            let results = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
            match results.as_ref().and_then(|m| m.get(&key)) {
                Some(Outcome::Ready(frames)) => Some(frames.clone()),
                _ => None,
            }
        };
        let frames =
            ready.or_else(|| crate::disk::read(&crate::disk::entry(&key, &[])).map(Arc::new));
        if let Some(frames) = frames {
            return serve(&frames, place, source);
        }
    }
    reduced.no_result()
}

fn bound_images(map: &mut HashMap<ImageKey, Image>, keep: &ImageKey) {
    let bytes = |(_, f): &Image| f.bytes() as u64;
    let cache = crate::memory::Cache::AnimateImages;
    crate::memory::bound(cache, map, keep, bytes, |_| true, |_| 0);
}

fn bound_results(map: &mut HashMap<ResultKey, Outcome>, keep: &ResultKey) {
    let cache = crate::memory::Cache::AnimateResults;
    crate::memory::bound(cache, map, keep, Outcome::bytes, Outcome::done, |_| 0);
}

/// Animates on the worker and records the outcome.
#[allow(clippy::too_many_arguments)]
fn finish(
    s: &AnimateSettings,
    pipe: &PipelineHandle,
    key: ResultKey,
    length: usize,
    image: Arc<Frame>,
    entry: std::path::PathBuf,
    retry: u64,
    job: &Job,
) {
    let lat = entry.with_extension("lat");
    let outcome = if job.cancelled() {
        Err(("cancelled before it started".to_string(), true))
    } else if let Some(l) = crate::disk::read_latents(&lat) {
        // The frames were dropped from the disk cache, their latents not.
        crate::log::line(&format!("decoding cached latents for {key:?}"));
        let size = (image.width, image.height, image.format);
        crate::generate::decode(pipe, &l, size, s.resize_mode, job)
    } else {
        crate::log::line(&format!("animating {key:?}"));
        animate(s, pipe, length, &image, job).map(|(l, f)| {
            if let Err(e) = crate::disk::write_latents(&lat, &l) {
                crate::log::line(&format!("cannot write {}: {e}", lat.display()));
            }
            f
        })
    };
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
                bound_results(map, &key);
            }
        },
    );
}

fn animate(
    s: &AnimateSettings,
    pipe: &PipelineHandle,
    length: usize,
    image: &Frame,
    job: &Job,
) -> Result<(Latents, Vec<Frame>), (String, bool)> {
    let api = pipe.api;
    let n = pipe
        .output_frame_count(length as i32)
        .map_err(|e| (e, false))?;
    let shape = pipe
        .latent_shape(s.width, s.height, length as i32)
        .map_err(|e| (e, false))?;
    let mut latents = Latents {
        shape,
        values: vec![0.0; shape.iter().product::<i64>().max(0) as usize],
    };
    let mut out: Vec<Frame> = (0..n)
        .map(|_| Frame::new(image.width, image.height, image.format))
        .collect();
    let descs: Vec<capi::Frame> = out.iter_mut().map(Frame::as_capi).collect();
    let prompt = CString::new(s.prompt.as_str()).map_err(|_| ("prompt has a NUL".into(), false))?;
    let negative = CString::new(s.negative_prompt.as_str())
        .map_err(|_| ("negative prompt has a NUL".into(), false))?;
    model_settings::apply(pipe, &s.model.adapters).map_err(|e| (e, false))?;
    let mut cache = StepCache::new(api, s.model.method);
    let mut o = api.animate_options_init.defaults();
    if let Some(c) = cache.as_deref_mut() {
        o.cache = &c.options;
        o.cache_report = &mut c.report;
    }
    o.prompt = prompt.as_ptr();
    o.negative_prompt = negative.as_ptr();
    o.width = s.width;
    o.height = s.height;
    o.num_frames = length as i32;
    o.steps = s.steps;
    o.guidance_scale = s.guidance;
    o.seed = s.seed;
    o.resize_mode = s.resize_mode;
    o.progress = Some(on_progress);
    o.progress_user = job as *const Job as *mut c_void;
    o.latents_out = latents.values.as_mut_ptr();
    o.latents_out_len = latents.values.len();
    let img = image.as_capi_input();
    // SAFETY: the image, prompts, latents, cache and job `o` points at and
    // the frames `descs` describes live until the call returns.
    unsafe { pipe.animate_image(&img, &o, &descs) }?;
    model_settings::record(job.id, cache.as_deref());
    Ok((latents, out))
}
