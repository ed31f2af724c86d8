//! Reading a checkpoint folder in the diffusers layout exactly as published:
//! `model_index.json`, one sub-folder per component with its `config.json`
//! and single-file or sharded safetensors (read in [`weights`]).
//!
//! Everything here turns file-system and format problems into
//! [`Error::Io`] / [`Error::BadCheckpoint`] naming the offending file, so a
//! user pointing at the wrong folder learns which file is missing or broken.
//! Only regular files of bounded size are read (a FIFO would block the load
//! forever, `/dev/zero` would be read until memory runs out), and every
//! tensor's shape and dtype are checked against its safetensors header
//! before any of its data is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

mod weights;

pub use weights::{load_weights, tensor_counts, weight_count};

/// Pipeline classes whose checkpoints this library loads.
const PIPELINE_CLASSES: [&str; 3] = [
    "CogVideoXPipeline",
    "CogVideoXImageToVideoPipeline",
    "CogVideoXVideoToVideoPipeline",
];

/// The `[library, class]` each used component must declare: what the five
/// published checkpoints declare, and the alternatives diffusers swaps in
/// (the DPM scheduler of the official demo, the fast tokenizer).
const COMPONENT_CLASSES: [(&str, &str, &[&str]); 5] = [
    (
        "scheduler",
        "diffusers",
        &["CogVideoXDDIMScheduler", "CogVideoXDPMScheduler"],
    ),
    ("text_encoder", "transformers", &["T5EncoderModel"]),
    (
        "tokenizer",
        "transformers",
        &["T5Tokenizer", "T5TokenizerFast"],
    ),
    ("transformer", "diffusers", &["CogVideoXTransformer3DModel"]),
    ("vae", "diffusers", &["AutoencoderKLCogVideoX"]),
];

/// `model_index.json`: the pipeline class and which library class backs
/// each component. Unknown keys (versions, optional components) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelIndex {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    #[serde(flatten)]
    pub components: BTreeMap<String, serde_json::Value>,
}

impl ModelIndex {
    /// The `[library, class]` pair declared for a component, if any.
    pub fn component_class(&self, name: &str) -> Option<(String, String)> {
        let arr = self.components.get(name)?.as_array()?;
        match (arr.first()?.as_str(), arr.get(1)?.as_str()) {
            (Some(lib), Some(class)) => Some((lib.to_string(), class.to_string())),
            _ => None,
        }
    }

    /// Checks that this is a CogVideoX pipeline whose components are the
    /// classes this library implements, so a Stable Diffusion folder (or a
    /// component swapped for another class) is refused up front.
    fn validate(&self) -> std::result::Result<(), String> {
        if !PIPELINE_CLASSES.contains(&self.class_name.as_str()) {
            return Err(format!(
                "_class_name `{}` is not a CogVideoX pipeline; accepted: {}",
                clip(&self.class_name),
                PIPELINE_CLASSES.join(", ")
            ));
        }
        for (name, library, classes) in COMPONENT_CLASSES {
            let ok = self
                .component_class(name)
                .is_some_and(|(lib, class)| lib == library && classes.contains(&class.as_str()));
            if !ok {
                let found = self
                    .components
                    .get(name)
                    .map_or_else(|| "missing".to_string(), |v| clip(&v.to_string()));
                let accepted: Vec<String> = classes
                    .iter()
                    .map(|c| format!("[\"{library}\", \"{c}\"]"))
                    .collect();
                return Err(format!(
                    "component `{name}` is {found}; accepted: {}",
                    accepted.join(" or ")
                ));
            }
        }
        Ok(())
    }
}

/// At most 80 characters of a value quoted in a message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The last component of `path`, for messages that already name its folder.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A checkpoint folder that has been checked to exist and to carry a
/// readable `model_index.json` naming the classes this library loads.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    root: PathBuf,
    pub index: ModelIndex,
}

impl Checkpoint {
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::io(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint folder not found"),
            ));
        }
        let path = root.join("model_index.json");
        let index: ModelIndex = read_config(&path)?;
        index
            .validate()
            .map_err(|m| Error::bad_checkpoint(&path, m))?;
        Ok(Self { root, index })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of a component (`transformer`, `vae`, ...), which must exist.
    pub fn component_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Error::io(
                &dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("component folder `{name}` is missing from the checkpoint"),
                ),
            ))
        }
    }
}

/// Reads and deserialises a JSON config. Unknown fields are accepted (the
/// structs do not deny them); a missing required field is reported with the
/// file and the field name, as serde words it.
pub fn read_config<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let bytes = read_regular_file(path, MAX_CONFIG_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_checkpoint(path, e))
}

/// Largest JSON config accepted; published ones are a few KiB (a sharded
/// index of a 5B model about 100 KiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Opens a checkpoint file that must be a regular file (after following
/// symlinks). The type is checked before opening, so no FIFO or device is
/// ever opened, and again on the open file (opened non-blocking), so a file
/// swapped in between cannot block the load either.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    let not_regular = || Error::bad_checkpoint(path, "not a regular file");
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok((file, meta.len()))
}

/// Reads a whole checkpoint file that must be a regular file (after
/// following symlinks) of at most `max_bytes`.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let (file, len) = open_regular(path)?;
    if len > max_bytes {
        return Err(Error::bad_checkpoint(
            path,
            format!("{len} bytes, more than the {max_bytes} accepted"),
        ));
    }
    let mut bytes = Vec::new();
    // `take` guards against a file that grows between the check and the read.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::bad_checkpoint(
            path,
            format!("more than the {max_bytes} bytes accepted"),
        ));
    }
    Ok(bytes)
}

/// Loads one model component from its folder: reads `config.json`, then the
/// weights as [`load_weights`] does.
pub fn load_component<C, M>(
    dir: &Path,
    stem: &str,
    dtype: DType,
    device: &Device,
    load: impl FnOnce(VarBuilder<'static>, &C) -> candle_core::Result<M>,
) -> Result<(C, M)>
where
    C: DeserializeOwned,
{
    let cfg: C = read_config(dir.join("config.json"))?;
    let model = load_weights(dir, stem, dtype, device, |vb| load(vb, &cfg))?;
    Ok((cfg, model))
}

/// Checks a config field that sets sizes, counts or divisors against the
/// range this library accepts, in the one-line form config errors take.
pub(crate) fn check_field(
    field: &str,
    value: usize,
    accepted: std::ops::RangeInclusive<usize>,
) -> std::result::Result<(), String> {
    let (lo, hi) = (*accepted.start(), *accepted.end());
    if accepted.contains(&value) {
        Ok(())
    } else if lo == hi {
        Err(format!("{field} {value} is not supported; accepted: {lo}"))
    } else {
        Err(format!(
            "{field} {value} is out of range; accepted: {lo} to {hi}"
        ))
    }
}

/// Checks a float config field that must be finite, above zero and at most
/// `max` (epsilons, scales that divide).
pub(crate) fn check_positive(field: &str, value: f64, max: f64) -> std::result::Result<(), String> {
    if value > 0.0 && value <= max {
        Ok(())
    } else {
        Err(format!(
            "{field} {value} is out of range; accepted: above 0, at most {max}"
        ))
    }
}

/// Reads a component's `config.json` and checks it with `validate`, so a
/// config fault names the file and the field before any weight is read.
pub fn read_component_config<C: DeserializeOwned>(
    dir: &Path,
    validate: impl FnOnce(&C) -> std::result::Result<(), String>,
) -> Result<C> {
    let path = dir.join("config.json");
    let cfg: C = read_config(&path)?;
    validate(&cfg).map_err(|m| Error::bad_checkpoint(&path, m))?;
    Ok(cfg)
}

/// FNV-1a 64, written out here so that hashes of files (checkpoint
/// identities, LoRA contents) never depend on the Rust version (std's
/// hashers promise no stability).
pub(crate) struct Fnv(pub(crate) u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A length-prefixed field, so that field boundaries are hashed too.
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}
