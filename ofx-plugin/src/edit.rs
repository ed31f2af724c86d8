//! CogVideoX Edit: the per-process segment cache and its processing.
//!
//! A segment is `length` model frames, model frame k being host frame
//! `start + k * step`. Its source frames are collected as the host renders
//! them (hosts such as MLT give no access to other times); once all are
//! there the segment is inverted once and edited on the worker
//! (`worker.rs`), and every later request is served from the results. Host frames between model frames blend the
//! two nearest results.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::capi::{self, InversionHandle, PipelineHandle};
use crate::disk::Latents;
use crate::image::Frame;
use crate::model_settings::{self, LoraKey, Resolved, SpeedKey, StepCache};
use crate::segment::{
    Failure, Fetch, LoadKey, ModelKey, Next, Outcome, Placement, RETRY, Reduced, SegmentParams,
    Served, Waiter, failed, job_id, next, on_progress, serve, wait_for,
};
use crate::worker::{self, Job};

/// Everything the Edit effect's result depends on, read from parameters.
#[derive(Clone, Debug)]
pub struct EditSettings {
    pub load: LoadKey,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: i32,
    pub guidance: f32,
    pub seed: u64,
    pub start_from_inverted: bool,
    pub strength: f64,
    pub width: i32,
    pub height: i32,
    pub resize_mode: u32,
    pub segment_start: i32,
    pub cache_version: i32,
    /// Speed (steps and size above are the ones it samples) and LoRA.
    pub model: Resolved,
}

/// What inverting depends on (a new prompt reuses the inversion, and so
/// does fast mode: inversion is exact; a preview's steps and size differ).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct InvertKey {
    steps: i32,
    seed: u64,
    width: i32,
    height: i32,
    resize_mode: u32,
    /// The transformer inverts with the adapters too.
    lora: LoraKey,
}

/// What an edit depends on beyond its inversion.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EditKey {
    invert: InvertKey,
    prompt: String,
    negative_prompt: String,
    guidance_bits: u32,
    seed: u64,
    start_from_inverted: bool,
    strength_bits: u64,
    speed: SpeedKey,
}

/// What identifies a segment's source frames.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SegmentKey {
    /// The instance whose clip this is, where the host keeps instances and
    /// gives other times' frames (0 elsewhere: MLT makes an instance per
    /// frame and gives no clip identity).
    owner: usize,
    model: ModelKey,
    start: i32,
    length: usize,
    step: i32,
    cache_version: i32,
    width: usize,
    height: usize,
    format: u32,
}

#[derive(Default)]
struct Segment {
    /// Per model frame: the collected source's content hash (of the host's
    /// frame) and the source as kept (`Frame::compact`), shared with the
    /// job that processes it.
    sources: Vec<Option<(u64, Arc<Frame>)>>,
    inversion: Option<(InvertKey, Arc<InversionHandle>)>,
    results: HashMap<EditKey, Outcome>,
    last_use: u64,
}

impl Segment {
    /// Bytes of frames held: sources and finished results.
    fn bytes(&self) -> u64 {
        let sources = self.sources.iter().flatten().map(|(_, f)| f.bytes() as u64);
        sources
            .chain(self.results.values().map(Outcome::bytes))
            .sum()
    }

    /// Whether a job for it is queued or running.
    fn busy(&self) -> bool {
        !self.results.values().all(Outcome::done)
    }
}

/// Drops the least recently used segments, other than `keep` and those a
/// job works on, while the caches exceed the memory bound (`memory.rs`).
fn bound(map: &mut HashMap<SegmentKey, Segment>, keep: &SegmentKey) {
    crate::memory::bound(
        crate::memory::Cache::Edit,
        map,
        keep,
        Segment::bytes,
        |seg| !seg.busy(),
        |seg| seg.last_use,
    );
}

static SEGMENTS: Mutex<Option<HashMap<SegmentKey, Segment>>> = Mutex::new(None);
static CLOCK: AtomicU64 = AtomicU64::new(0);

/// Whether `owner`'s segment with these parameters (`seg` with its actual
/// length and step) has all its source frames, at every size it was
/// rendered at (a new render scale starts a new one, which needs them).
pub fn segment_held(
    owner: usize,
    model: &ModelKey,
    seg: &SegmentParams,
    cache_version: i32,
) -> bool {
    let all = SEGMENTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut matching = all.iter().flat_map(|m| m.iter()).filter(|(k, _)| {
        k.owner == owner
            && k.model == *model
            && k.start == seg.start
            && k.length == seg.length as usize
            && k.step == seg.step
            && k.cache_version == cache_version
    });
    let mut any = false;
    let complete = matching.all(|(_, s)| {
        any = true;
        s.sources.iter().all(Option::is_some)
    });
    any && complete
}

/// Drops every cached segment (the host is short of memory, or its user
/// cleared caches). Loaded pipelines stay: reloading a 5B checkpoint takes
/// minutes, and Natron sends PurgeCaches to every node from its *Clear All
/// Caches* menu (`Gui/Gui.cpp`, `AppManager::clearAllCaches`,
/// `clearOpenFXPluginsCaches`) and on project changes (`Project.cpp`).
pub fn purge() {
    *SEGMENTS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Collects `source` (the host frame at `place`) into its segment and
/// returns what to show. A complete segment is processed on the worker;
/// a final render waits for it, an interactive one shows the source with
/// a status meanwhile.
pub fn render(
    s: &EditSettings,
    pipe: &Arc<PipelineHandle>,
    place: &Placement,
    source: &Frame,
    w: &Waiter,
    fetch: Option<Fetch>,
    reduced: Option<Reduced>,
) -> Served {
    let key = SegmentKey {
        owner: if fetch.is_some() { w.instance } else { 0 },
        model: ModelKey::new(&s.load, pipe),
        start: s.segment_start,
        length: place.length,
        step: place.step,
        cache_version: s.cache_version,
        width: source.width,
        height: source.height,
        format: source.format,
    };
    let invert = InvertKey {
        steps: s.steps,
        seed: s.seed,
        width: s.width,
        height: s.height,
        resize_mode: s.resize_mode,
        lora: s.model.lora_key(),
    };
    let edit = EditKey {
        invert: invert.clone(),
        prompt: s.prompt.clone(),
        negative_prompt: s.negative_prompt.clone(),
        guidance_bits: s.guidance.to_bits(),
        seed: s.seed,
        start_from_inverted: s.start_from_inverted,
        strength_bits: s.strength.to_bits(),
        speed: s.model.speed_key(),
    };
    if let Some(reduced) = reduced {
        return full_size(&key, &edit, reduced, place, source);
    }
    // On disk and in job names the frames' content identifies the clip.
    let shared = SegmentKey {
        owner: 0,
        ..key.clone()
    };
    let retry = RETRY.load(Ordering::SeqCst);
    // The source's identity, hashed without the lock; it is copied (kept
    // compact) only where its slot does not hold it yet.
    let mut rendered = (place.frac == 0.0).then(|| (source.content_hash(), source));
    let mut fetched: Vec<(usize, u64, Arc<Frame>)> = Vec::new();
    let mut tried_fetch = false;
    loop {
        let mut all = SEGMENTS.lock().unwrap_or_else(|e| e.into_inner());
        let map = all.get_or_insert_with(HashMap::new);
        let seg = map.entry(key.clone()).or_default();
        seg.last_use = CLOCK.fetch_add(1, Ordering::SeqCst);
        seg.sources.resize(place.length, None);
        if let Some((hash, frame)) = rendered.take() {
            collect(seg, place.index, hash, || Arc::new(frame.compact()));
        }
        for (k, hash, f) in fetched.drain(..) {
            collect(seg, k, hash, || f);
        }
        // A complete segment's job is named by what it computes, not by
        // instance: instances on one clip, and one re-created while the job
        // runs (Resolve keeps several per clip and re-creates them on
        // timeline edits), share it. Every render says what its instance
        // wants now.
        let hashes: Option<Vec<u64>> = seg
            .sources
            .iter()
            .map(|x| x.as_ref().map(|(h, _)| *h))
            .collect();
        let id = hashes.as_ref().map(|h| job_id(&(&shared, h, &edit)));
        if let Some(id) = id {
            worker::want(w.instance, id);
            model_settings::showing(w.instance, id, &s.model);
        }
        let outcome = next(seg.results.get(&edit), w, retry);
        bound(map, &key);
        let joined = match (&outcome, id) {
            (Next::Compute, Some(id)) => running(map, id),
            _ => None,
        };
        let seg = map.get_mut(&key).expect("the segment in use is kept");
        match outcome {
            Next::Ready(frames) => {
                drop(all);
                return serve(&frames, place, source);
            }
            Next::Show(served) => return served,
            Next::Wait(job) => {
                drop(all);
                if let Some(served) = wait_for(&job, w) {
                    return served;
                }
                continue;
            }
            Next::Compute => {}
        }
        let collected = seg.sources.iter().filter(|x| x.is_some()).count();
        if collected < place.length
            && let Some(fetch) = fetch
            && !tried_fetch
        {
            // The host gives other times' frames: fetch the missing ones,
            // without the lock (the host may render upstream effects).
            tried_fetch = true;
            let missing: Vec<usize> = (0..place.length)
                .filter(|&k| seg.sources[k].is_none())
                .collect();
            drop(all);
            for k in missing {
                let t = (s.segment_start + k as i32 * place.step) as f64;
                match fetch(t) {
                    Some(f)
                        if (f.width, f.height, f.format)
                            == (source.width, source.height, source.format) =>
                    {
                        fetched.push((k, f.content_hash(), Arc::new(f.compact())))
                    }
                    Some(_) => crate::log::line(&format!(
                        "the source frame at {t} differs in size or depth from the one rendered"
                    )),
                    None => {}
                }
            }
            continue;
        }
        if collected < place.length {
            return Served::Source(format!(
                "CogVideoX: collected {collected} of {} frames; results on the next pass",
                place.length
            ));
        }
        // Every source is collected, so both are known.
        let (Some(hashes), Some(id)) = (hashes, id) else {
            return Served::Source(failed("the segment's sources are incomplete"));
        };
        if let Some(job) = joined {
            // Another instance's job computes this: wait for it or show
            // its status.
            seg.results.insert(edit.clone(), Outcome::Running(job));
            continue;
        }
        let entry = crate::disk::entry(&(&shared, &edit), &hashes);
        // The inversion is kept on disk too: a new prompt in a later
        // process (or after a purge) edits without inverting again.
        let inv_entry = crate::disk::inversion_entry(&(&shared, &invert), &hashes);
        if let Some(frames) = crate::disk::read(&entry) {
            crate::log::line(&format!("segment read from {}", entry.display()));
            let frames = Arc::new(frames);
            seg.results.insert(edit, Outcome::Ready(frames.clone()));
            bound(map, &key);
            drop(all);
            return serve(&frames, place, source);
        }
        let job = Job::new(id);
        seg.results
            .insert(edit.clone(), Outcome::Running(job.clone()));
        let frames: Vec<Arc<Frame>> = seg
            .sources
            .iter()
            .flatten()
            .map(|(_, f)| f.clone())
            .collect();
        let inv = seg
            .inversion
            .as_ref()
            .filter(|(k, _)| *k == invert)
            .map(|(_, i)| i.clone());
        let work = {
            let (s, pipe, key, edit) = (s.clone(), pipe.clone(), key.clone(), edit.clone());
            let invert = invert.clone();
            let entries = Entries {
                result: entry,
                inversion: inv_entry,
            };
            move |job: &Job| {
                finish(
                    &s, &pipe, key, edit, invert, frames, inv, entries, retry, job,
                )
            }
        };
        worker::submit(job, w.wait, work);
        if !w.wait {
            return Served::Source("CogVideoX: queued for processing".into());
        }
    }
}

/// A reduced render (a proxy, a zoomed-out viewer, a thumbnail): the
/// instance's result for the segment at full size (any depth), downscaled,
/// if there is one; it never starts a job, so that one job at full size
/// serves every scale.
fn full_size(
    key: &SegmentKey,
    edit: &EditKey,
    reduced: Reduced,
    place: &Placement,
    source: &Frame,
) -> Served {
    let found = {
        let all = SEGMENTS.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().flat_map(|m| m.iter()).find_map(|(k, seg)| {
            let same = SegmentKey {
                width: key.width,
                height: key.height,
                format: key.format,
                ..k.clone()
            } == *key;
            let full = reduced.fits((k.width, k.height), (key.width, key.height));
            match seg.results.get(edit) {
                Some(Outcome::Ready(frames)) if same && full => Some(frames.clone()),
                _ => None,
            }
        })
    };
    match found {
        Some(frames) => serve(&frames, place, source),
        None => reduced.no_result(),
    }
}

/// A job named `id` that is queued or running, in any segment.
fn running(map: &HashMap<SegmentKey, Segment>, id: u64) -> Option<Arc<Job>> {
    map.values()
        .flat_map(|seg| seg.results.values())
        .find_map(|o| match o {
            Outcome::Running(j) if j.id == id && !j.finished() && !j.cancelled() => Some(j.clone()),
            _ => None,
        })
}

/// Stores the source of model frame `index` (its host frame's `hash`, and
/// `kept`, called only where the slot holds another frame); a frame whose
/// content changed drops the segment's results, which no longer describe
/// it.
fn collect(seg: &mut Segment, index: usize, hash: u64, kept: impl FnOnce() -> Arc<Frame>) {
    let slot = &mut seg.sources[index];
    if slot.as_ref().map(|(h, _)| *h) != Some(hash) {
        if slot.is_some() {
            seg.inversion = None;
            seg.results.clear();
        }
        *slot = Some((hash, kept()));
    }
}

/// A segment's files in the disk cache.
struct Entries {
    result: PathBuf,
    inversion: PathBuf,
}

/// The inversion saved at `path` by an earlier job (this process or
/// another), if any and if the library accepts it.
fn saved_inversion(pipe: &PipelineHandle, path: &Path) -> Option<Arc<InversionHandle>> {
    if !path.is_file() {
        return None;
    }
    match InversionHandle::load(pipe, path) {
        Ok(Some(inv)) => {
            crate::log::line(&format!("inversion read from {}", path.display()));
            // Reading counts as use for the least-recently-used pruning.
            let _ = std::fs::File::open(path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            Some(Arc::new(inv))
        }
        Ok(None) => None,
        Err(e) => {
            crate::log::line(&format!("inverting again: {} refused: {e}", path.display()));
            None
        }
    }
}

/// Processes a segment on the worker and records the outcome.
#[allow(clippy::too_many_arguments)]
fn finish(
    s: &EditSettings,
    pipe: &PipelineHandle,
    key: SegmentKey,
    edit: EditKey,
    invert: InvertKey,
    frames: Vec<Arc<Frame>>,
    inv: Option<Arc<InversionHandle>>,
    entries: Entries,
    retry: u64,
    job: &Job,
) {
    let entry = entries.result;
    let lat = entry.with_extension("lat");
    let outcome = if job.cancelled() {
        Err(("cancelled before it started".to_string(), true))
    } else if let Some(l) = crate::disk::read_latents(&lat) {
        // The frames were dropped from the disk cache, their latents not.
        crate::log::line(&format!(
            "decoding cached latents for segment {key:?} with {edit:?}"
        ));
        let size = (frames[0].width, frames[0].height, frames[0].format);
        crate::generate::decode(pipe, &l, size, s.resize_mode, job).map(|f| (None, f))
    } else {
        crate::log::line(&format!("processing segment {key:?} with {edit:?}"));
        let inv = inv.or_else(|| saved_inversion(pipe, &entries.inversion));
        let inverts = inv.is_none();
        process(s, pipe, &frames, inv, job).map(|(inv, l, f)| {
            if let Err(e) = crate::disk::write_latents(&lat, &l) {
                crate::log::line(&format!("cannot write {}: {e}", lat.display()));
            }
            if inverts {
                save_inversion(pipe, &inv, &entries.inversion);
            }
            (Some(inv), f)
        })
    };
    // Every segment (instance) that joined the job gets its outcome, and
    // a new inversion with it.
    crate::segment::finish_and_record(
        "segment",
        &entry,
        outcome,
        retry,
        job,
        &SEGMENTS,
        &edit,
        |map| map.values_mut().map(|seg| &mut seg.results).collect(),
        |map, ok| {
            if let Some((Some(inversion), frames)) = ok {
                for seg in map.values_mut() {
                    if matches!(seg.results.get(&edit), Some(Outcome::Ready(f)) if Arc::ptr_eq(f, frames))
                    {
                        seg.inversion = Some((invert.clone(), inversion.clone()));
                    }
                }
            }
            bound(map, &key);
        },
    );
}

/// Keeps a new inversion in the disk cache.
fn save_inversion(pipe: &PipelineHandle, inv: &InversionHandle, path: &Path) {
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| e.to_string())
        .and_then(|()| inv.save(pipe, path));
    match saved {
        Ok(true) => crate::disk::written(path),
        // An older library cannot save inversions.
        Ok(false) => {}
        Err(e) => crate::log::line(&format!("cannot write {}: {e}", path.display())),
    }
}

/// Inverts (unless `inv` already holds this inversion) and edits.
fn process(
    s: &EditSettings,
    pipe: &PipelineHandle,
    frames: &[Arc<Frame>],
    inv: Option<Arc<InversionHandle>>,
    job: &Job,
) -> Result<(Arc<InversionHandle>, Latents, Vec<Frame>), Failure> {
    let api = pipe.api;
    let user = job as *const Job as *mut c_void;
    // Inversion and edit run with the adapters (one job: no other job
    // changes them in between).
    model_settings::apply(pipe, &s.model.adapters).map_err(|e| (e, false))?;
    let inv = match inv {
        Some(i) => i,
        None => {
            crate::log::line("inverting the segment");
            let descs: Vec<capi::Frame> = frames.iter().map(|f| f.as_capi_input()).collect();
            let mut o = api.invert_options_init.defaults();
            o.width = s.width;
            o.height = s.height;
            o.steps = s.steps;
            o.seed = s.seed;
            o.resize_mode = s.resize_mode;
            o.progress = Some(on_progress);
            o.progress_user = user;
            // SAFETY: the job `o` points at and the frames `descs` describes
            // live until the call returns.
            Arc::new(unsafe { pipe.invert_video(&descs, &o) }?)
        }
    };
    let n = inv.frame_count().map_err(|e| (e, false))?;
    let shape = inv.latent_shape().map_err(|e| (e, false))?;
    let mut latents = Latents {
        shape,
        values: vec![0.0; shape.iter().product::<i64>().max(0) as usize],
    };
    let (w, h, format) = (frames[0].width, frames[0].height, frames[0].format);
    let mut out: Vec<Frame> = (0..n).map(|_| Frame::new(w, h, format)).collect();
    let descs: Vec<capi::Frame> = out.iter_mut().map(Frame::as_capi).collect();
    let prompt = CString::new(s.prompt.as_str()).map_err(|_| ("prompt has a NUL".into(), false))?;
    let negative = CString::new(s.negative_prompt.as_str())
        .map_err(|_| ("negative prompt has a NUL".into(), false))?;
    let mut cache = StepCache::new(api, s.model.method);
    let mut o = api.edit_options_init.defaults();
    if let Some(c) = cache.as_deref_mut() {
        o.cache = &c.options;
        o.cache_report = &mut c.report;
    }
    o.prompt = prompt.as_ptr();
    o.negative_prompt = negative.as_ptr();
    o.guidance_scale = s.guidance;
    o.start_from_inverted = s.start_from_inverted;
    o.seed = s.seed;
    o.resize_mode = s.resize_mode;
    o.strength = s.strength;
    o.progress = Some(on_progress);
    o.progress_user = user;
    o.latents_out = latents.values.as_mut_ptr();
    o.latents_out_len = latents.values.len();
    // Outputs sized as the inversion says.
    // SAFETY: the prompts, latents, cache and job `o` points at and the
    // frames `descs` describes live until the call returns.
    unsafe { pipe.edit_with_prompt(&inv, &o, &descs) }?;
    model_settings::record(job.id, cache.as_deref());
    Ok((inv, latents, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::path::Path;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    const FRAMES: usize = 9;

    /// The tiny checkpoint through the C API, the library built into this
    /// test's target folder.
    fn pipeline() -> Arc<PipelineHandle> {
        static PIPE: OnceLock<Arc<PipelineHandle>> = OnceLock::new();
        PIPE.get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test binary>
            let profile = exe.parent().unwrap().parent().unwrap();
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let st = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "cogvideo", "--lib"])
                .env("CARGO_TARGET_DIR", profile.parent().unwrap())
                .current_dir(repo)
                .status()
                .unwrap();
            assert!(st.success(), "building libcogvideo failed");
            let lib = profile.join(capi::LIBRARY);
            let api = Box::leak(Box::new(capi::Api::open(lib.to_str().unwrap()).unwrap()));
            let opts = api.load_options_init.defaults();
            let ckpt = repo.join("tests/data/tiny/cogvideox-5b");
            Arc::new(PipelineHandle::load(api, ckpt.to_str().unwrap(), &opts).unwrap())
        })
        .clone()
    }

    /// Each test has its own `segment_start`: the plugin tells segments
    /// apart by their parameters, not by the clip they come from.
    fn settings(seed: u64, prompt: &str, segment_start: i32) -> EditSettings {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        EditSettings {
            load: LoadKey {
                checkpoint: repo
                    .join("tests/data/tiny/cogvideox-5b")
                    .display()
                    .to_string(),
                device: 0,
                device_index: 0,
                dtype: 0,
                vae_tiling: false,
            },
            prompt: prompt.into(),
            negative_prompt: String::new(),
            steps: 2,
            guidance: 4.5,
            seed,
            start_from_inverted: false,
            strength: 1.0,
            width: 0,
            height: 0,
            resize_mode: 0,
            segment_start,
            cache_version: 0,
            model: Resolved {
                speed: model_settings::Speed::Exact,
                method: None,
                steps: 2,
                width: 0,
                height: 0,
                adapters: Vec::new(),
                note: None,
            },
        }
    }

    /// 96x64 frames of moving gradients; `salt` makes a test's own source.
    fn clip(salt: u8) -> Vec<Frame> {
        (0..FRAMES)
            .map(|k| {
                let mut f = Frame::new(96, 64, capi::FORMAT_RGBA8);
                for (i, b) in f.data.iter_mut().enumerate() {
                    *b =
                        ((i / 4 % 96 * 2 + i / 384 + k * 10 + i % 4 * 40) as u8).wrapping_add(salt);
                }
                f
            })
            .collect()
    }

    fn shared(frames: &[Frame]) -> Vec<Arc<Frame>> {
        frames.iter().cloned().map(Arc::new).collect()
    }

    fn at(k: usize) -> Placement {
        Placement {
            index: k,
            frac: 0.0,
            length: FRAMES,
            step: 1,
        }
    }

    fn status(s: Served) -> String {
        match s {
            Served::Source(st) => st,
            Served::Result(_) => panic!("a result, where a status was expected"),
        }
    }

    #[test]
    fn an_interactive_render_returns_at_once_and_a_later_one_shows_the_result() {
        let pipe = pipeline();
        let s = settings(101, "a red car", 0);
        let frames = clip(0);
        let no_abort = |_: f64| false;
        let w = Waiter {
            instance: 1001,
            wait: false,
            progress: &no_abort,
        };
        for (k, f) in frames.iter().enumerate().take(FRAMES - 1) {
            let st = status(render(&s, &pipe, &at(k), f, &w, None, None));
            assert!(st.contains(&format!("collected {} of 9", k + 1)), "{st}");
        }
        // The frame that completes the segment queues it and returns.
        let st = status(render(&s, &pipe, &at(8), &frames[8], &w, None, None));
        assert_eq!(st, "CogVideoX: queued for processing");
        let deadline = Instant::now() + Duration::from_secs(300);
        let got = loop {
            match render(&s, &pipe, &at(0), &frames[0], &w, None, None) {
                Served::Result(f) => break f,
                Served::Source(st) => {
                    assert!(
                        st.starts_with("CogVideoX: processing: ") || st.contains("queued"),
                        "{st}"
                    );
                    assert!(Instant::now() < deadline, "no result in 300 s");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        // The same numbers as processing the frames directly.
        let (_, _, want) = process(&s, &pipe, &shared(&frames), None, &Job::new(0)).unwrap();
        assert!(got == want[0], "the served frame differs from the C API's");
        // A final render of another instance is served from the cache.
        let fin = Waiter {
            instance: 1002,
            wait: true,
            progress: &no_abort,
        };
        match render(&s, &pipe, &at(8), &frames[8], &fin, None, None) {
            Served::Result(f) => assert!(f == want[8]),
            Served::Source(st) => panic!("{st}"),
        }
    }

    #[test]
    fn a_final_render_returns_on_abort_and_the_next_one_processes() {
        let pipe = pipeline();
        let s = settings(202, "a blue boat", 100);
        let frames = clip(50);
        let no_abort = |_: f64| false;
        let polls = Cell::new(0);
        let abort = |_: f64| {
            polls.set(polls.get() + 1);
            true
        };
        let collect = Waiter {
            instance: 2001,
            wait: true,
            progress: &no_abort,
        };
        for (k, f) in frames.iter().enumerate().take(FRAMES - 1) {
            status(render(&s, &pipe, &at(k), f, &collect, None, None));
        }
        let aborting = Waiter {
            instance: 2001,
            wait: true,
            progress: &abort,
        };
        let t = Instant::now();
        let st = status(render(&s, &pipe, &at(8), &frames[8], &aborting, None, None));
        assert_eq!(st, "CogVideoX: aborted");
        assert!(polls.get() >= 1);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // The aborted job was cancelled, not failed: the next render runs it.
        match render(&s, &pipe, &at(8), &frames[8], &collect, None, None) {
            Served::Result(_) => {}
            Served::Source(st) => panic!("{st}"),
        }
    }

    #[test]
    fn with_temporal_access_one_render_fetches_the_segment_and_two_clips_stay_apart() {
        let pipe = pipeline();
        let s = settings(404, "a white wolf", 300);
        let (one, two) = (clip(150), clip(200));
        let no_abort = |_: f64| false;
        let fetched = Cell::new(0);
        let fetch_one = |t: f64| {
            fetched.set(fetched.get() + 1);
            Some(one[t as usize - 300].clone())
        };
        let fetch_two = |t: f64| Some(two[t as usize - 300].clone());
        let result = |served: Served| match served {
            Served::Result(f) => f,
            Served::Source(st) => panic!("{st}"),
        };
        // Two instances (two clips) with equal parameters, one final render
        // each of the same frame.
        let w = |instance| Waiter {
            instance,
            wait: true,
            progress: &no_abort,
        };
        let held = |owner| {
            let seg = SegmentParams {
                start: 300,
                length: FRAMES as i32,
                step: 1,
            };
            segment_held(owner, &ModelKey::new(&s.load, &pipe), &seg, 0)
        };
        assert!(!held(5001));
        let a = result(render(
            &s,
            &pipe,
            &at(4),
            &one[4],
            &w(5001),
            Some(&fetch_one),
            None,
        ));
        assert_eq!(
            fetched.get(),
            FRAMES - 1,
            "the other frames were not fetched"
        );
        // GetFramesNeeded then asks for the current frame only.
        assert!(held(5001) && !held(5002));
        let b = result(render(
            &s,
            &pipe,
            &at(4),
            &two[4],
            &w(5002),
            Some(&fetch_two),
            None,
        ));
        let (_, _, want_a) = process(&s, &pipe, &shared(&one), None, &Job::new(0)).unwrap();
        let (_, _, want_b) = process(&s, &pipe, &shared(&two), None, &Job::new(0)).unwrap();
        assert!(a == want_a[4] && b == want_b[4] && a != b);
    }

    #[test]
    fn a_parameter_change_cancels_the_job_it_made_stale() {
        let pipe = pipeline();
        let frames = clip(100);
        let no_abort = |_: f64| false;
        let w = Waiter {
            instance: 3001,
            wait: false,
            progress: &no_abort,
        };
        let (a, b) = (
            settings(303, "a green tree", 200),
            settings(303, "a yellow tree", 200),
        );
        for (k, f) in frames.iter().enumerate() {
            render(&a, &pipe, &at(k), f, &w, None, None);
        }
        let job_of = |s: &EditSettings| {
            let all = SEGMENTS.lock().unwrap();
            let seg = all.as_ref().unwrap().values().find(|seg| {
                seg.sources[0].as_ref().map(|(h, _)| *h) == Some(frames[0].content_hash())
            });
            seg.and_then(|seg| {
                seg.results.iter().find_map(|(k, o)| match o {
                    Outcome::Running(j) if k.prompt == s.prompt => Some(j.clone()),
                    _ => None,
                })
            })
        };
        let stale = job_of(&a).expect("the first job is not queued");
        // The prompt changes while the first job is queued or running.
        render(&b, &pipe, &at(0), &frames[0], &w, None, None);
        assert!(stale.cancelled(), "the stale job was not cancelled");
        assert!(!job_of(&b).expect("no job for the new prompt").cancelled());
        let deadline = Instant::now() + Duration::from_secs(300);
        while !matches!(
            render(&b, &pipe, &at(0), &frames[0], &w, None, None),
            Served::Result(_)
        ) {
            assert!(Instant::now() < deadline, "no result in 300 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        stale.wait(Duration::from_secs(300));
        assert!(job_of(&a).is_none(), "the cancelled job left an entry");
    }
}
