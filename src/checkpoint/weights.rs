//! A component's safetensors weights: the single file or the shards its
//! index names, each header checked before any data is read, and the data
//! read in bounded chunks into the compute dtype, as a `VarBuilder` backend
//! that can tell which stored tensors the model never read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use half::{bf16, f16};
use parking_lot::Mutex;
use serde::Deserialize;

use super::{clip, file_name, open_regular, read_config};
use crate::error::{Error, Result};

/// The safetensors files holding a component's weights: `<stem>.safetensors`,
/// or the shards named by `<stem>.safetensors.index.json` with the shard
/// the index assigns each tensor to.
struct WeightLayout {
    files: Vec<PathBuf>,
    index: Option<ShardIndex>,
}

struct ShardIndex {
    path: PathBuf,
    /// Tensor name to position in [`WeightLayout::files`].
    assigned: HashMap<String, usize>,
}

fn weight_layout(dir: &Path, stem: &str) -> Result<WeightLayout> {
    let single = dir.join(format!("{stem}.safetensors"));
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    // Present in any form (even a FIFO): read_config refuses what is not a
    // regular file instead of silently falling back to the single file.
    if std::fs::symlink_metadata(&index).is_ok() {
        #[derive(Deserialize)]
        struct IndexFile {
            weight_map: BTreeMap<String, String>,
        }
        let idx: IndexFile = read_config(&index)?;
        if idx.weight_map.is_empty() {
            return Err(Error::bad_checkpoint(&index, "weight_map is empty"));
        }
        let mut files: Vec<PathBuf> = Vec::new();
        let mut positions: HashMap<String, usize> = HashMap::new();
        let mut assigned = HashMap::with_capacity(idx.weight_map.len());
        for (name, shard) in idx.weight_map {
            let inside = !shard.is_empty()
                && Path::new(&shard)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
            if !inside {
                return Err(Error::bad_checkpoint(
                    &index,
                    format!(
                        "weight_map puts tensor `{name}` in `{}`, outside the component folder; accepted: file names inside it",
                        clip(&shard)
                    ),
                ));
            }
            let next = files.len();
            let pos = *positions.entry(shard.clone()).or_insert(next);
            if pos == next {
                files.push(dir.join(&shard));
            }
            assigned.insert(name, pos);
        }
        for p in &files {
            match std::fs::metadata(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::io(
                        p,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("shard listed in {} is missing", index.display()),
                        ),
                    ));
                }
                Err(e) => return Err(Error::io(p, e)),
                Ok(_) => {}
            }
        }
        Ok(WeightLayout {
            files,
            index: Some(ShardIndex {
                path: index,
                assigned,
            }),
        })
    } else if std::fs::symlink_metadata(&single).is_ok() {
        Ok(WeightLayout {
            files: vec![single],
            index: None,
        })
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

/// Largest safetensors header accepted, the format's own limit; published
/// shards have headers of about 100 KiB.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes read from a weight file at a time while converting a tensor.
const READ_CHUNK: usize = 4 << 20;

/// The stored dtypes weights may have; all are floats, converted to the
/// compute dtype as they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredDType {
    F64,
    F32,
    F16,
    BF16,
}

impl StoredDType {
    const ACCEPTED: &str = "F32, F16, BF16, F64";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F64" => Self::F64,
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F64 => 8,
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

/// One tensor as a safetensors header describes it.
struct StoredTensor {
    file: usize,
    dtype: StoredDType,
    shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    start: u64,
    len: u64,
}

/// Reads and checks a safetensors header the way the safetensors library
/// does (contiguous data exactly filling the file after the header, each
/// tensor's bytes matching its shape and dtype), with messages naming the
/// tensor at fault.
fn read_header(path: &Path, file: &File, file_len: u64) -> Result<Vec<(String, StoredTensor)>> {
    let bad = |msg: String| Error::bad_checkpoint(path, msg);
    let mut len_buf = [0u8; 8];
    file.read_exact_at(&mut len_buf, 0)
        .map_err(|_| bad("not a safetensors file: shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_buf);
    if header_len > file_len - 8 {
        return Err(bad(format!(
            "truncated or not a safetensors file: header claims {header_len} bytes, file has {file_len}"
        )));
    }
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "safetensors header of {header_len} bytes; accepted: at most {MAX_HEADER_BYTES}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|e| Error::io(path, e))?;
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("unreadable safetensors header: {e}")))?;

    #[derive(Deserialize)]
    struct Entry {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: [u64; 2],
    }
    let data_start = 8 + header_len;
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let e: Entry = serde_json::from_value(value)
            .map_err(|err| bad(format!("tensor `{name}`: unreadable header entry: {err}")))?;
        let dtype = StoredDType::parse(&e.dtype).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` has dtype {}; accepted: {}",
                clip(&e.dtype),
                StoredDType::ACCEPTED
            ))
        })?;
        let bytes = e
            .shape
            .iter()
            .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` has shape {:?}, too large to address",
                    e.shape
                ))
            })?;
        let [s, end] = e.data_offsets;
        if end < s || end - s != bytes as u64 {
            return Err(bad(format!(
                "tensor `{name}` has data_offsets [{s}, {end}], but shape {:?} of {dtype:?} takes {bytes} bytes",
                e.shape
            )));
        }
        tensors.push((
            name,
            StoredTensor {
                file: 0,
                dtype,
                shape: e.shape,
                start: data_start + s,
                len: bytes as u64,
            },
        ));
    }
    tensors.sort_by_key(|(_, t)| (t.start, t.len));
    let mut expected = data_start;
    let mut previous: Option<&str> = None;
    for (name, t) in &tensors {
        if t.start < expected {
            let other = previous.unwrap_or_default();
            return Err(bad(format!(
                "tensor `{name}` overlaps tensor `{other}` in the data section"
            )));
        }
        if t.start > expected {
            return Err(bad(format!(
                "{} bytes before tensor `{name}` belong to no tensor",
                t.start - expected
            )));
        }
        expected = t.start + t.len;
        previous = Some(name);
    }
    let (need, hold) = (expected - data_start, file_len - data_start);
    if need > hold {
        return Err(bad(format!(
            "truncated: tensors need {need} bytes of data, file holds {hold}"
        )));
    }
    if need < hold {
        return Err(bad(format!(
            "{} bytes after the last tensor belong to no tensor",
            hold - need
        )));
    }
    Ok(tensors)
}

/// Tensors `transformers` may save next to the one they are tied to (the
/// same parameter under two names): `(copy, source)`. A copy is not read,
/// and not refused as unused when its source was read with its shape.
const TIED_COPIES: [(&str, &str); 1] = [("encoder.embed_tokens.weight", "shared.weight")];

/// A component's weight files with every tensor's header entry, and which
/// tensors the model has read.
struct Weights {
    files: Vec<(PathBuf, File)>,
    /// Where a missing tensor is reported: the shard index or the single file.
    origin: PathBuf,
    tensors: HashMap<String, StoredTensor>,
    used: Mutex<HashSet<String>>,
}

impl Weights {
    fn open(dir: &Path, stem: &str) -> Result<Self> {
        let layout = weight_layout(dir, stem)?;
        let mut files = Vec::with_capacity(layout.files.len());
        let mut tensors = HashMap::new();
        for (i, path) in layout.files.iter().enumerate() {
            let (file, len) = open_regular(path)?;
            for (name, mut t) in read_header(path, &file, len)? {
                if let Some(index) = &layout.index {
                    match index.assigned.get(&name) {
                        Some(&j) if j == i => {}
                        Some(&j) => {
                            return Err(Error::bad_checkpoint(
                                path,
                                format!(
                                    "holds tensor `{name}`, which {} assigns to {}",
                                    file_name(&index.path),
                                    file_name(&layout.files[j])
                                ),
                            ));
                        }
                        None => {
                            return Err(Error::bad_checkpoint(
                                path,
                                format!(
                                    "holds tensor `{name}`, which {} does not list",
                                    file_name(&index.path)
                                ),
                            ));
                        }
                    }
                }
                t.file = i;
                tensors.insert(name, t);
            }
            files.push((path.clone(), file));
        }
        let origin = match layout.index {
            Some(index) => {
                let missing = index
                    .assigned
                    .iter()
                    .filter(|(name, _)| !tensors.contains_key(*name))
                    .min();
                if let Some((name, &j)) = missing {
                    return Err(Error::bad_checkpoint(
                        &index.path,
                        format!(
                            "assigns tensor `{name}` to {}, which does not hold it",
                            file_name(&files[j].0)
                        ),
                    ));
                }
                index.path
            }
            None => files[0].0.clone(),
        };
        Ok(Self {
            files,
            origin,
            tensors,
            used: Mutex::new(HashSet::new()),
        })
    }

    /// Reads tensor `name` as `dtype` onto `device`, after checking its
    /// stored shape against `expected` (when given).
    fn load(
        &self,
        name: &str,
        expected: Option<&Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            Error::bad_checkpoint(&self.origin, format!("tensor `{name}` is missing"))
        })?;
        let path = &self.files[t.file].0;
        if let Some(s) = expected
            && s.dims() != t.shape.as_slice()
        {
            return Err(Error::bad_checkpoint(
                path,
                format!(
                    "tensor `{name}` is stored as {:?}, the config expects {:?}",
                    t.shape,
                    s.dims()
                ),
            ));
        }
        let tensor = match dtype {
            DType::F32 => self.read::<f32>(name, t)?,
            DType::F64 => self.read::<f64>(name, t)?,
            DType::F16 => self.read::<f16>(name, t)?,
            DType::BF16 => self.read::<bf16>(name, t)?,
            other => {
                return Err(Error::invalid(format!(
                    "weights cannot be loaded as {other:?}; accepted: F32, F16, BF16, F64"
                )));
            }
        };
        self.used.lock().insert(name.to_string());
        if device.is_cpu() {
            Ok(tensor)
        } else {
            Ok(tensor.to_device(device)?)
        }
    }

    /// Reads a tensor's data in chunks, converting each to `T` into one
    /// buffer whose allocation may fail without aborting.
    fn read<T: Element>(&self, name: &str, t: &StoredTensor) -> Result<Tensor> {
        let (path, file) = &self.files[t.file];
        let n = t.len as usize / t.dtype.size();
        let mut out: Vec<T> = Vec::new();
        out.try_reserve_exact(n).map_err(|_| {
            Error::OutOfMemory(format!(
                "{} bytes for tensor `{name}` of {}",
                n.saturating_mul(std::mem::size_of::<T>()),
                path.display()
            ))
        })?;
        let mut buf = vec![0u8; READ_CHUNK.min(t.len as usize)];
        let end = t.start + t.len;
        let mut pos = t.start;
        while pos < end {
            let k = (end - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..k], pos)
                .map_err(|e| Error::io(path, e))?;
            decode(t.dtype, &buf[..k], &mut out);
            pos += k as u64;
        }
        Ok(Tensor::from_vec(out, t.shape.clone(), &Device::Cpu)?)
    }

    /// Refuses tensors the model did not read: they mean the config does not
    /// describe these weights (`num_layers` too small, a bias switched off).
    fn check_all_used(&self) -> Result<()> {
        let used = self.used.lock();
        let tied_copy = |name: &str| {
            TIED_COPIES.iter().any(|&(copy, source)| {
                name == copy
                    && used.contains(source)
                    && self.tensors[source].shape == self.tensors[copy].shape
            })
        };
        let mut unused: Vec<&String> = self
            .tensors
            .keys()
            .filter(|n| !used.contains(n.as_str()) && !tied_copy(n))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        unused.sort();
        let path = &self.files[self.tensors[unused[0]].file].0;
        let shown: Vec<String> = unused.iter().take(3).map(|n| format!("`{n}`")).collect();
        let more = match unused.len() {
            n if n > 3 => format!(" and {} more", n - 3),
            _ => String::new(),
        };
        Err(Error::bad_checkpoint(
            path,
            format!(
                "holds tensors that the model config.json describes does not use ({}): {}{more}",
                unused.len(),
                shown.join(", ")
            ),
        ))
    }
}

/// The compute dtypes weights are converted to, each conversion rounding
/// once, as candle's `to_dtype` does.
trait Element: WithDType {
    fn from_f32(v: f32) -> Self;
    fn from_f16(v: f16) -> Self {
        Self::from_f32(v.to_f32())
    }
    fn from_bf16(v: bf16) -> Self {
        Self::from_f32(v.to_f32())
    }
}

impl Element for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for f64 {
    fn from_f32(v: f32) -> Self {
        v as f64
    }
}

impl Element for f16 {
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn from_f16(v: f16) -> Self {
        v
    }
}

impl Element for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn from_bf16(v: bf16) -> Self {
        v
    }
}

/// Appends the little-endian values of `bytes` (whole elements) to `out`.
fn decode<T: Element>(dtype: StoredDType, bytes: &[u8], out: &mut Vec<T>) {
    match dtype {
        StoredDType::F64 => out.extend(
            bytes
                .as_chunks::<8>()
                .0
                .iter()
                .map(|b| T::from_f64(f64::from_le_bytes(*b))),
        ),
        StoredDType::F32 => out.extend(
            bytes
                .as_chunks::<4>()
                .0
                .iter()
                .map(|b| T::from_f32(f32::from_le_bytes(*b))),
        ),
        StoredDType::F16 => out.extend(
            bytes
                .as_chunks::<2>()
                .0
                .iter()
                .map(|b| T::from_f16(f16::from_bits(u16::from_le_bytes(*b)))),
        ),
        StoredDType::BF16 => out.extend(
            bytes
                .as_chunks::<2>()
                .0
                .iter()
                .map(|b| T::from_bf16(bf16::from_bits(u16::from_le_bytes(*b)))),
        ),
    }
}

/// The `VarBuilder` backend over [`Weights`].
struct Tracked(Arc<Weights>);

impl SimpleBackend for Tracked {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .load(name, Some(&s), dtype, dev)
            .map_err(Error::into_candle)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0
            .load(name, None, dtype, dev)
            .map_err(Error::into_candle)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }
}

/// Loads a model from a component's weights (`<stem>.safetensors` or its
/// shards) with `load`, converting the stored tensors to `dtype` whatever
/// precision they were stored in. Every tensor's shape is checked before
/// its data is read, and weights the model did not read are refused.
pub fn load_weights<M>(
    dir: &Path,
    stem: &str,
    dtype: DType,
    device: &Device,
    load: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<M>,
) -> Result<M> {
    let weights = Arc::new(Weights::open(dir, stem)?);
    let vb = VarBuilder::from_backend(Box::new(Tracked(weights.clone())), dtype, device.clone());
    match load(vb) {
        Ok(model) => {
            weights.check_all_used()?;
            Ok(model)
        }
        Err(e) => Err(Error::take_raised(&e).unwrap_or_else(|| {
            // Only the message: a backtrace (RUST_BACKTRACE) follows it.
            let msg = e.to_string();
            Error::bad_checkpoint(dir, msg.lines().next().unwrap_or_default())
        })),
    }
}

/// Values stored in a component's weights (`<stem>.safetensors` or its
/// shards), read from the headers alone: what the model takes in memory,
/// times the compute dtype's size.
pub fn weight_count(dir: &Path, stem: &str) -> Result<u64> {
    Ok(tensor_counts(dir, stem)?.iter().map(|(_, n)| n).sum())
}

/// Values stored in each tensor of a component's weights, by name, read
/// from the headers alone.
pub fn tensor_counts(dir: &Path, stem: &str) -> Result<Vec<(String, u64)>> {
    let weights = Weights::open(dir, stem)?;
    Ok(weights
        .tensors
        .iter()
        .map(|(name, t)| (name.clone(), t.shape.iter().product::<usize>() as u64))
        .collect())
}
