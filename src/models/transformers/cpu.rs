//! The transformer block's f32 CPU path: kernels on raw slices that fuse
//! what the candle ops of the generic path do in several full-size passes.
//!
//! The blocks keep text and video tokens in one `[B, T + N, D]` tensor, text
//! first, as attention and the feed-forward see them, so the diffusers
//! block's concatenations and splits of the two streams disappear. The
//! modulated LayerNorm ([`modulated_norm`]) and the gated residual
//! ([`gated_add`]) pick each row's modulation by whether it is a text or a
//! video token, and each make one output in one threaded pass, where candle
//! ops make a temporary per step (norm, `1 + scale`, product, sum) in passes
//! that mostly run on one thread.

use candle_core::{Result, Tensor};

use crate::models::attention::kernels::{par_pieces, try_zeros, with_slices};

/// The six modulation chunks of `CogVideoXLayerNormZero`, in the order of
/// its linear layer's output `[B, 6 D]`.
#[derive(Clone, Copy)]
pub(super) enum Chunk {
    Shift = 0,
    Scale = 1,
    Gate = 2,
    EncShift = 3,
    EncScale = 4,
    EncGate = 5,
}

/// The `[D]` chunk of sample `b`: `text` for a text row, else `video`.
fn chunk(mods: &[f32], d: usize, b: usize, video: Chunk, text: Chunk, is_text: bool) -> &[f32] {
    let c = if is_text { text } else { video } as usize;
    &mods[(b * 6 + c) * d..][..d]
}

/// Lanes of the row sums, so that they vectorise.
const LANES: usize = 8;

fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    chunks.remainder().iter().map(|&v| f(v)).sum::<f32>() + acc.iter().sum::<f32>()
}

/// `LayerNorm(x) * (1 + scale) + shift` over `x` `[B, S, D]` whose first
/// `text_len` tokens of each sample are text: text rows take `EncScale` and
/// `EncShift` of `mods` `[B, 6 D]`, video rows `Scale` and `Shift`.
pub(super) fn modulated_norm(
    x: &Tensor,
    text_len: usize,
    (weight, bias, eps): (&Tensor, &Tensor, f64),
    mods: &Tensor,
) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    let ts = [
        x.contiguous()?,
        weight.contiguous()?,
        bias.contiguous()?,
        mods.contiguous()?,
    ];
    let mut out = try_zeros(b * s * d, "modulated LayerNorm output")?;
    let eps = eps as f32;
    with_slices(&ts, |v| {
        let (xs, w, bi, m) = (v[0], v[1], v[2], v[3]);
        par_pieces(&mut out, d, |row, dst| {
            let (sample, tok) = (row / s, row % s);
            let is_text = tok < text_len;
            let scale = chunk(m, d, sample, Chunk::Scale, Chunk::EncScale, is_text);
            let shift = chunk(m, d, sample, Chunk::Shift, Chunk::EncShift, is_text);
            let src = &xs[row * d..][..d];
            let mean = lane_sum(src, |v| v) / d as f32;
            let var = lane_sum(src, |v| (v - mean) * (v - mean)) / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for i in 0..d {
                let y = (src[i] - mean) * rstd * w[i] + bi[i];
                dst[i] = y * (1.0 + scale[i]) + shift[i];
            }
        });
        Ok(())
    })?;
    Tensor::from_vec(out, (b, s, d), x.device())
}

/// `x + y * gate` over `[B, S, D]` tensors whose first `text_len` tokens of
/// each sample are text: text rows take `EncGate` of `mods` `[B, 6 D]`,
/// video rows `Gate`.
pub(super) fn gated_add(x: &Tensor, y: &Tensor, text_len: usize, mods: &Tensor) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    if y.dims() != x.dims() {
        candle_core::bail!("gated residual of {:?} and {:?}", x.dims(), y.dims());
    }
    let ts = [x.contiguous()?, y.contiguous()?, mods.contiguous()?];
    let mut out = try_zeros(b * s * d, "residual output")?;
    with_slices(&ts, |v| {
        let (xs, ys, m) = (v[0], v[1], v[2]);
        par_pieces(&mut out, d, |row, dst| {
            let (sample, tok) = (row / s, row % s);
            let gate = chunk(m, d, sample, Chunk::Gate, Chunk::EncGate, tok < text_len);
            let (xr, yr) = (&xs[row * d..][..d], &ys[row * d..][..d]);
            for i in 0..d {
                dst[i] = xr[i] + yr[i] * gate[i];
            }
        });
        Ok(())
    })?;
    Tensor::from_vec(out, (b, s, d), x.device())
}
