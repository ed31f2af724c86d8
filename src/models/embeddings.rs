//! Positional and timestep embeddings of CogVideoX, matching
//! `diffusers/models/embeddings.py` (`get_timestep_embedding`,
//! `TimestepEmbedding`, `get_3d_sincos_pos_embed`, `get_3d_rotary_pos_embed`)
//! and the pipeline helper `get_resize_crop_region_for_grid`.
//!
//! The tables are small and built on the host in the precision diffusers
//! uses (f32 or f64, as noted per function) so that positions and angles
//! round the same way, then moved to the compute device once.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear};

use crate::numerics::linspace;

/// Sinusoidal timestep features, `get_timestep_embedding` with
/// `flip_sin_to_cos = true`, `downscale_freq_shift = shift`, `max_period = 10000`.
/// Computed in f32 exactly as torch does: f32 exponents, f32 products.
pub fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    shift: f32,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let log_max = -(10000f64.ln()) as f32;
    let denom = half as f32 - shift;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((log_max * i as f32) / denom).exp())
        .collect();
    let mut data = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        data.extend(args.iter().map(|a| a.cos()));
        data.extend(args.iter().map(|a| a.sin()));
        if dim % 2 == 1 {
            data.push(0.0);
        }
    }
    Tensor::from_vec(data, (timesteps.len(), dim), device)
}

/// `TimestepEmbedding`: linear, SiLU, linear.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: linear(in_dim, out_dim, vb.pp("linear_1"))?,
            linear_2: linear(out_dim, out_dim, vb.pp("linear_2"))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}

/// `get_1d_sincos_pos_embed_from_grid`: `[sin(pos*w) | cos(pos*w)]`, f64.
fn sincos_1d(dim: usize, positions: &[f32]) -> Vec<Vec<f64>> {
    let half = dim / 2;
    let omega: Vec<f64> = (0..half)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / (dim as f64 / 2.0)))
        .collect();
    positions
        .iter()
        .map(|&p| {
            let p = p as f64;
            let mut row: Vec<f64> = omega.iter().map(|w| (p * w).sin()).collect();
            row.extend(omega.iter().map(|w| (p * w).cos()));
            row
        })
        .collect()
}

/// The joint `[text | video]` sincos table of `CogVideoXPatchEmbed`
/// (`get_3d_sincos_pos_embed`), shape `[1, text_len + frames*h*w, dim]`, with
/// zero text rows, for a `(frames, grid_h, grid_w)` patch grid.
/// Spatial positions are the column index then the row index (diffusers
/// meshes with `indexing="xy"`), each divided by the interpolation scale in f32.
pub fn sincos_pos_embed_3d(
    dim: usize,
    (frames, grid_h, grid_w): (usize, usize, usize),
    text_len: usize,
    (spatial_scale, temporal_scale): (f32, f32),
    device: &Device,
) -> Result<Tensor> {
    let dim_spatial = 3 * dim / 4;
    let dim_temporal = dim / 4;
    let cols: Vec<f32> = (0..grid_w).map(|i| i as f32 / spatial_scale).collect();
    let rows: Vec<f32> = (0..grid_h).map(|i| i as f32 / spatial_scale).collect();
    let ts: Vec<f32> = (0..frames).map(|i| i as f32 / temporal_scale).collect();
    let emb_col = sincos_1d(dim_spatial / 2, &cols);
    let emb_row = sincos_1d(dim_spatial / 2, &rows);
    let emb_t = sincos_1d(dim_temporal, &ts);
    let n = frames * grid_h * grid_w;
    let mut data = vec![0f32; (text_len + n) * dim];
    let mut off = text_len * dim;
    for et in &emb_t {
        for er in &emb_row {
            for ec in &emb_col {
                for v in et.iter().chain(ec).chain(er) {
                    data[off] = *v as f32;
                    off += 1;
                }
            }
        }
    }
    Tensor::from_vec(data, (1, text_len + n, dim), device)
}

/// `get_resize_crop_region_for_grid` of the CogVideoX pipeline: where a
/// `(grid_h, grid_w)` token grid sits inside the `base_h x base_w` grid the
/// 1.0 models were trained on. Returns `((top, left), (bottom, right))`.
pub fn resize_crop_region_for_grid(
    grid_h: usize,
    grid_w: usize,
    base_w: usize,
    base_h: usize,
) -> ((f64, f64), (f64, f64)) {
    let (tw, th) = (base_w as f64, base_h as f64);
    let (h, w) = (grid_h as f64, grid_w as f64);
    let (rh, rw) = if h / w > th / tw {
        (th, f64::round_ties_even(th / h * w))
    } else {
        (f64::round_ties_even(tw / w * h), tw)
    };
    let top = f64::round_ties_even((th - rh) / 2.0);
    let left = f64::round_ties_even((tw - rw) / 2.0);
    ((top, left), (top + rh, left + rw))
}

/// How the RoPE grid positions are laid out (`grid_type` in diffusers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeGrid {
    /// CogVideoX 1.0: positions stretched/cropped onto the base grid.
    Linspace {
        top: f64,
        left: f64,
        bottom: f64,
        right: f64,
    },
    /// CogVideoX 1.5: integer positions, the table bounded by the base grid.
    Slice { max_h: usize, max_w: usize },
}

/// `get_1d_rotary_pos_embed(use_real, repeat_interleave_real)`: cos and sin of
/// `pos * 10000^(-2j/dim)` in f32, each repeated twice (interleaved).
fn rotary_1d(dim: usize, positions: &[f32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let freqs: Vec<f32> = (0..dim / 2)
        .map(|j| 1.0 / 10000f32.powf((2 * j) as f32 / dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions.len());
    let mut sin = Vec::with_capacity(positions.len());
    for &p in positions {
        let (mut c, mut s) = (Vec::with_capacity(dim), Vec::with_capacity(dim));
        for f in &freqs {
            let a = p * f;
            c.extend([a.cos(), a.cos()]);
            s.extend([a.sin(), a.sin()]);
        }
        cos.push(c);
        sin.push(s);
    }
    (cos, sin)
}

/// `get_3d_rotary_pos_embed`: `(cos, sin)`, each `[frames*grid_h*grid_w,
/// head_dim]` in f32, head dims split `[t: d/4 | h: 3d/8 | w: 3d/8]`.
pub fn rotary_pos_embed_3d(
    head_dim: usize,
    grid_h: usize,
    grid_w: usize,
    frames: usize,
    grid: RopeGrid,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (pos_h, pos_w, pos_t): (Vec<f32>, Vec<f32>, Vec<f32>) = match grid {
        RopeGrid::Linspace {
            top,
            left,
            bottom,
            right,
        } => {
            let t = frames as f64;
            (
                linspace(
                    top as f32,
                    (bottom * (grid_h as f64 - 1.0) / grid_h as f64) as f32,
                    grid_h,
                ),
                linspace(
                    left as f32,
                    (right * (grid_w as f64 - 1.0) / grid_w as f64) as f32,
                    grid_w,
                ),
                linspace(0.0, (t * (t - 1.0) / t) as f32, frames),
            )
        }
        RopeGrid::Slice { max_h, max_w } => {
            if grid_h > max_h || grid_w > max_w {
                candle_core::bail!(
                    "token grid {grid_h}x{grid_w} exceeds the model's rotary table {max_h}x{max_w}"
                );
            }
            (
                (0..grid_h).map(|i| i as f32).collect(),
                (0..grid_w).map(|i| i as f32).collect(),
                (0..frames).map(|i| i as f32).collect(),
            )
        }
    };
    let dim_t = head_dim / 4;
    let dim_hw = head_dim / 8 * 3;
    let (tc, ts) = rotary_1d(dim_t, &pos_t);
    let (hc, hs) = rotary_1d(dim_hw, &pos_h);
    let (wc, ws) = rotary_1d(dim_hw, &pos_w);
    let n = frames * grid_h * grid_w;
    let width = dim_t + 2 * dim_hw;
    let mut cos: Vec<f32> = Vec::with_capacity(n * width);
    let mut sin: Vec<f32> = Vec::with_capacity(n * width);
    for t in 0..frames {
        for y in 0..grid_h {
            for x in 0..grid_w {
                cos.extend(tc[t].iter().chain(&hc[y]).chain(&wc[x]));
                sin.extend(ts[t].iter().chain(&hs[y]).chain(&ws[x]));
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, width), device)?,
        Tensor::from_vec(sin, (n, width), device)?,
    ))
}

/// Precomputed 3D rotary tables for one latent size, in the half-width form
/// the fused kernel takes (see [`rope_half_tables`]).
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    pub cos: Tensor,
    pub sin: Tensor,
}

/// Applies interleaved rotary embeddings to `x` `[B, H, S, D]` given the
/// duplicated `(cos, sin)` tables `[S, D]`: the math runs in f32 and the
/// result is cast back, as diffusers' `apply_rotary_emb` does.
pub fn apply_rotary_emb(x: &Tensor, cos_half: &Tensor, sin_half: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    candle_nn::rotary_emb::rope_i(&xf, cos_half, sin_half)?.to_dtype(dtype)
}

/// The rotary tables as `rope_i` wants them: every other column of the
/// duplicated diffusers tables, contiguous f32.
pub fn rope_half_tables(cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor)> {
    let half = |t: &Tensor| -> Result<Tensor> {
        let (n, d) = t.dims2()?;
        t.to_dtype(DType::F32)?
            .reshape((n, d / 2, 2))?
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .contiguous()
    };
    Ok((half(cos)?, half(sin)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_region_matches_reference_example() {
        // 768x1360 on a 1.0 model: grid 48x85 on the 30x45 base grid.
        let ((top, left), (bottom, right)) = resize_crop_region_for_grid(48, 85, 45, 30);
        assert_eq!((top, left, bottom, right), (2.0, 0.0, 27.0, 45.0));
        let ((top, left), (bottom, right)) = resize_crop_region_for_grid(30, 45, 45, 30);
        assert_eq!((top, left, bottom, right), (0.0, 0.0, 30.0, 45.0));
    }
}
