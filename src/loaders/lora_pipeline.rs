//! Reading CogVideoX LoRA files as diffusers' `CogVideoXLoraLoaderMixin`
//! (`load_lora_weights` -> `load_lora_adapter` -> PEFT) reads them, and
//! turning a set of adapters with weights into what the transformer applies.
//!
//! Accepted (safetensors only):
//! - keys `transformer.<module>.lora_A.weight` / `.lora_B.weight`, as
//!   `CogVideoXPipeline.save_lora_weights` writes them, or the same without
//!   the `transformer.` prefix (as `get_peft_model_state_dict` returns them);
//! - the old diffusers spellings that `convert_unet_state_dict_to_peft`
//!   renames: `to_q_lora.down` -> `to_q.lora_A`, `to_out_lora.up` ->
//!   `to_out.0.lora_B`, `lora.down` -> `lora_A`, `lora.up` -> `lora_B`;
//! - the scaling PEFT applies: `lora_alpha / r` (or `/ sqrt(r)` with
//!   `use_rslora`) from the header's `lora_adapter_metadata` (PEFT's
//!   LoraConfig, its keys prefixed like the tensors), with `alpha_pattern`
//!   and `rank_pattern`; without the metadata `lora_alpha = r`, as diffusers
//!   does for a CogVideoX file.
//!
//! Modules: the linear layers of the transformer blocks (attention q/k/v/out,
//! feed-forward, the norms' modulation). Anything else (other modules, DoRA,
//! LoRA biases, text-encoder keys, a rank of 0, a shape that does not fit
//! the loaded transformer, a non-finite value, a damaged file) is an error
//! naming the key, and nothing is kept from the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::checkpoint::Fnv;
use crate::error::{Error, Result};
use crate::models::lora::{BlockLora, LoraSite, LoraTerm};
use crate::models::transformers::{TransformerConfig, TransformerLora};

/// The largest LoRA file read (a rank-256 adapter on every linear layer of
/// a 5B model is about 3 GB in f32).
pub const MAX_LORA_BYTES: u64 = 8 << 30;

/// The old diffusers spellings `convert_unet_state_dict_to_peft` renames,
/// in its order (the first that matches is applied).
const OLD_SPELLINGS: [(&str, &str); 10] = [
    (".to_out_lora.up", ".to_out.0.lora_B"),
    (".to_out_lora.down", ".to_out.0.lora_A"),
    (".to_q_lora.down", ".to_q.lora_A"),
    (".to_q_lora.up", ".to_q.lora_B"),
    (".to_k_lora.down", ".to_k.lora_A"),
    (".to_k_lora.up", ".to_k.lora_B"),
    (".to_v_lora.down", ".to_v.lora_A"),
    (".to_v_lora.up", ".to_v.lora_B"),
    (".lora.up", ".lora_B"),
    (".lora.down", ".lora_A"),
];

/// One adapter's matrices on one layer, f32 on the CPU as read.
#[derive(Debug, Clone)]
pub struct LoraModule {
    pub block: usize,
    pub site: LoraSite,
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`
    pub b: Tensor,
    /// PEFT's `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA).
    pub scaling: f64,
}

/// A LoRA file, read and checked against a transformer's configuration.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    path: PathBuf,
    modules: Vec<LoraModule>,
    content_hash: u64,
}

impl LoraAdapter {
    /// Reads the adapter at `path` for a transformer of configuration `cfg`.
    pub fn from_file(path: impl AsRef<Path>, cfg: &TransformerConfig) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::checkpoint::read_regular_file(path, MAX_LORA_BYTES)?;
        Self::from_bytes(&bytes, path, cfg)
    }

    /// [`Self::from_file`] on the file's bytes (`path` names it in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path, cfg: &TransformerConfig) -> Result<Self> {
        let bad = |msg: String| Error::bad_checkpoint(path, format!("LoRA: {msg}"));
        check_declared_sizes(bytes).map_err(bad)?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let mut names: Vec<&str> = st.names();
        names.sort_unstable();
        if names.is_empty() {
            return Err(bad("the file holds no tensors".into()));
        }
        let prefixed = names
            .iter()
            .filter(|k| k.starts_with("transformer."))
            .count();
        if prefixed != 0 && prefixed != names.len() {
            let odd = names
                .iter()
                .find(|k| !k.starts_with("transformer."))
                .unwrap();
            return Err(bad(format!(
                "key `{odd}` has no `transformer.` prefix while others do (diffusers would ignore it)"
            )));
        }
        let config = PeftConfig::read(header.metadata().as_ref(), prefixed != 0).map_err(bad)?;

        // module path -> (lora_A, lora_B), each with the key it came from
        type Pair<'a> = (Option<(&'a str, Tensor)>, Option<(&'a str, Tensor)>);
        let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
        for &key in &names {
            let view = st.tensor(key).map_err(|e| bad(format!("`{key}`: {e}")))?;
            let inner = key.strip_prefix("transformer.").unwrap_or(key);
            let renamed = peft_key(inner);
            let (module, is_a) = if let Some(m) = renamed.strip_suffix(".lora_A.weight") {
                (m, true)
            } else if let Some(m) = renamed.strip_suffix(".lora_B.weight") {
                (m, false)
            } else {
                return Err(bad(format!(
                    "`{key}` is not a LoRA weight ({})",
                    not_lora(&renamed)
                )));
            };
            let t = to_tensor(key, view.dtype(), view.shape(), view.data()).map_err(bad)?;
            let slot = pairs.entry(module.to_string()).or_default();
            let slot = if is_a { &mut slot.0 } else { &mut slot.1 };
            if slot.is_some() {
                return Err(bad(format!(
                    "`{key}` gives module `{module}` a second matrix"
                )));
            }
            *slot = Some((key, t));
        }

        let dim = cfg.inner_dim();
        let mut modules = Vec::with_capacity(pairs.len());
        for (module, pair) in pairs {
            let (Some((ka, a)), Some((kb, b))) = pair else {
                return Err(bad(format!(
                    "module `{module}` has only one of lora_A / lora_B"
                )));
            };
            let (block, site) =
                block_site(&module, cfg.num_layers).map_err(|m| bad(format!("`{ka}`: {m}")))?;
            let (fan_in, fan_out) = site.features(dim, cfg.time_embed_dim);
            let (r, ain) = a
                .dims2()
                .map_err(|_| bad(format!("`{ka}` is not a matrix")))?;
            let (bout, rb) = b
                .dims2()
                .map_err(|_| bad(format!("`{kb}` is not a matrix")))?;
            if r == 0 || rb == 0 {
                return Err(bad(format!("`{ka}`: rank 0")));
            }
            if r != rb {
                return Err(bad(format!("`{kb}` has rank {rb} but `{ka}` rank {r}")));
            }
            if ain != fan_in {
                return Err(bad(format!(
                    "`{ka}` is [{r}, {ain}] but the layer takes {fan_in} features"
                )));
            }
            if bout != fan_out {
                return Err(bad(format!(
                    "`{kb}` is [{bout}, {r}] but the layer gives {fan_out} features"
                )));
            }
            let scaling = config
                .scaling(&module, r)
                .map_err(|m| bad(format!("`{ka}`: {m}")))?;
            modules.push(LoraModule {
                block,
                site,
                a,
                b,
                scaling,
            });
        }
        let mut h = Fnv::new();
        h.write(bytes);
        Ok(Self {
            path: path.to_path_buf(),
            modules,
            content_hash: h.0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn modules(&self) -> &[LoraModule] {
        &self.modules
    }

    /// FNV-1a of the file's bytes: the same adapter content, the same value.
    pub fn content_hash(&self) -> u64 {
        self.content_hash
    }

    /// Bytes the adapter's matrices take in `dtype`.
    pub fn bytes(&self, dtype: DType) -> u64 {
        let n: usize = self
            .modules
            .iter()
            .map(|m| m.a.elem_count() + m.b.elem_count())
            .sum();
        (n * dtype.size_in_bytes()) as u64
    }
}

/// What a forward pass applies for `adapters` at their weights, in order:
/// per block, each adapter's matrices in `dtype` on `device` with scale
/// `weight * scaling`. Adapters of weight 0 are left out, so they change
/// nothing (bit for bit).
pub fn transformer_lora(
    adapters: &[(&LoraAdapter, f64)],
    num_layers: usize,
    dtype: DType,
    device: &Device,
    fused: bool,
) -> Result<TransformerLora> {
    let mut blocks = vec![BlockLora::default(); num_layers];
    for (adapter, weight) in adapters {
        if !weight.is_finite() {
            return Err(Error::invalid(format!(
                "LoRA weight {weight} is not finite"
            )));
        }
        if *weight == 0.0 {
            continue;
        }
        for m in &adapter.modules {
            let block = blocks.get_mut(m.block).ok_or_else(|| {
                Error::invalid(format!(
                    "LoRA {} is for block {} of a {num_layers}-block model",
                    adapter.path.display(),
                    m.block
                ))
            })?;
            block.push(
                m.site,
                LoraTerm {
                    a: m.a.to_device(device)?.to_dtype(dtype)?,
                    b: m.b.to_device(device)?.to_dtype(dtype)?,
                    // PEFT's set_scale: weight * lora_alpha / r
                    scale: weight * m.scaling,
                },
            );
        }
    }
    Ok(TransformerLora::new(blocks, fused))
}

/// The largest safetensors header read (a LoRA's lists a few thousand
/// tensors).
const MAX_HEADER_BYTES: usize = 100 << 20;

/// Checks each tensor's declared size against the file before the
/// safetensors reader does, so that a truncated file or a huge declared
/// shape is reported with the tensor's name.
fn check_declared_sizes(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(len) = bytes.get(..8) else {
        return Err("not a safetensors file: shorter than its 8-byte header length".into());
    };
    let n = u64::from_le_bytes(len.try_into().unwrap());
    let available = bytes.len() - 8;
    if n > available.min(MAX_HEADER_BYTES) as u64 {
        return Err(format!(
            "not a safetensors file: a header of {n} bytes in a file of {}",
            bytes.len()
        ));
    }
    let data = available - n as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n as usize])
        .map_err(|e| format!("not a safetensors file: its header is not a JSON object: {e}"))?;
    for (key, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let dims = info["shape"]
            .as_array()
            .map(|s| s.iter().map(Value::as_u64).collect::<Option<Vec<_>>>());
        let Some(Some(dims)) = dims else {
            return Err(format!("`{key}`: no valid shape"));
        };
        let width: u64 = match info["dtype"].as_str() {
            Some("F64" | "I64" | "U64") => 8,
            Some("F32" | "I32" | "U32") => 4,
            Some("F16" | "BF16" | "I16" | "U16") => 2,
            _ => 1,
        };
        let declared = dims
            .iter()
            .try_fold(width, |acc, &d| acc.checked_mul(d))
            .filter(|&b| b <= data as u64)
            .ok_or_else(|| {
                format!(
                    "`{key}` declares shape {dims:?}, more than the file's {data} bytes of data"
                )
            })?;
        let (start, end) = (
            info["data_offsets"][0].as_u64(),
            info["data_offsets"][1].as_u64(),
        );
        let (Some(start), Some(end)) = (start, end) else {
            return Err(format!("`{key}`: no valid data_offsets"));
        };
        if end > data as u64 {
            return Err(format!(
                "`{key}`: its data lies past the end of the file (truncated?)"
            ));
        }
        if end.checked_sub(start) != Some(declared) {
            return Err(format!(
                "`{key}`: its shape and dtype take {declared} bytes, its offsets {start}..{end}"
            ));
        }
    }
    Ok(())
}

/// A key with the old spellings renamed (the first match, as diffusers).
fn peft_key(key: &str) -> String {
    for (old, new) in OLD_SPELLINGS {
        if key.contains(old) {
            return key.replace(old, new);
        }
    }
    key.to_string()
}

/// Why a key that is not a lora_A / lora_B weight is refused.
fn not_lora(key: &str) -> &'static str {
    if key.contains("dora_scale") || key.contains("lora_magnitude_vector") {
        "DoRA is not supported"
    } else if key.ends_with(".lora_B.bias") {
        "LoRA biases are not supported"
    } else if key.starts_with("text_encoder") {
        "CogVideoX LoRAs adapt only the transformer"
    } else if key.ends_with(".alpha") {
        "per-module alpha keys are not read by diffusers' CogVideoX loader"
    } else {
        "expected <module>.lora_A.weight or <module>.lora_B.weight"
    }
}

/// `transformer_blocks.<i>.<site>` -> `(i, site)`.
fn block_site(module: &str, num_layers: usize) -> std::result::Result<(usize, LoraSite), String> {
    let unknown = || {
        format!(
            "module `{module}` is not one of the transformer blocks' linear layers \
             (transformer_blocks.<i>.{{attn1.to_q, attn1.to_k, attn1.to_v, attn1.to_out.0, \
             ff.net.0.proj, ff.net.2, norm1.linear, norm2.linear}})"
        )
    };
    let rest = module
        .strip_prefix("transformer_blocks.")
        .ok_or_else(unknown)?;
    let (index, site) = rest.split_once('.').ok_or_else(unknown)?;
    let site = LoraSite::from_name(site).ok_or_else(unknown)?;
    let block: usize = index
        .parse()
        .ok()
        .filter(|i: &usize| i.to_string() == index)
        .ok_or_else(unknown)?;
    if block >= num_layers {
        return Err(format!(
            "module `{module}`: block {block} of a transformer with {num_layers} blocks"
        ));
    }
    Ok((block, site))
}

/// A tensor of the file as f32 on the CPU, checked finite.
fn to_tensor(
    key: &str,
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
) -> std::result::Result<Tensor, String> {
    let err = |e: candle_core::Error| format!("`{key}`: {e}");
    let t = match dtype {
        Dtype::F32 => Tensor::from_raw_buffer(data, DType::F32, shape, &Device::Cpu),
        Dtype::F16 => Tensor::from_raw_buffer(data, DType::F16, shape, &Device::Cpu),
        Dtype::BF16 => Tensor::from_raw_buffer(data, DType::BF16, shape, &Device::Cpu),
        Dtype::F64 => Tensor::from_raw_buffer(data, DType::F64, shape, &Device::Cpu),
        other => return Err(format!("`{key}` is {other:?}; LoRA weights are floats")),
    }
    .and_then(|t| t.to_dtype(DType::F32))
    .map_err(err)?;
    let all_finite = t
        .flatten_all()
        .and_then(|f| f.to_vec1::<f32>())
        .map_err(err)?
        .iter()
        .all(|v| v.is_finite());
    if !all_finite {
        return Err(format!("`{key}` holds a non-finite value"));
    }
    Ok(t)
}

/// The parts of PEFT's LoraConfig (from `lora_adapter_metadata`) that
/// change what a module computes; `None` without metadata (alpha = r).
struct PeftConfig {
    config: Option<LoraConfig>,
}

struct LoraConfig {
    r: f64,
    lora_alpha: f64,
    rank_pattern: Vec<(String, f64)>,
    alpha_pattern: Vec<(String, f64)>,
    use_rslora: bool,
}

impl PeftConfig {
    fn read(
        header: Option<&std::collections::HashMap<String, String>>,
        prefixed: bool,
    ) -> std::result::Result<Self, String> {
        let Some(raw) = header.and_then(|h| h.get("lora_adapter_metadata")) else {
            return Ok(Self { config: None });
        };
        let json: Value = serde_json::from_str(raw)
            .map_err(|e| format!("lora_adapter_metadata is not JSON: {e}"))?;
        let obj = json
            .as_object()
            .ok_or("lora_adapter_metadata is not a JSON object")?;
        // diffusers keeps the entries with the tensors' prefix, without it
        let field = |name: &str| -> Option<&Value> {
            if prefixed {
                obj.get(&format!("transformer.{name}"))
            } else {
                obj.get(name)
            }
        };
        let number = |name: &str| -> std::result::Result<Option<f64>, String> {
            match field(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .map(Some)
                    .ok_or_else(|| format!("lora_adapter_metadata `{name}` is not a number")),
            }
        };
        let flag = |name: &str| field(name).and_then(Value::as_bool).unwrap_or(false);
        let pattern = |name: &str| -> std::result::Result<Vec<(String, f64)>, String> {
            let Some(v) = field(name).filter(|v| !v.is_null()) else {
                return Ok(Vec::new());
            };
            let map = v
                .as_object()
                .ok_or_else(|| format!("lora_adapter_metadata `{name}` is not an object"))?;
            map.iter()
                .map(|(k, v)| {
                    let x = v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                        format!("lora_adapter_metadata `{name}` `{k}` is not a number")
                    })?;
                    if k.trim_start_matches('^').contains(['*', '+', '?', '(', '[', '|', '\\', '$']) {
                        return Err(format!(
                            "lora_adapter_metadata `{name}` `{k}`: regular-expression patterns are not supported"
                        ));
                    }
                    Ok((k.clone(), x))
                })
                .collect()
        };
        if flag("use_dora") {
            return Err("DoRA (use_dora) is not supported".into());
        }
        if flag("lora_bias") {
            return Err("LoRA biases (lora_bias) are not supported".into());
        }
        let (Some(r), Some(alpha)) = (number("r")?, number("lora_alpha")?) else {
            // no LoraConfig in it: as without metadata
            return Ok(Self { config: None });
        };
        Ok(Self {
            config: Some(LoraConfig {
                r,
                lora_alpha: alpha,
                rank_pattern: pattern("rank_pattern")?,
                alpha_pattern: pattern("alpha_pattern")?,
                use_rslora: flag("use_rslora"),
            }),
        })
    }

    /// PEFT's scaling of `module`, whose matrices have rank `rank`.
    fn scaling(&self, module: &str, rank: usize) -> std::result::Result<f64, String> {
        let Some(c) = &self.config else {
            return Ok(1.0);
        };
        let want_r = matching(&c.rank_pattern, module).unwrap_or(c.r);
        if want_r != rank as f64 {
            return Err(format!(
                "rank {rank}, but the file's LoraConfig says {want_r} for this module"
            ));
        }
        let alpha = matching(&c.alpha_pattern, module).unwrap_or(c.lora_alpha);
        let r = rank as f64;
        Ok(if c.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        })
    }
}

/// The value of the first pattern that names `module` as PEFT matches it:
/// `^name` is the whole path, `name` the path or a suffix after a dot.
fn matching(patterns: &[(String, f64)], module: &str) -> Option<f64> {
    patterns.iter().find_map(|(p, v)| {
        let hit = match p.strip_prefix('^') {
            Some(full) => module == full,
            None => module == p || module.ends_with(&format!(".{p}")),
        };
        hit.then_some(*v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_spellings_are_renamed_as_diffusers_does() {
        assert_eq!(
            peft_key("transformer_blocks.0.attn1.to_out_lora.up.weight"),
            "transformer_blocks.0.attn1.to_out.0.lora_B.weight"
        );
        assert_eq!(
            peft_key("transformer_blocks.0.ff.net.2.lora.down.weight"),
            "transformer_blocks.0.ff.net.2.lora_A.weight"
        );
        assert_eq!(
            peft_key("transformer_blocks.0.ff.net.2.lora_A.weight"),
            "transformer_blocks.0.ff.net.2.lora_A.weight"
        );
    }

    #[test]
    fn modules_are_the_blocks_linear_layers() {
        assert_eq!(
            block_site("transformer_blocks.1.attn1.to_out.0", 2),
            Ok((1, LoraSite::ToOut))
        );
        for bad in [
            "transformer_blocks.2.attn1.to_q",
            "transformer_blocks.01.attn1.to_q",
            "transformer_blocks.0.attn1.norm_q",
            "proj_out",
            "transformer_blocks.x.ff.net.2",
        ] {
            assert!(block_site(bad, 2).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_whole_names_or_suffixes() {
        let p = vec![
            ("^transformer_blocks.0.attn1.to_q".to_string(), 8.0),
            ("ff.net.2".to_string(), 4.0),
        ];
        assert_eq!(matching(&p, "transformer_blocks.0.attn1.to_q"), Some(8.0));
        assert_eq!(matching(&p, "transformer_blocks.10.attn1.to_q"), None);
        assert_eq!(matching(&p, "transformer_blocks.3.ff.net.2"), Some(4.0));
        assert_eq!(matching(&p, "transformer_blocks.3.ff.net.20"), None);
    }
}
