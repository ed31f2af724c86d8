//! FasterCache (diffusers `hooks/faster_cache.py`: `FasterCacheDenoiserHook`
//! on the transformer, `FasterCacheBlockHook` on each block's `attn1`).
//!
//! - Unconditional branch: from the second call on, at timesteps inside
//!   `unconditional_batch_timestep_skip_range` and except every
//!   `unconditional_batch_skip_range`-th call, only the conditional half of
//!   the guidance batch runs; the unconditional prediction is the
//!   conditional one plus the last computed difference `d = uncond - cond`,
//!   its low and high spatial frequencies (a disc of radius
//!   `min(h, w) / 5` around frequency 0 of each frame's and channel's 2D
//!   FFT) each scaled by the product of the `alpha_*` weights of the steps
//!   approximated since (the weight applies inside its timestep range, else
//!   1). diffusers adds the frequency parts of `d` to the FFT of the
//!   conditional prediction and transforms back; by linearity that is
//!   `cond + w_high d + (w_low - w_high) lowpass(d)`, computed here with the
//!   few low-frequency DFT terms.
//! - Attention: inside `spatial_attention_timestep_skip_range`, on the calls
//!   that run only the conditional half, each block's attention output is
//!   computed every `spatial_attention_block_skip_range`-th call and
//!   otherwise extrapolated from its last two conditional outputs:
//!   `o1 + (o1 - o2) * attention_weight`.

use std::f64::consts::PI;

use candle_core::{DType, Device, Result, Tensor};

use super::pyramid_attention_broadcast::check_range;
use super::{StepInfo, within};

/// `FasterCacheConfig` (tensor layout and block names are CogVideoX's).
#[derive(Debug, Clone, PartialEq)]
pub struct FasterCacheConfig {
    pub spatial_attention_block_skip_range: usize,
    pub spatial_attention_timestep_skip_range: (f64, f64),
    pub low_frequency_weight_update_timestep_range: (f64, f64),
    pub high_frequency_weight_update_timestep_range: (f64, f64),
    pub alpha_low_frequency: f64,
    pub alpha_high_frequency: f64,
    pub unconditional_batch_skip_range: usize,
    pub unconditional_batch_timestep_skip_range: (f64, f64),
    /// The constant `attention_weight_callback`.
    pub attention_weight: f64,
}

impl Default for FasterCacheConfig {
    /// diffusers' documented CogVideoX setting (`apply_faster_cache`'s
    /// example), with the config's defaults for the rest.
    fn default() -> Self {
        Self {
            spatial_attention_block_skip_range: 2,
            spatial_attention_timestep_skip_range: (-1.0, 681.0),
            low_frequency_weight_update_timestep_range: (99.0, 641.0),
            high_frequency_weight_update_timestep_range: (-1.0, 301.0),
            alpha_low_frequency: 1.1,
            alpha_high_frequency: 1.1,
            unconditional_batch_skip_range: 5,
            unconditional_batch_timestep_skip_range: (-1.0, 641.0),
            attention_weight: 0.3,
        }
    }
}

impl FasterCacheConfig {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.spatial_attention_block_skip_range == 0 || self.unconditional_batch_skip_range == 0
        {
            return Err("fastercache: skip ranges must be at least 1".into());
        }
        for (what, r) in [
            (
                "spatial attention",
                self.spatial_attention_timestep_skip_range,
            ),
            (
                "low frequency",
                self.low_frequency_weight_update_timestep_range,
            ),
            (
                "high frequency",
                self.high_frequency_weight_update_timestep_range,
            ),
            (
                "unconditional batch",
                self.unconditional_batch_timestep_skip_range,
            ),
        ] {
            check_range(&format!("fastercache {what} timestep range"), r)?;
        }
        for (what, v) in [
            ("alpha_low_frequency", self.alpha_low_frequency),
            ("alpha_high_frequency", self.alpha_high_frequency),
            ("attention_weight", self.attention_weight),
        ] {
            if !v.is_finite() || v.abs() > 100.0 {
                return Err(format!(
                    "fastercache: {what} must be finite, within +-100, got {v}"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Default, Clone)]
struct Block {
    calls: usize,
    /// The batch of the first call (the full guidance batch).
    rows: Option<usize>,
    /// Conditional outputs of the last two calls (older first).
    cache: Option<(Tensor, Tensor)>,
}

pub(super) struct State {
    c: FasterCacheConfig,
    calls: usize,
    /// The last computed `uncond - cond` (f32) and the weights since.
    delta: Option<(Tensor, f64, f64)>,
    blocks: Vec<Block>,
}

impl State {
    pub(super) fn new(c: &FasterCacheConfig, blocks: usize) -> Self {
        Self {
            c: c.clone(),
            calls: 0,
            delta: None,
            blocks: vec![Block::default(); blocks],
        }
    }

    /// The tensors kept between steps.
    pub(super) fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        let delta = self.delta.iter().map(|(d, _, _)| d);
        let blocks = self
            .blocks
            .iter()
            .filter_map(|b| b.cache.as_ref())
            .flat_map(|(older, last)| [older, last]);
        delta.chain(blocks)
    }

    pub(super) fn cond_only(&mut self, info: StepInfo, rows: usize) -> bool {
        rows == 2
            && self.calls > 0
            && within(
                self.c.unconditional_batch_timestep_skip_range,
                info.timestep,
            )
            && !self
                .calls
                .is_multiple_of(self.c.unconditional_batch_skip_range)
    }

    pub(super) fn finish_output(
        &mut self,
        info: StepInfo,
        out: Tensor,
        cond_only: bool,
    ) -> Result<Tensor> {
        self.calls += 1;
        let dtype = out.dtype();
        if !cond_only {
            let out32 = out.to_dtype(DType::F32)?;
            let d = (out32.narrow(0, 0, 1)? - out32.narrow(0, 1, 1)?)?;
            self.delta = Some((d, 1.0, 1.0));
            return Ok(out);
        }
        let (d, w_low, w_high) = self
            .delta
            .as_mut()
            .ok_or_else(|| candle_core::Error::msg("fastercache: no unconditional delta"))?;
        let t = info.timestep;
        if within(self.c.low_frequency_weight_update_timestep_range, t) {
            *w_low *= self.c.alpha_low_frequency;
        }
        if within(self.c.high_frequency_weight_update_timestep_range, t) {
            *w_high *= self.c.alpha_high_frequency;
        }
        let cond = out.to_dtype(DType::F32)?;
        let mut uncond = (&cond + (&*d * *w_high)?)?;
        if *w_low != *w_high {
            uncond = (uncond + (lowpass(d)? * (*w_low - *w_high))?)?;
        }
        Tensor::cat(&[uncond.to_dtype(dtype)?, out], 0)
    }

    /// `rows`: the batch this call computes.
    pub(super) fn attention(
        &mut self,
        info: StepInfo,
        block: usize,
        rows: usize,
        compute: &mut dyn FnMut() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let c = &self.c;
        let b = &mut self.blocks[block];
        let full = *b.rows.get_or_insert(rows);
        // only while the unconditional branch is skipped: the cache holds
        // conditional outputs alone
        let out = match &b.cache {
            Some((older, last))
                if within(c.spatial_attention_timestep_skip_range, info.timestep)
                    && !(b.calls > 0
                        && b.calls.is_multiple_of(c.spatial_attention_block_skip_range))
                    && rows != full =>
            {
                (last + ((last - older)? * c.attention_weight)?)?
            }
            _ => compute()?,
        };
        let kept = if rows == full {
            // a copy: the view would keep the whole batch's output alive
            out.narrow(0, full / 2, full - full / 2)?
                .force_contiguous()?
        } else {
            out.clone()
        };
        b.cache = Some(match b.cache.take() {
            Some((_, last)) => (last, kept),
            None => (kept.clone(), kept),
        });
        b.calls += 1;
        Ok(out)
    }
}

/// The low spatial frequencies of `x` (`[..., h, w]`, f32): the inverse 2D
/// DFT of its DFT restricted to diffusers' disc (`_split_low_high_freq`:
/// radius `min(h, w) / 5` around the centre of the shifted spectrum).
fn lowpass(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let n = dims.len();
    let (h, w) = (dims[n - 2], dims[n - 1]);
    let r = (h.min(w) / 5) as i64;
    let (ch, cw) = ((h / 2) as i64, (w / 2) as i64);
    // frequencies of the shifted-spectrum rows/columns inside the disc's box
    let fy: Vec<i64> = (0..h as i64)
        .map(|y| y - ch)
        .filter(|f| f.abs() <= r)
        .collect();
    let fx: Vec<i64> = (0..w as i64)
        .map(|x| x - cw)
        .filter(|f| f.abs() <= r)
        .collect();
    let dev = x.device();
    let (cy, sy) = dft_rows(&fy, h, dev)?; // [K, h]
    let (cx, sx) = dft_rows(&fx, w, dev)?; // [L, w]
    let mask: Vec<f32> = fy
        .iter()
        .flat_map(|a| {
            fx.iter()
                .map(move |b| (a * a + b * b <= r * r) as u8 as f32)
        })
        .collect();
    let mask = Tensor::from_vec(mask, (fy.len(), fx.len()), dev)?;
    let x = x.reshape(((), h, w))?;
    // A = x E_x^T (E_x = cx - i sx); D = E_y A (E_y = cy - i sy)
    let ar = x.broadcast_matmul(&cx.t()?)?;
    let ai = x.broadcast_matmul(&sx.t()?)?.neg()?;
    let dr = (cy.broadcast_matmul(&ar)? + sy.broadcast_matmul(&ai)?)?;
    let di = (cy.broadcast_matmul(&ai)? - sy.broadcast_matmul(&ar)?)?;
    let (gr, gi) = (dr.broadcast_mul(&mask)?, di.broadcast_mul(&mask)?);
    // B = E_y^H G; lowpass = Re(B conj(E_x)) / (h w)
    let (cyt, syt) = (cy.t()?, sy.t()?);
    let br = (cyt.broadcast_matmul(&gr)? - syt.broadcast_matmul(&gi)?)?;
    let bi = (cyt.broadcast_matmul(&gi)? + syt.broadcast_matmul(&gr)?)?;
    let out = (br.broadcast_matmul(&cx)? - bi.broadcast_matmul(&sx)?)?;
    (out / (h * w) as f64)?.reshape(dims)
}

/// `cos` and `sin` of `2 pi f k / n` for each frequency `f` (rows) and
/// sample `k` (columns), as f32.
fn dft_rows(freqs: &[i64], n: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let angle =
        |f: i64, k: usize| 2.0 * PI * ((f * k as i64).rem_euclid(n as i64)) as f64 / n as f64;
    let cos: Vec<f32> = freqs
        .iter()
        .flat_map(|&f| (0..n).map(move |k| angle(f, k).cos() as f32))
        .collect();
    let sin: Vec<f32> = freqs
        .iter()
        .flat_map(|&f| (0..n).map(move |k| angle(f, k).sin() as f32))
        .collect();
    Ok((
        Tensor::from_vec(cos, (freqs.len(), n), dev)?,
        Tensor::from_vec(sin, (freqs.len(), n), dev)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The low-pass equals a direct DFT over the disc, computed in f64.
    #[test]
    fn lowpass_matches_a_direct_dft() {
        let (h, w) = (7usize, 12usize);
        let v: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i as f64 * 0.77).sin() + (i as f64 * 0.13).cos()) as f32)
            .collect();
        let x = Tensor::from_vec(v.clone(), (2, h, w), &Device::Cpu).unwrap();
        let got = lowpass(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let r = (h.min(w) / 5) as i64;
        let (ch, cw) = ((h / 2) as i64, (w / 2) as i64);
        for b in 0..2 {
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = 0.0f64;
                    for sy in 0..h as i64 {
                        for sx in 0..w as i64 {
                            let (fy, fx) = (sy - ch, sx - cw);
                            if fy * fy + fx * fx > r * r {
                                continue;
                            }
                            for y2 in 0..h {
                                for x2 in 0..w {
                                    let a = 2.0
                                        * PI
                                        * (fy as f64 * (y as f64 - y2 as f64) / h as f64
                                            + fx as f64 * (xx as f64 - x2 as f64) / w as f64);
                                    acc += v[b * h * w + y2 * w + x2] as f64 * a.cos();
                                }
                            }
                        }
                    }
                    let want = acc / (h * w) as f64;
                    let g = got[b * h * w + y * w + xx] as f64;
                    assert!((g - want).abs() < 1e-5, "({b}, {y}, {xx}): {g} vs {want}");
                }
            }
        }
    }
}
