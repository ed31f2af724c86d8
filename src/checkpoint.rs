//! Reading a checkpoint folder in the diffusers layout exactly as published:
//! `model_index.json`, one sub-folder per component with its `config.json`
//! and single-file or sharded safetensors.
//!
//! Everything here turns file-system and format problems into
//! [`Error::Io`] / [`Error::BadCheckpoint`] naming the offending file, so a
//! user pointing at the wrong folder learns which file is missing or broken.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

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
}

/// A checkpoint folder that has been checked to exist and to carry a
/// readable `model_index.json`.
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
        let index: ModelIndex = read_config(root.join("model_index.json"))?;
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

/// Reads a whole checkpoint file that must be a regular file (after
/// following symlinks) of at most `max_bytes`: a FIFO would block the load
/// forever and `/dev/zero` would be read until memory runs out.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::bad_checkpoint(path, "not a regular file"));
    }
    if meta.len() > max_bytes {
        return Err(Error::bad_checkpoint(
            path,
            format!("{} bytes, more than the {max_bytes} accepted", meta.len()),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
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

/// The safetensors files holding a component's weights: `<stem>.safetensors`,
/// or the shards named by `<stem>.safetensors.index.json`.
pub fn weight_files(dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    let single = dir.join(format!("{stem}.safetensors"));
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    if index.is_file() {
        #[derive(Deserialize)]
        struct ShardIndex {
            weight_map: BTreeMap<String, String>,
        }
        let idx: ShardIndex = read_config(&index)?;
        let mut files: Vec<PathBuf> = Vec::new();
        for shard in idx.weight_map.values() {
            let p = dir.join(shard);
            if !files.contains(&p) {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(Error::bad_checkpoint(&index, "weight_map is empty"));
        }
        for p in &files {
            if !p.is_file() {
                return Err(Error::io(
                    p,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("shard listed in {} is missing", index.display()),
                    ),
                ));
            }
        }
        Ok(files)
    } else if single.is_file() {
        Ok(vec![single])
    } else {
        Err(Error::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no weights: neither {stem}.safetensors nor {stem}.safetensors.index.json"),
            ),
        ))
    }
}

/// Checks a safetensors file's header against its length, so a truncated
/// download fails at load time with a clear message instead of at first use.
fn check_safetensors(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_buf = [0u8; 8];
    f.read_exact(&mut len_buf).map_err(|_| {
        Error::bad_checkpoint(
            path,
            "not a safetensors file: shorter than its 8-byte header length",
        )
    })?;
    let header_len = u64::from_le_bytes(len_buf);
    if header_len > file_len.saturating_sub(8) {
        return Err(Error::bad_checkpoint(
            path,
            format!(
                "truncated or not a safetensors file: header claims {header_len} bytes, file has {file_len}"
            ),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| Error::bad_checkpoint(path, format!("unreadable safetensors header: {e}")))?;
    let data_len = header
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let available = file_len - 8 - header_len;
    if data_len > available {
        return Err(Error::bad_checkpoint(
            path,
            format!("truncated: tensors need {data_len} bytes of data, file holds {available}"),
        ));
    }
    Ok(())
}

/// Memory-maps a component's weights. Tensors are converted to `dtype` as
/// they are read, whatever precision they were stored in.
pub fn var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    for f in files {
        check_safetensors(f)?;
    }
    // SAFETY: the files are mapped read-only; like every mmap-based loader we
    // rely on nobody truncating the checkpoint while it is loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) }
        .map_err(|e| Error::bad_checkpoint(&files[0], e))
}

/// Loads one model component from its folder: reads `config.json`, maps the
/// weights and runs `load`, reporting any missing or mis-shaped tensor as a
/// bad checkpoint of that folder.
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
    let files = weight_files(dir, stem)?;
    let vb = var_builder(&files, dtype, device)?;
    let model = load(vb, &cfg).map_err(|e| Error::bad_checkpoint(dir, e))?;
    Ok((cfg, model))
}
