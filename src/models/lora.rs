//! LoRA as PEFT's `LoraLayer` applies it to a linear layer: unfused, the
//! layer's output plus `scale * B(A(x))` per adapter (in the order the
//! adapters were set); fused, the weight `W + scale * (B @ A)` per adapter
//! in the same order, which PEFT's `merge` computes. `scale` is
//! `weight * lora_alpha / r` (`set_adapters` times the file's scaling).
//! Reading files is [`crate::loaders::lora_pipeline`]'s job; this is what a
//! transformer block does with the result.

use candle_core::{Module, Result, Tensor};
use candle_nn::Linear;

/// The linear layers of a CogVideoX block that take adapters, named as in
/// diffusers' module paths (`transformer_blocks.<i>.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraSite {
    ToQ,
    ToK,
    ToV,
    ToOut,
    FfIn,
    FfOut,
    Norm1,
    Norm2,
}

impl LoraSite {
    const ALL: [LoraSite; 8] = [
        LoraSite::ToQ,
        LoraSite::ToK,
        LoraSite::ToV,
        LoraSite::ToOut,
        LoraSite::FfIn,
        LoraSite::FfOut,
        LoraSite::Norm1,
        LoraSite::Norm2,
    ];

    /// The module's path inside its block.
    pub fn name(self) -> &'static str {
        match self {
            LoraSite::ToQ => "attn1.to_q",
            LoraSite::ToK => "attn1.to_k",
            LoraSite::ToV => "attn1.to_v",
            LoraSite::ToOut => "attn1.to_out.0",
            LoraSite::FfIn => "ff.net.0.proj",
            LoraSite::FfOut => "ff.net.2",
            LoraSite::Norm1 => "norm1.linear",
            LoraSite::Norm2 => "norm2.linear",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// `(in, out)` features of the layer for inner dim `dim` and time
    /// embedding width `temb`.
    pub fn features(self, dim: usize, temb: usize) -> (usize, usize) {
        match self {
            LoraSite::ToQ | LoraSite::ToK | LoraSite::ToV | LoraSite::ToOut => (dim, dim),
            LoraSite::FfIn => (dim, 4 * dim),
            LoraSite::FfOut => (4 * dim, dim),
            LoraSite::Norm1 | LoraSite::Norm2 => (temb, 6 * dim),
        }
    }
}

/// One adapter's matrices on one layer: `a` `[r, in]`, `b` `[out, r]`, in
/// the model's dtype and device, and the scale it is applied with.
#[derive(Debug, Clone)]
pub struct LoraTerm {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

/// The adapters of one block, per layer, in application order.
#[derive(Debug, Clone, Default)]
pub struct BlockLora {
    terms: [Vec<LoraTerm>; 8],
}

impl BlockLora {
    pub fn push(&mut self, site: LoraSite, term: LoraTerm) {
        self.terms[site as usize].push(term);
    }

    pub fn terms(&self, site: LoraSite) -> &[LoraTerm] {
        &self.terms[site as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.terms.iter().all(Vec::is_empty)
    }

    /// The layers with terms, and their terms.
    pub fn sites(&self) -> impl Iterator<Item = (LoraSite, &[LoraTerm])> {
        LoraSite::ALL
            .into_iter()
            .map(|s| (s, self.terms(s)))
            .filter(|(_, t)| !t.is_empty())
    }
}

/// `y + scale * B(A(x))` for each term, in order (PEFT's unfused forward:
/// the low-rank product is scaled, then added).
pub fn add_unfused(y: Tensor, x: &Tensor, terms: &[LoraTerm]) -> Result<Tensor> {
    let mut y = y;
    for t in terms {
        let down = Linear::new(t.a.clone(), None).forward(x)?;
        let up = Linear::new(t.b.clone(), None).forward(&down)?;
        y = (y + (up * t.scale)?)?;
    }
    Ok(y)
}

/// `lin`'s weight with the terms merged in, in order (PEFT's `merge`:
/// `W += (B @ A) * scale` per adapter), as a contiguous `[out, in]` tensor.
pub fn fused_weight(lin: &Linear, terms: &[LoraTerm]) -> Result<Tensor> {
    let mut w = lin.weight().contiguous()?;
    for t in terms {
        w = (w + (t.b.matmul(&t.a)? * t.scale)?)?;
    }
    Ok(w)
}

/// `lin` with the terms fused into its weight; `lin` itself when there
/// are none.
pub fn fused_linear(lin: &Linear, terms: &[LoraTerm]) -> Result<Linear> {
    if terms.is_empty() {
        return Ok(lin.clone());
    }
    Ok(Linear::new(fused_weight(lin, terms)?, lin.bias().cloned()))
}
