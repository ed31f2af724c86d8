//! What every effect adds to how the model runs: the *Speed* choice (exact,
//! fast, preview: C API 1.4's step cache, as README "Fast mode" recommends
//! it) and up to [`LORAS`] LoRA files with weights. Read from parameters,
//! resolved against the pipeline on the render thread (the steps and
//! working size sampled, the cache method, the adapters' content identity
//! for the result caches' keys), and applied on the worker right before
//! each library call: the worker runs one job at a time, so setting a
//! shared pipeline's adapters and calling it cannot interleave with
//! another job.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::capi::{self, Api, PipelineHandle};
use crate::params::Reader;

/// The *Speed* choice's options, in parameter order.
pub const SPEEDS: &[&str] = &["Exact", "Fast", "Preview"];

/// LoRA file and weight parameters per effect.
pub const LORAS: usize = 3;

/// The LoRA parameters' names: file, weight.
pub const LORA_PARAMS: [(&CStr, &CStr); LORAS] = [
    (c"lora_1", c"lora_1_weight"),
    (c"lora_2", c"lora_2_weight"),
    (c"lora_3", c"lora_3_weight"),
];

/// Loaded adapters kept per pipeline beyond those a job uses (each holds
/// its file's weights in f32 in the library).
const MAX_LOADED: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Speed {
    Exact,
    /// The chosen steps with Pyramid Attention Broadcast, the README's
    /// step cache for a final render where quality matters most.
    Fast,
    /// Half the steps (at least one) with FasterCache (TaylorSeer without
    /// guidance and for edits, which FasterCache does not take), at the
    /// model's smallest working size.
    Preview,
}

/// The parameters as read.
#[derive(Clone, Debug)]
pub struct ModelSettings {
    pub speed: Speed,
    /// Files (non-empty paths) and weights.
    pub loras: Vec<(String, f64)>,
}

pub fn read(r: &Reader) -> Result<ModelSettings, String> {
    let speed = match r.int(c"speed")? {
        1 => Speed::Fast,
        2 => Speed::Preview,
        _ => Speed::Exact,
    };
    let mut loras = Vec::new();
    for (file, weight) in LORA_PARAMS {
        let path = r.string(file)?;
        if !path.trim().is_empty() {
            loras.push((path, r.double(weight)?));
        }
    }
    Ok(ModelSettings { speed, loras })
}

/// A LoRA file to apply: its path, its content's identity, its weight.
#[derive(Clone, Debug)]
pub struct Adapter {
    pub path: String,
    pub identity: u64,
    pub weight: f64,
}

impl Adapter {
    /// The name it is loaded under: the same file content, wherever it
    /// lies, is loaded once.
    fn name(&self) -> CString {
        CString::new(format!("ofx-{:016x}", self.identity)).expect("no NUL in hex")
    }
}

/// What a render's results are computed with.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The speed computed (exact where the library has no step cache).
    pub speed: Speed,
    /// `COGVIDEO_CACHE_*`, `None` for the exact result.
    pub method: Option<u32>,
    pub steps: i32,
    pub width: i32,
    pub height: i32,
    /// Adapters of non-zero weight (weight 0 is the model without it).
    pub adapters: Vec<Adapter>,
    /// Why the speed asked for is not the one computed.
    pub note: Option<String>,
}

/// What results depend on about the adapters: their files' content and
/// weights, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoraKey(Vec<(u64, u64)>);

/// What results depend on about the speed, beyond steps and size.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpeedKey(Option<u32>);

impl Resolved {
    pub fn lora_key(&self) -> LoraKey {
        LoraKey(
            self.adapters
                .iter()
                .map(|a| (a.identity, a.weight.to_bits()))
                .collect(),
        )
    }

    pub fn speed_key(&self) -> SpeedKey {
        SpeedKey(self.method)
    }

    /// Which result this is, for the status: "result" (exact), "fast
    /// result (...)", "preview (...)".
    pub fn label(&self) -> String {
        let method = match self.method {
            Some(capi::CACHE_PYRAMID_ATTENTION_BROADCAST) => "Pyramid Attention Broadcast",
            Some(capi::CACHE_FASTER_CACHE) => "FasterCache",
            Some(capi::CACHE_TAYLORSEER) => "TaylorSeer",
            _ => "",
        };
        let mut s = match self.speed {
            // Exact is the default, shown as before.
            Speed::Exact if self.note.is_none() => "result".to_string(),
            Speed::Exact => "exact result".to_string(),
            Speed::Fast => format!("fast result ({method}, {} steps)", self.steps),
            Speed::Preview => {
                let size = if self.width > 0 {
                    format!("{}x{}", self.width, self.height)
                } else {
                    "the model's size".into()
                };
                format!("preview ({method}, {} steps, {size})", self.steps)
            }
        };
        if !self.adapters.is_empty() {
            let w: Vec<String> = self
                .adapters
                .iter()
                .map(|a| format!("{}", a.weight))
                .collect();
            s += &format!(
                " with {} LoRA (weights {})",
                self.adapters.len(),
                w.join(", ")
            );
        }
        if let Some(note) = &self.note {
            s += &format!("; {note}");
        }
        s
    }
}

/// Resolves the settings for a call of `steps` at `width` x `height` (0:
/// the model's default) with `guidance`; `edit` for Edit, whose edit call
/// FasterCache does not take. A LoRA file that cannot be read, or that the
/// library refused before, is an error: no job starts.
pub fn resolve(
    ms: &ModelSettings,
    pipe: &PipelineHandle,
    (steps, width, height): (i32, i32, i32),
    guidance: f32,
    edit: bool,
) -> Result<Resolved, String> {
    let api = pipe.api;
    let mut adapters = Vec::new();
    for (path, weight) in &ms.loras {
        if *weight == 0.0 {
            continue;
        }
        if !weight.is_finite() {
            return Err(format!("LoRA {path}: weight {weight} is not finite"));
        }
        let identity = file_identity(path).map_err(|e| format!("LoRA {path}: {e}"))?;
        if let Some(e) = refused(pipe, identity) {
            return Err(format!("LoRA {path}: {e}"));
        }
        adapters.push(Adapter {
            path: path.clone(),
            identity,
            weight: *weight,
        });
    }
    if !adapters.is_empty() && api.pipeline_set_adapters.is_none() {
        return Err(format!(
            "LoRA needs libcogvideo C API 1.4 or later; this library is {}",
            abi(api)
        ));
    }
    let mut r = Resolved {
        speed: ms.speed,
        method: None,
        steps,
        width,
        height,
        adapters,
        note: None,
    };
    if ms.speed != Speed::Exact && api.cache_options_init.is_none() {
        r.speed = Speed::Exact;
        r.note = Some(format!(
            "{} needs libcogvideo C API 1.4 (step caching); this library is {}",
            if ms.speed == Speed::Fast {
                "fast mode"
            } else {
                "preview"
            },
            abi(api)
        ));
        return Ok(r);
    }
    match ms.speed {
        Speed::Exact => {}
        Speed::Fast => r.method = Some(capi::CACHE_PYRAMID_ATTENTION_BROADCAST),
        Speed::Preview => {
            r.method = Some(if guidance > 1.0 && !edit {
                capi::CACHE_FASTER_CACHE
            } else {
                capi::CACHE_TAYLORSEER
            });
            r.steps = (steps / 2).max(1);
            (r.width, r.height) = smallest_size(pipe, width, height);
        }
    }
    Ok(r)
}

fn abi(api: &Api) -> String {
    let v = api.abi();
    format!("{}.{}", v >> 16, v & 0xffff)
}

/// The smallest working size the model takes at the working size's aspect
/// (0: its default): half of it per side, rounded down to a size the
/// library accepts (`cogvideo_latent_shape` checks it: multiples of 16 or
/// 32 pixels, and a variant with learned positional embeddings takes its
/// own size only, which is then the smallest).
fn smallest_size(pipe: &PipelineHandle, width: i32, height: i32) -> (i32, i32) {
    let Ok((dw, dh, _)) = pipe.default_size() else {
        return (width, height);
    };
    let (w, h) = (
        if width > 0 { width } else { dw },
        if height > 0 { height } else { dh },
    );
    for unit in [16, 32] {
        let half = |v: i32| (v / 2 / unit * unit).max(unit);
        let (pw, ph) = (half(w), half(h));
        if (pw, ph) == (w, h) {
            break;
        }
        if pipe.latent_shape(pw, ph, 0).is_ok() {
            return (pw, ph);
        }
    }
    (width, height)
}

/// A file's content identity (a hash of its bytes), computed once per
/// path, size and modification time.
fn file_identity(path: &str) -> Result<u64, String> {
    /// Path, size, modification time, identity.
    type Known = (String, u64, Option<SystemTime>, u64);
    static IDS: Mutex<Vec<Known>> = Mutex::new(Vec::new());
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    let (len, modified) = (meta.len(), meta.modified().ok());
    let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((.., id)) = ids
        .iter()
        .find(|(p, l, m, _)| p == path && *l == len && *m == modified)
    {
        return Ok(*id);
    }
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mut h = DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot read the file: {e}"))?;
        if n == 0 {
            break;
        }
        buf[..n].hash(&mut h);
    }
    let id = h.finish();
    ids.retain(|(p, ..)| p != path);
    ids.push((path.to_string(), len, modified, id));
    Ok(id)
}

/// LoRA files a pipeline's library refused: (pipeline, identity, message).
static REFUSED: Mutex<Vec<(usize, u64, String)>> = Mutex::new(Vec::new());

fn refused(pipe: &PipelineHandle, identity: u64) -> Option<String> {
    let refused = REFUSED.lock().unwrap_or_else(|e| e.into_inner());
    refused
        .iter()
        .find(|(p, id, _)| *p == pipe.ptr as usize && *id == identity)
        .map(|(.., e)| e.clone())
}

/// Forgets the refused files ("Process": the user may have fixed them).
pub fn retry() {
    REFUSED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Makes `adapters` the pipeline's active ones (none: the base model),
/// loading those it lacks. On the worker, right before the job's library
/// calls.
pub fn apply(pipe: &PipelineHandle, adapters: &[Adapter]) -> Result<(), String> {
    let api = pipe.api;
    if api.pipeline_set_adapters.is_none() {
        // An older library: `resolve` let no adapter through.
        return Ok(());
    }
    let mut loaded = pipe.adapters.lock().unwrap_or_else(|e| e.into_inner());
    for a in adapters {
        if loaded.contains(&a.identity) {
            continue;
        }
        if api.pipeline_load_lora.is_none() || api.pipeline_remove_lora.is_none() {
            return Err("the library lacks cogvideo_pipeline_load_lora".into());
        }
        // Unused adapters go first, bounding what stays loaded.
        while loaded.len() >= MAX_LOADED {
            let Some(i) = loaded
                .iter()
                .position(|id| adapters.iter().all(|a| a.identity != *id))
            else {
                break;
            };
            let gone = Adapter {
                path: String::new(),
                identity: loaded.remove(i),
                weight: 0.0,
            };
            if let Err(e) = pipe.remove_lora(&gone.name()) {
                crate::log::line(&format!("removing a LoRA: {e}"));
            }
        }
        let path = CString::new(a.path.as_str())
            .map_err(|_| format!("LoRA {}: the path has a NUL", a.path))?;
        crate::log::line(&format!("loading LoRA {} as {:?}", a.path, a.name()));
        if let Err(e) = pipe.load_lora(&path, &a.name()) {
            REFUSED.lock().unwrap_or_else(|e| e.into_inner()).push((
                pipe.ptr as usize,
                a.identity,
                e.clone(),
            ));
            return Err(format!("LoRA {}: {e}", a.path));
        }
        loaded.push(a.identity);
    }
    let names: Vec<CString> = adapters.iter().map(Adapter::name).collect();
    let weights: Vec<f64> = adapters.iter().map(|a| a.weight).collect();
    pipe.set_adapters(&names, &weights)
        .map_err(|e| format!("setting the LoRA adapters: {e}"))
}

/// A call's step cache and its report, kept at a fixed address while the
/// call runs.
pub struct StepCache {
    pub options: capi::CacheOptions,
    pub report: capi::CacheReport,
}

impl StepCache {
    /// The cache for `method` (`None`: exact, no cache).
    pub fn new(api: &Api, method: Option<u32>) -> Option<Box<StepCache>> {
        let method = method?;
        let (options, report) = api.cache_defaults()?;
        let mut c = Box::new(StepCache { options, report });
        c.options.method = method;
        Some(c)
    }
}

/// What the jobs' step caches saved, by job: shown with their results.
static REPORTS: Mutex<Option<HashMap<u64, String>>> = Mutex::new(None);
/// What each instance shows: the job it wants and which result that is.
static SHOWING: Mutex<Option<HashMap<usize, (u64, String)>>> = Mutex::new(None);

/// Logs and keeps what job `id`'s step cache saved.
pub fn record(id: u64, cache: Option<&StepCache>) {
    let Some(c) = cache else { return };
    let r = &c.report;
    let text = format!(
        "{} of {} block evaluations skipped, {} attention evaluations reused, {} steps",
        r.blocks_skipped, r.block_evaluations, r.attention_skipped, r.steps
    );
    crate::log::line(&format!("job {id:016x}: step cache: {text}"));
    let mut reports = REPORTS.lock().unwrap_or_else(|e| e.into_inner());
    let map = reports.get_or_insert_with(HashMap::new);
    if map.len() >= 256 {
        map.clear();
    }
    map.insert(id, text);
}

/// Notes that `instance` wants job `id`, computing `r`.
pub fn showing(instance: usize, id: u64, r: &Resolved) {
    let mut showing = SHOWING.lock().unwrap_or_else(|e| e.into_inner());
    showing
        .get_or_insert_with(HashMap::new)
        .insert(instance, (id, r.label()));
}

/// Forgets a destroyed instance.
pub fn forget(instance: usize) {
    if let Some(m) = SHOWING.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        m.remove(&instance);
    }
}

/// The status of a result `instance` shows: which one it is, and what its
/// step cache saved where this process computed it.
pub fn status(instance: usize) -> String {
    let showing = SHOWING.lock().unwrap_or_else(|e| e.into_inner());
    let Some((id, label)) = showing.as_ref().and_then(|m| m.get(&instance)).cloned() else {
        return "done: the result".into();
    };
    drop(showing);
    let reports = REPORTS.lock().unwrap_or_else(|e| e.into_inner());
    match reports.as_ref().and_then(|m| m.get(&id)) {
        Some(saved) => format!("done: the {label}; {saved}"),
        None => format!("done: the {label}"),
    }
}
