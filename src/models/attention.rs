//! Joint text-video attention (`Attention` with `CogVideoXAttnProcessor2_0`)
//! and the feed-forward (`FeedForward`, tanh GELU) of diffusers.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm, linear, linear_b};

use crate::models::embeddings::{RotaryEmbedding, apply_rotary_emb};
use crate::models::lora::{self, BlockLora, LoraSite};

mod chunked;
mod flash;
mod kernels;

// The GPU dispatch: which kernel a device runs (every build) and cuDNN's
// fused SDPA (the `cuda` build).
mod backend;
#[cfg(feature = "cuda")]
mod cudnn;
pub use backend::ATTENTION_ENV;
/// A linear layer's forward pass, by the f32 CPU kernel where it applies
/// (bias fused, polled in row pieces) and by candle elsewhere.
pub(crate) use kernels::linear as linear_forward;

/// What loading cuDNN gave: its version, or why it is unusable.
#[cfg(feature = "cuda")]
fn cudnn_status() -> std::result::Result<String, String> {
    cudnn::status()
}

#[cfg(not(feature = "cuda"))]
fn cudnn_status() -> std::result::Result<String, String> {
    Err("this library was built without CUDA".into())
}

/// The kernel attention runs on `device` in `dtype`, in words, with the
/// shapes cuDNN refused so far (those ran the chunked path): "cuDNN 9.13.1
/// unified SDPA", "chunked (cuDNN not found: ...)", "fused CPU kernel (f32)".
pub fn backend_description(device: &candle_core::Device, dtype: candle_core::DType) -> String {
    let backend = backend::select(device, dtype, cudnn_status);
    #[cfg(feature = "cuda")]
    if let (backend::Backend::Cudnn(_), Some(refused)) = (&backend, cudnn::refusals()) {
        return format!("{backend}; chunked where cuDNN refused: {refused}");
    }
    backend.to_string()
}

/// Upper bound on one chunk of attention scores in the generic path, in
/// elements. Full scores for the 5b model at 480x720 would be
/// `48 x 17776^2` floats per sample (about 60 GB); chunking the queries
/// keeps the working set near 1 GiB.
pub(crate) const MAX_SCORE_ELEMENTS: usize = 1 << 28;

/// `softmax(q k^T * scale) v` on token-major tensors: `q` is
/// `[B, Sq, H, Dh]` and the keys and values come as segments
/// `[B, Sk_i, H, Dh]` that together form the key sequence (the reference
/// attention of editing appends the reference tokens without a copy).
/// Returns `[B, Sq, H, Dh]` in the dtype of `q`. Scores and softmax run in
/// f32 whatever the activation dtype, as the fused attention kernels of
/// PyTorch accumulate.
///
/// f32 on the CPU runs the fused, tiled kernel of `attention/flash.rs`;
/// bf16/f16 on a GPU cuDNN's fused SDPA where `attention/backend.rs` finds
/// it; everything else the query-chunked candle ops of `attention/chunked.rs`.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    kv: &[(&Tensor, &Tensor)],
    scale: f64,
) -> Result<Tensor> {
    if kv.is_empty() {
        candle_core::bail!("attention needs at least one key segment");
    }
    if flash::applies(q, kv) {
        return flash::attention(q, kv, scale as f32);
    }
    // cuDNN when `backend` selects it and it has a plan for the shape.
    #[cfg(feature = "cuda")]
    if q.device().is_cuda()
        && matches!(
            backend::gpu_backend(q.dtype(), cudnn_status()),
            backend::Backend::Cudnn(_)
        )
        && let Some(out) = cudnn::attention(q, kv, scale)?
    {
        return Ok(out);
    }
    generic_attention(q, kv, scale)
}

/// [`scaled_dot_product_attention`] by the chunked path.
fn generic_attention(q: &Tensor, kv: &[(&Tensor, &Tensor)], scale: f64) -> Result<Tensor> {
    let heads_first = |t: &Tensor| t.transpose(1, 2);
    let (k, v) = if let [(k, v)] = kv {
        (heads_first(k)?, heads_first(v)?)
    } else {
        let ks: Vec<&Tensor> = kv.iter().map(|(k, _)| *k).collect();
        let vs: Vec<&Tensor> = kv.iter().map(|(_, v)| *v).collect();
        (
            heads_first(&Tensor::cat(&ks, 1)?)?,
            heads_first(&Tensor::cat(&vs, 1)?)?,
        )
    };
    chunked::attention(&heads_first(q)?, &k, &v, scale)?
        .transpose(1, 2)?
        .contiguous()
}

/// The epsilon of the query and key LayerNorms (`qk_norm="layer_norm"`).
const QK_NORM_EPS: f64 = 1e-6;

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
            to_q: kernels::cpu_linear(linear_b(dim, inner, bias, vb.pp("to_q"))?)?,
            to_k: kernels::cpu_linear(linear_b(dim, inner, bias, vb.pp("to_k"))?)?,
            to_v: kernels::cpu_linear(linear_b(dim, inner, bias, vb.pp("to_v"))?)?,
            to_out: kernels::cpu_linear(linear(inner, dim, vb.pp("to_out.0"))?)?,
            norm_q: layer_norm(head_dim, QK_NORM_EPS, vb.pp("norm_q"))?,
            norm_k: layer_norm(head_dim, QK_NORM_EPS, vb.pp("norm_k"))?,
            heads,
            head_dim,
        })
    }

    /// A `[B, S, H * Dh]` query or key projection as `[B, S, H, Dh]`,
    /// LayerNorm-ed per head and, from token `text_len` on, rotated.
    fn prepare_qk(
        &self,
        x: &Tensor,
        norm: &LayerNorm,
        text_len: usize,
        rope: Option<&RotaryEmbedding>,
    ) -> Result<Tensor> {
        if let (true, Some(bias)) = (crate::models::cpu::applies(x), norm.bias()) {
            return kernels::qk_norm_rope(
                x,
                self.heads,
                (norm.weight(), bias, QK_NORM_EPS as f32),
                text_len,
                rope.map(|r| (&r.cos, &r.sin)),
            );
        }
        self.prepare_qk_generic(x, norm, text_len, rope)
    }

    /// [`Self::prepare_qk`] by candle ops, for every dtype and device.
    fn prepare_qk_generic(
        &self,
        x: &Tensor,
        norm: &LayerNorm,
        text_len: usize,
        rope: Option<&RotaryEmbedding>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let x = norm.forward(&x.reshape((b, s, self.heads, self.head_dim))?)?;
        let Some(rope) = rope else {
            return Ok(x);
        };
        let text = x.narrow(1, 0, text_len)?;
        let vid = x.narrow(1, text_len, s - text_len)?.transpose(1, 2)?;
        let vid = apply_rotary_emb(&vid, &rope.cos, &rope.sin)?.transpose(1, 2)?;
        Tensor::cat(&[&text, &vid], 1)
    }

    /// Attention over the joint `[B, T + N, D]` tokens, the first `text_len`
    /// of each sample text (not rotated); returns the same layout.
    ///
    /// With `reference` set, the batch is `[main..., reference...]` (two
    /// equal halves) and each main row also attends to the tokens of the
    /// reference row in the same slot, as the CogVideo DDIM-inversion script's
    /// `CogVideoXAttnProcessor2_0ForDDIMInversion` does; the reference rows
    /// attend only to themselves. Keys of the reference tokens are rotated
    /// with the same table in both roles, so they are computed once.
    /// `lora` adds unfused adapters to the projections.
    pub fn forward(
        &self,
        x: &Tensor,
        text_len: usize,
        rope: Option<&RotaryEmbedding>,
        reference: bool,
        lora: Option<&BlockLora>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        // Polled after each projection too (see `models/poll.rs`).
        let proj = |lin: &Linear, site: LoraSite, x: &Tensor| -> Result<Tensor> {
            let y = kernels::linear(lin, x, false)?;
            crate::models::poll::check()?;
            match lora {
                Some(l) if !l.terms(site).is_empty() => lora::add_unfused(y, x, l.terms(site)),
                _ => Ok(y),
            }
        };
        let q = self.prepare_qk(
            &proj(&self.to_q, LoraSite::ToQ, x)?,
            &self.norm_q,
            text_len,
            rope,
        )?;
        crate::models::poll::check()?;
        let k = self.prepare_qk(
            &proj(&self.to_k, LoraSite::ToK, x)?,
            &self.norm_k,
            text_len,
            rope,
        )?;
        crate::models::poll::check()?;
        let v = proj(&self.to_v, LoraSite::ToV, x)?.reshape((b, s, self.heads, self.head_dim))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let out = if reference {
            if b % 2 != 0 {
                candle_core::bail!("reference attention needs an even batch, got {b}");
            }
            let h = b / 2;
            let (k_ref, v_ref) = (k.narrow(0, h, h)?, v.narrow(0, h, h)?);
            let main = scaled_dot_product_attention(
                &q.narrow(0, 0, h)?,
                &[(&k.narrow(0, 0, h)?, &v.narrow(0, 0, h)?), (&k_ref, &v_ref)],
                scale,
            )?;
            let refs =
                scaled_dot_product_attention(&q.narrow(0, h, h)?, &[(&k_ref, &v_ref)], scale)?;
            Tensor::cat(&[main, refs], 0)?
        } else {
            scaled_dot_product_attention(&q, &[(&k, &v)], scale)?
        };
        proj(
            &self.to_out,
            LoraSite::ToOut,
            &out.reshape((b, s, self.heads * self.head_dim))?,
        )
    }

    /// This layer with `lora`'s adapters fused into its projections.
    /// The weights of the layers that take adapters.
    pub fn lora_weights(&self) -> [(LoraSite, &Tensor); 4] {
        [
            (LoraSite::ToQ, self.to_q.weight()),
            (LoraSite::ToK, self.to_k.weight()),
            (LoraSite::ToV, self.to_v.weight()),
            (LoraSite::ToOut, self.to_out.weight()),
        ]
    }

    pub fn fused(&self, lora: &BlockLora) -> Result<Self> {
        let fuse = |lin: &Linear, site: LoraSite| -> Result<Linear> {
            match lora.terms(site) {
                [] => Ok(lin.clone()),
                terms => kernels::cpu_linear(lora::fused_linear(lin, terms)?),
            }
        };
        Ok(Self {
            to_q: fuse(&self.to_q, LoraSite::ToQ)?,
            to_k: fuse(&self.to_k, LoraSite::ToK)?,
            to_v: fuse(&self.to_v, LoraSite::ToV)?,
            to_out: fuse(&self.to_out, LoraSite::ToOut)?,
            ..self.clone()
        })
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
            proj_in: kernels::cpu_linear(linear(dim, inner, vb.pp("net.0.proj"))?)?,
            proj_out: kernels::cpu_linear(linear(inner, dim, vb.pp("net.2"))?)?,
        })
    }
}

/// Tokens per feed-forward chunk: the hidden layer is four times as wide as
/// the model, so at 17,776 tokens of the 5b models it would take 0.9 GB (and
/// as much again for its GELU); in chunks it takes 100 MB, and the products
/// are still large enough to run at full speed.
const FF_CHUNK_TOKENS: usize = 2048;

impl FeedForward {
    fn forward_tokens(&self, x: &Tensor, lora: Option<&BlockLora>) -> Result<Tensor> {
        let Some(lora) = lora.filter(|l| {
            !l.terms(LoraSite::FfIn).is_empty() || !l.terms(LoraSite::FfOut).is_empty()
        }) else {
            let h = kernels::linear(&self.proj_in, x, true)?;
            return kernels::linear(&self.proj_out, &h, false);
        };
        // the adapters add before the GELU, so it is not fused into the product
        let h = kernels::linear(&self.proj_in, x, false)?;
        let h = lora::add_unfused(h, x, lora.terms(LoraSite::FfIn))?.gelu()?;
        let y = kernels::linear(&self.proj_out, &h, false)?;
        lora::add_unfused(y, &h, lora.terms(LoraSite::FfOut))
    }

    /// [`Module::forward`] with `lora`'s unfused adapters.
    pub fn forward_lora(&self, x: &Tensor, lora: Option<&BlockLora>) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        if b * s <= FF_CHUNK_TOKENS {
            return self.forward_tokens(x, lora);
        }
        let rows = x.reshape((b * s, d))?;
        let mut outs = Vec::with_capacity((b * s).div_ceil(FF_CHUNK_TOKENS));
        for start in (0..b * s).step_by(FF_CHUNK_TOKENS) {
            crate::models::poll::check()?;
            let len = FF_CHUNK_TOKENS.min(b * s - start);
            outs.push(
                self.forward_tokens(&rows.narrow(0, start, len)?, lora)?
                    .unsqueeze(0)?,
            );
        }
        let outs: Vec<&Tensor> = outs.iter().collect();
        crate::models::cpu::cat_tokens(&outs)?.reshape((b, s, ()))
    }

    /// This layer with `lora`'s adapters fused into its two products.
    /// The weights of the layers that take adapters.
    pub fn lora_weights(&self) -> [(LoraSite, &Tensor); 2] {
        [
            (LoraSite::FfIn, self.proj_in.weight()),
            (LoraSite::FfOut, self.proj_out.weight()),
        ]
    }

    pub fn fused(&self, lora: &BlockLora) -> Result<Self> {
        let fuse = |lin: &Linear, site: LoraSite| -> Result<Linear> {
            match lora.terms(site) {
                [] => Ok(lin.clone()),
                terms => kernels::cpu_linear(lora::fused_linear(lin, terms)?),
            }
        };
        Ok(Self {
            proj_in: fuse(&self.proj_in, LoraSite::FfIn)?,
            proj_out: fuse(&self.proj_out, LoraSite::FfOut)?,
        })
    }
}

impl Module for FeedForward {
    /// `x` is `[B, S, D]`; many tokens run in chunks of tokens, which gives
    /// the same values (every token is computed on its own). The chunks are
    /// rows of `[B * S, D]`, so each is contiguous whatever the batch (with
    /// guidance B is 2): candle's linear layer takes its slower broadcast
    /// product for a non-contiguous input.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_lora(x, None)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Module, Tensor};
    use candle_nn::VarBuilder;

    use super::*;
    use crate::test_util::max_diff;

    /// The fused kernel and the chunked path agree within f32 rounding, with
    /// sequence lengths that leave partial query and key blocks, two key
    /// segments, and scores spread widely enough that the online softmax
    /// rescales rows many times.
    #[test]
    fn flash_matches_chunked() {
        let dev = Device::Cpu;
        let (b, h, d) = (2, 3, 64);
        let q = (Tensor::randn(0f32, 1.0, (b, 300, h, d), &dev).unwrap() * 3.0).unwrap();
        let k1 = Tensor::randn(0f32, 1.0, (b, 700, h, d), &dev).unwrap();
        let v1 = Tensor::randn(0f32, 1.0, (b, 700, h, d), &dev).unwrap();
        let k2 = (Tensor::randn(0f32, 1.0, (b, 37, h, d), &dev).unwrap() * 2.0).unwrap();
        let v2 = Tensor::randn(0f32, 1.0, (b, 37, h, d), &dev).unwrap();
        let scale = 0.125;
        for kv in [vec![(&k1, &v1)], vec![(&k1, &v1), (&k2, &v2)]] {
            assert!(flash::applies(&q, &kv));
            let fast = scaled_dot_product_attention(&q, &kv, scale).unwrap();
            let generic = generic_attention(&q, &kv, scale).unwrap();
            assert_eq!(fast.dims(), &[b, 300, h, d]);
            let diff = max_diff(&fast, &generic);
            assert!(diff < 1e-5, "flash vs chunked: {diff}");
        }
        // Other dtypes take the chunked path, and agree with f32.
        let kv = [(&k1, &v1)];
        let f32_out = scaled_dot_product_attention(&q, &kv, scale).unwrap();
        let to64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let (q64, k64, v64) = (to64(&q), to64(&k1), to64(&v1));
        assert!(!flash::applies(&q64, &[(&k64, &v64)]));
        let out64 = scaled_dot_product_attention(&q64, &[(&k64, &v64)], scale).unwrap();
        assert!(max_diff(&out64.to_dtype(DType::F32).unwrap(), &f32_out) < 1e-5);
    }

    /// Random weights for an [`Attention`] of `heads x d`, in `dtype`.
    fn random_attention(heads: usize, d: usize, dtype: DType) -> Attention {
        let dev = Device::Cpu;
        let dim = heads * d;
        let mut ws = std::collections::HashMap::new();
        let mut put = |name: &str, shape: &[usize], std: f64| {
            let seed = name.bytes().map(|b| b as f64).sum::<f64>();
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|i| ((i as f64 * 0.618 + seed).sin() * std) as f32)
                .collect();
            let t = Tensor::from_vec(v, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            ws.insert(name.to_string(), t);
        };
        for p in ["to_q", "to_k", "to_v", "to_out.0"] {
            put(&format!("{p}.weight"), &[dim, dim], 0.1);
            put(&format!("{p}.bias"), &[dim], 0.1);
        }
        for p in ["norm_q", "norm_k"] {
            put(&format!("{p}.weight"), &[d], 1.0);
            put(&format!("{p}.bias"), &[d], 0.5);
        }
        let vb = VarBuilder::from_tensors(ws, dtype, &dev);
        Attention::load(vb, dim, heads, d, true).unwrap()
    }

    /// The query/key preparation in one pass (norm and RoPE) agrees with
    /// the candle ops of the generic path.
    #[test]
    fn prepare_qk_matches_generic() {
        let dev = Device::Cpu;
        let (heads, d, text, vid) = (3, 32, 7, 40);
        let attn = random_attention(heads, d, DType::F32);
        let x = Tensor::randn(0f32, 1.0, (2, text + vid, heads * d), &dev).unwrap();
        let angles = Tensor::randn(0f32, 3.0, (vid, d / 2), &dev).unwrap();
        let rope = RotaryEmbedding {
            cos: angles.cos().unwrap(),
            sin: angles.sin().unwrap(),
        };
        let q = attn.to_q.forward(&x).unwrap();
        for rope in [None, Some(&rope)] {
            let a = attn.prepare_qk(&q, &attn.norm_q, text, rope).unwrap();
            let b = attn
                .prepare_qk_generic(&q, &attn.norm_q, text, rope)
                .unwrap();
            assert_eq!(a.dims(), &[2, text + vid, heads, d]);
            let diff = max_diff(&a, &b);
            assert!(diff < 1e-5, "rope {}: {diff}", rope.is_some());
        }
    }

    /// With a poll installed, the fused attention polls between query
    /// blocks on the calling thread, gives the same bits, and stops at the
    /// poll's error.
    #[test]
    fn polled_attention_gives_the_same_bits_and_stops() {
        use crate::models::poll::with_poll;
        use std::time::Duration;
        let dev = Device::Cpu;
        let (b, h, d) = (2, 4, 64);
        let q = Tensor::randn(0f32, 1.0, (b, 1000, h, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, 1000, h, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, 1000, h, d), &dev).unwrap();
        let kv = [(&k, &v)];
        let plain = scaled_dot_product_attention(&q, &kv, 0.125).unwrap();
        let mut calls = 0;
        let mut count = || -> Result<()> {
            calls += 1;
            Ok(())
        };
        let polled = with_poll(Some(&mut count), Duration::ZERO, || {
            scaled_dot_product_attention(&q, &kv, 0.125)
        })
        .unwrap();
        assert!(calls > 1, "{calls} polls");
        assert_eq!(max_diff(&plain, &polled), 0.0);
        let mut stop = || -> Result<()> { candle_core::bail!("stop") };
        let r = with_poll(Some(&mut stop), Duration::ZERO, || {
            scaled_dot_product_attention(&q, &kv, 0.125)
        });
        assert!(r.unwrap_err().to_string().contains("stop"));
    }

    /// With a poll installed, large linear layers run in row pieces, polled
    /// between, with the same bits as in one product.
    #[test]
    fn polled_linear_gives_the_same_bits() {
        use crate::models::poll::with_poll;
        use std::time::Duration;
        let dev = Device::Cpu;
        // 2 * 4096 * 4096 operations per row: at most 238 rows a piece, so
        // five equal pieces of 200.
        let (n, k, m) = (4096, 4096, 1000);
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.02, n, &dev).unwrap();
        let lin = kernels::cpu_linear(candle_nn::Linear::new(w, Some(bias))).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, m, k), &dev).unwrap();
        let plain = kernels::linear(&lin, &x, true).unwrap();
        let mut calls = 0;
        let mut count = || -> Result<()> {
            calls += 1;
            Ok(())
        };
        let polled = with_poll(Some(&mut count), Duration::ZERO, || {
            kernels::linear(&lin, &x, true)
        })
        .unwrap();
        assert_eq!(calls, 5, "5 pieces, polled before each");
        assert_eq!(max_diff(&plain, &polled), 0.0);
    }

    /// Long sequences run the feed-forward in chunks of tokens with the same
    /// values as in one piece, for batches of one and two.
    #[test]
    fn feed_forward_chunks_match_one_piece() {
        let dev = Device::Cpu;
        let (dim, inner) = (16, 64);
        let mut ws = std::collections::HashMap::new();
        for (name, shape) in [
            ("net.0.proj.weight", vec![inner, dim]),
            ("net.0.proj.bias", vec![inner]),
            ("net.2.weight", vec![dim, inner]),
            ("net.2.bias", vec![dim]),
        ] {
            ws.insert(
                name.to_string(),
                Tensor::randn(0f32, 0.3, shape, &dev).unwrap(),
            );
        }
        let ff =
            FeedForward::load(VarBuilder::from_tensors(ws, DType::F32, &dev), dim, inner).unwrap();
        for b in [1, 2] {
            let x = Tensor::randn(0f32, 1.0, (b, 2 * FF_CHUNK_TOKENS + 3, dim), &dev).unwrap();
            let diff = max_diff(
                &ff.forward(&x).unwrap(),
                &ff.forward_tokens(&x, None).unwrap(),
            );
            assert!(diff < 1e-5, "batch {b}: {diff}");
        }
    }
}
