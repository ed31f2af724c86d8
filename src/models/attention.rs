//! Joint text-video attention (`Attention` with `CogVideoXAttnProcessor2_0`)
//! and the feed-forward (`FeedForward`, tanh GELU) of diffusers.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm, linear, linear_b};

use crate::models::embeddings::apply_rotary_emb;
use crate::models::transformers::cogvideox_transformer_3d::RotaryEmbedding;

/// Upper bound on one chunk of attention scores, in elements. Full scores
/// for the 5b model at 480x720 would be `48 x 17776^2` floats per sample
/// (about 60 GB); chunking the queries keeps the working set near 1 GiB.
pub(crate) const MAX_SCORE_ELEMENTS: usize = 1 << 28;

/// `softmax(q k^T * scale) v` over `[B, H, S, Dh]` tensors, computed in query
/// chunks so memory stays bounded for long videos. Scores and softmax run in
/// f32 whatever the activation dtype, as the fused attention kernels of
/// PyTorch accumulate.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (b, h, sq, _) = q.dims4()?;
    let sk = k.dim(2)?;
    let dtype = q.dtype();
    let kt = k.to_dtype(DType::F32)?.transpose(2, 3)?.contiguous()?;
    let vf = v.to_dtype(DType::F32)?.contiguous()?;
    let rows = (MAX_SCORE_ELEMENTS / (b * h * sk).max(1)).clamp(1, sq);
    let mut outs = Vec::with_capacity(sq.div_ceil(rows));
    let mut start = 0;
    while start < sq {
        let len = rows.min(sq - start);
        let qc = (q.narrow(2, start, len)?.to_dtype(DType::F32)? * scale)?.contiguous()?;
        let probs = candle_nn::ops::softmax_last_dim(&qc.matmul(&kt)?)?;
        outs.push(probs.matmul(&vf)?);
        start += len;
    }
    Tensor::cat(&outs, 2)?.to_dtype(dtype)
}

/// Self-attention over the concatenated `[text | video]` tokens with q/k
/// LayerNorm (eps 1e-6) and RoPE on the video tokens.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: LayerNorm,
    norm_k: LayerNorm,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        head_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: linear_b(dim, inner, bias, vb.pp("to_q"))?,
            to_k: linear_b(dim, inner, bias, vb.pp("to_k"))?,
            to_v: linear_b(dim, inner, bias, vb.pp("to_v"))?,
            to_out: linear(inner, dim, vb.pp("to_out.0"))?,
            norm_q: layer_norm(head_dim, 1e-6, vb.pp("norm_q"))?,
            norm_k: layer_norm(head_dim, 1e-6, vb.pp("norm_k"))?,
            heads,
            head_dim,
        })
    }

    /// `[B, S, D]` -> `[B, H, S, Dh]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        x.reshape((b, s, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Applies RoPE to the video part (tokens from `text_len` on).
    fn rotate_video(x: &Tensor, text_len: usize, rope: &RotaryEmbedding) -> Result<Tensor> {
        let s = x.dim(2)?;
        let text = x.narrow(2, 0, text_len)?;
        let vid = apply_rotary_emb(&x.narrow(2, text_len, s - text_len)?, &rope.cos, &rope.sin)?;
        Tensor::cat(&[&text, &vid], 2)
    }

    /// Returns `(video, text)` outputs.
    ///
    /// With `reference` set, the batch is `[main..., reference...]` (two
    /// equal halves) and each main row also attends to the tokens of the
    /// reference row in the same slot, as the CogVideo DDIM-inversion script's
    /// `CogVideoXAttnProcessor2_0ForDDIMInversion` does; the reference rows
    /// attend only to themselves. Keys of the reference tokens are rotated
    /// with the same table in both roles, so they are computed once.
    pub fn forward(
        &self,
        vid: &Tensor,
        enc: &Tensor,
        rope: Option<&RotaryEmbedding>,
        reference: bool,
    ) -> Result<(Tensor, Tensor)> {
        let text_len = enc.dim(1)?;
        let x = Tensor::cat(&[enc, vid], 1)?;
        let (b, s, _) = x.dims3()?;
        let q = self
            .norm_q
            .forward(&self.split_heads(&self.to_q.forward(&x)?)?)?;
        let k = self
            .norm_k
            .forward(&self.split_heads(&self.to_k.forward(&x)?)?)?;
        let v = self.split_heads(&self.to_v.forward(&x)?)?;
        let (q, k) = match rope {
            Some(rope) => (
                Self::rotate_video(&q, text_len, rope)?,
                Self::rotate_video(&k, text_len, rope)?,
            ),
            None => (q, k),
        };
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let out = if reference {
            if b % 2 != 0 {
                candle_core::bail!("reference attention needs an even batch, got {b}");
            }
            let h = b / 2;
            let (k_ref, v_ref) = (k.narrow(0, h, h)?, v.narrow(0, h, h)?);
            let main = scaled_dot_product_attention(
                &q.narrow(0, 0, h)?,
                &Tensor::cat(&[&k.narrow(0, 0, h)?, &k_ref], 2)?,
                &Tensor::cat(&[&v.narrow(0, 0, h)?, &v_ref], 2)?,
                scale,
            )?;
            let refs = scaled_dot_product_attention(&q.narrow(0, h, h)?, &k_ref, &v_ref, scale)?;
            Tensor::cat(&[main, refs], 0)?
        } else {
            scaled_dot_product_attention(&q, &k, &v, scale)?
        };
        let out = out
            .transpose(1, 2)?
            .reshape((b, s, self.heads * self.head_dim))?;
        let out = self.to_out.forward(&out)?;
        Ok((
            out.narrow(1, text_len, s - text_len)?,
            out.narrow(1, 0, text_len)?,
        ))
    }
}

/// `FeedForward(activation_fn="gelu-approximate")`: Linear, tanh GELU, Linear.
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    pub fn load(vb: VarBuilder, dim: usize, inner: usize) -> Result<Self> {
        Ok(Self {
            proj_in: linear(dim, inner, vb.pp("net.0.proj"))?,
            proj_out: linear(inner, dim, vb.pp("net.2"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj_out.forward(&self.proj_in.forward(x)?.gelu()?)
    }
}
