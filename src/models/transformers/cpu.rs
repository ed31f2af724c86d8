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

use crate::models::cpu::{lane_sum, multiversion, par_pieces_polled, try_zeros, with_slices};

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
        par_pieces_polled(&mut out, d, |row, dst| {
            let (sample, tok) = (row / s, row % s);
            let is_text = tok < text_len;
            let scale = chunk(m, d, sample, Chunk::Scale, Chunk::EncScale, is_text);
            let shift = chunk(m, d, sample, Chunk::Shift, Chunk::EncShift, is_text);
            norm_row(&xs[row * d..][..d], dst, w, bi, eps, scale, shift);
        })
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
        par_pieces_polled(&mut out, d, |row, dst| {
            let (sample, tok) = (row / s, row % s);
            let gate = chunk(m, d, sample, Chunk::Gate, Chunk::EncGate, tok < text_len);
            gated_row(&xs[row * d..][..d], &ys[row * d..][..d], gate, dst);
        })
    })?;
    Tensor::from_vec(out, (b, s, d), x.device())
}

multiversion! {
    /// One row of [`modulated_norm`].
    fn norm_row(
        src: &[f32],
        dst: &mut [f32],
        weight: &[f32],
        bias: &[f32],
        eps: f32,
        scale: &[f32],
        shift: &[f32],
    ) {
        let d = src.len() as f32;
        let mean = lane_sum(src, |v| v) / d;
        let var = lane_sum(src, |v| (v - mean) * (v - mean)) / d;
        let rstd = 1.0 / (var + eps).sqrt();
        let params = weight.iter().zip(bias).zip(scale.iter().zip(shift));
        for ((o, &v), ((&w, &b), (&sc, &sh))) in dst.iter_mut().zip(src).zip(params) {
            let y = (v - mean) * rstd * w + b;
            *o = y * (1.0 + sc) + sh;
        }
    }
}

multiversion! {
    /// One row of [`gated_add`].
    fn gated_row(x: &[f32], y: &[f32], gate: &[f32], dst: &mut [f32]) {
        for (((o, &a), &b), &g) in dst.iter_mut().zip(x).zip(y).zip(gate) {
            *o = a + b * g;
        }
    }
}
