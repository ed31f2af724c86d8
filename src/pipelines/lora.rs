//! A pipeline's LoRA adapters, as diffusers' `load_lora_weights`,
//! `set_adapters`, `delete_adapters`, `fuse_lora` and `unfuse_lora` manage
//! them. Each call takes a snapshot of the setting when it starts, so a
//! change made meanwhile (from another thread) applies from the next call.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use candle_core::DType;

use super::{Pipeline, Progress};
use crate::checkpoint::Fnv;
use crate::error::{Error, Result};
use crate::loaders::lora_pipeline::{LoraAdapter, transformer_lora};
use crate::models::lora::LoraSite;
use crate::models::transformers::{CogVideoXTransformer3DModel, TransformerLora};

/// The adapters in effect and how they are applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraSetting {
    /// Active adapters by name with their weights, in application order.
    pub adapters: Vec<(String, f64)>,
    /// Merged into the weights ([`Pipeline::fuse_lora`]) rather than added
    /// beside the linear layers.
    pub fused: bool,
}

/// The LoRA setting a call ran with ([`Progress::lora_report`]): the
/// snapshot taken when it started, whatever changed meanwhile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraReport {
    /// [`Pipeline::lora_hash`] of the setting: 0 when no adapter changed
    /// the output.
    pub hash: u64,
    pub setting: LoraSetting,
    /// Bytes the adapters held while the call ran: the allocations behind
    /// the loaded adapters, their copies in the compute dtype and the fused
    /// layers kept for the call, each allocation once (blocks fused as they
    /// are read, with streamed or per-component residency, are not held).
    /// [`Pipeline::lora_estimate_bytes`] bounds it.
    pub held_bytes: u64,
}

#[derive(Default)]
pub(crate) struct LoraState {
    loaded: BTreeMap<String, Arc<LoraAdapter>>,
    setting: LoraSetting,
    /// What calls apply for `setting`, made by the first call after a change.
    prepared: Option<Arc<TransformerLora>>,
}

impl LoraState {
    /// The adapters that change the output: weight 0 changes nothing.
    fn effective(&self) -> Vec<(&LoraAdapter, f64)> {
        self.setting
            .adapters
            .iter()
            .filter(|(_, w)| *w != 0.0)
            .map(|(n, w)| (self.loaded[n].as_ref(), *w))
            .collect()
    }

    fn changed(&mut self) {
        self.prepared = None;
    }
}

/// Longest adapter name accepted.
const MAX_NAME: usize = 256;

impl Pipeline {
    /// Reads the LoRA file at `path` under `name` and makes it the active
    /// adapter at weight 1 (diffusers' `load_lora_weights`: the adapter
    /// loaded last is the one in use until [`Self::set_adapters`]). A name
    /// already in use, or a file that does not fit this transformer, is an
    /// error and changes nothing.
    pub fn load_lora(&self, path: impl AsRef<Path>, name: &str) -> Result<()> {
        check_name(name)?;
        if self.lora.lock().loaded.contains_key(name) {
            return Err(Error::invalid(format!(
                "a LoRA adapter named `{name}` is already loaded"
            )));
        }
        let adapter = Arc::new(LoraAdapter::from_file(path, &self.transformer_cfg)?);
        let mut state = self.lora.lock();
        if state.loaded.contains_key(name) {
            return Err(Error::invalid(format!(
                "a LoRA adapter named `{name}` is already loaded"
            )));
        }
        state.loaded.insert(name.to_string(), adapter);
        state.setting.adapters = vec![(name.to_string(), 1.0)];
        state.changed();
        Ok(())
    }

    /// Sets the active adapters and their weights (diffusers'
    /// `set_adapters(names, weights)`); an empty list applies none. Every
    /// name must be loaded, once, with a finite weight; weight 0 is the
    /// same as leaving the adapter out.
    pub fn set_adapters(&self, adapters: &[(&str, f64)]) -> Result<()> {
        let mut state = self.lora.lock();
        for (i, (name, weight)) in adapters.iter().enumerate() {
            if !state.loaded.contains_key(*name) {
                return Err(Error::invalid(format!("no LoRA adapter named `{name}`")));
            }
            if adapters[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::invalid(format!("LoRA adapter `{name}` given twice")));
            }
            if !weight.is_finite() {
                return Err(Error::invalid(format!(
                    "LoRA adapter `{name}`: weight {weight} is not finite"
                )));
            }
        }
        state.setting.adapters = adapters.iter().map(|(n, w)| (n.to_string(), *w)).collect();
        state.changed();
        Ok(())
    }

    /// Unloads an adapter (diffusers' `delete_adapters`), dropping it from
    /// the active ones.
    pub fn remove_lora(&self, name: &str) -> Result<()> {
        let mut state = self.lora.lock();
        if state.loaded.remove(name).is_none() {
            return Err(Error::invalid(format!("no LoRA adapter named `{name}`")));
        }
        state.setting.adapters.retain(|(n, _)| n != name);
        state.changed();
        Ok(())
    }

    /// Applies the active adapters merged into the transformer's weights
    /// from the next call on (diffusers' `fuse_lora`): faster steps, at the
    /// memory of a copy of every adapted layer while the transformer is
    /// kept; streamed blocks are fused as they are read.
    pub fn fuse_lora(&self) {
        let mut state = self.lora.lock();
        if !state.setting.fused {
            state.setting.fused = true;
            state.changed();
        }
    }

    /// Back to unfused adapters. The base weights were never changed, so
    /// the model without adapters is bit for bit the one loaded.
    pub fn unfuse_lora(&self) {
        let mut state = self.lora.lock();
        if state.setting.fused {
            state.setting.fused = false;
            state.changed();
        }
    }

    /// The current setting.
    pub fn lora_setting(&self) -> LoraSetting {
        self.lora.lock().setting.clone()
    }

    /// The names of the loaded adapters, sorted.
    pub fn loaded_loras(&self) -> Vec<String> {
        self.lora.lock().loaded.keys().cloned().collect()
    }

    /// A hash of what the current setting changes in the output: the
    /// content of each adapter of non-zero weight, its weight and order,
    /// and fused or not; 0 when no adapter changes anything. Equal values,
    /// the same outputs (for caches to key on).
    pub fn lora_hash(&self) -> u64 {
        lora_hash(&self.lora.lock())
    }

    /// [`Self::lora_hash`] and [`Self::lora_setting`], read together.
    pub fn lora_state(&self) -> (u64, LoraSetting) {
        let state = self.lora.lock();
        (lora_hash(&state), state.setting.clone())
    }

    /// The memory estimate's share for LoRA (bytes): the loaded adapters as
    /// read (f32), the active ones' matrices in the compute dtype and, fused,
    /// a copy of every adapted layer's weight (with streamed or
    /// per-component residency, those of the largest block: blocks are fused
    /// as they are read). [`LoraReport::held_bytes`] is what a call held.
    pub fn lora_estimate_bytes(&self) -> u64 {
        let (kept, call) = self.lora_bytes();
        kept + call
    }

    /// [`Self::lora_estimate_bytes`] in two: what is held between calls
    /// (the loaded adapters and, once a kept transformer's setting is
    /// prepared, what calls apply), and what the next call allocates.
    pub(crate) fn lora_bytes(&self) -> (u64, u64) {
        let state = self.lora.lock();
        let loaded: u64 = state.loaded.values().map(|a| a.bytes(DType::F32)).sum();
        let effective = state.effective();
        let active: u64 = effective.iter().map(|(a, _)| a.bytes(self.dtype)).sum();
        let fused = if state.setting.fused {
            let cfg = &self.transformer_cfg;
            let (dim, temb) = (cfg.inner_dim(), cfg.time_embed_dim);
            let layers: BTreeSet<(usize, LoraSite)> = effective
                .iter()
                .flat_map(|(a, _)| a.modules().iter().map(|m| (m.block, m.site)))
                .collect();
            let mut per_block: BTreeMap<usize, u64> = BTreeMap::new();
            for (block, site) in layers {
                let (i, o) = site.features(dim, temb);
                *per_block.entry(block).or_default() += (i * o * self.dtype.size_in_bytes()) as u64;
            }
            match self.transformer {
                super::residency::Component::Kept(_) => per_block.values().sum(),
                _ => per_block.values().copied().max().unwrap_or(0),
            }
        } else {
            0
        };
        match state.prepared {
            Some(_) => (loaded + active + fused, 0),
            None => (loaded, active + fused),
        }
    }

    /// The adapters a call applies: a snapshot of the setting, `None` when
    /// nothing is applied; the snapshot goes into the call's report.
    pub(crate) fn lora_for_call(
        &self,
        transformer: &CogVideoXTransformer3DModel,
        progress: &mut Progress,
    ) -> Result<Option<Arc<TransformerLora>>> {
        let mut state = self.lora.lock();
        let mut report = LoraReport {
            hash: lora_hash(&state),
            setting: state.setting.clone(),
            held_bytes: 0,
        };
        let loaded: Vec<&candle_core::Tensor> = state
            .loaded
            .values()
            .flat_map(|a| a.modules().iter().flat_map(|m| [&m.a, &m.b]))
            .collect();
        report.held_bytes = crate::memory::held_bytes(loaded.iter().copied());
        let effective = state.effective();
        if effective.is_empty() {
            progress.set_lora_report(report);
            return Ok(None);
        }
        if let Some(p) = &state.prepared {
            report.held_bytes = crate::memory::held_bytes(loaded.into_iter().chain(p.tensors()));
            progress.set_lora_report(report);
            return Ok(Some(p.clone()));
        }
        let mut lora = transformer_lora(
            &effective,
            self.transformer_cfg.num_layers,
            transformer.dtype(),
            transformer.device(),
            state.setting.fused,
        )?;
        // A transformer loaded per call is fused block by block as it runs:
        // fused copies kept here would outlive it.
        let kept = matches!(self.transformer, super::residency::Component::Kept(_));
        if kept {
            lora.fuse_kept(transformer)?;
        }
        report.held_bytes = crate::memory::held_bytes(loaded.into_iter().chain(lora.tensors()));
        progress.set_lora_report(report);
        let lora = Arc::new(lora);
        if kept {
            state.prepared = Some(lora.clone());
        }
        Ok(Some(lora))
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "LoRA adapter name {name:?}: 1 to {MAX_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

fn lora_hash(state: &LoraState) -> u64 {
    let effective = state.effective();
    if effective.is_empty() {
        return 0;
    }
    let mut h = Fnv::new();
    h.field(&[u8::from(state.setting.fused)]);
    for (adapter, weight) in effective {
        h.field(&adapter.content_hash().to_le_bytes());
        h.field(&weight.to_le_bytes());
    }
    h.0.max(1)
}
