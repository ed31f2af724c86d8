//! The convolutions of the CogVideoX VAE: `CogVideoXCausalConv3d` (3x3x3
//! with the first frame replicated in front and a 2-frame cache carried
//! between frame batches), the 1x1x1 convolutions, and the per-frame 3x3
//! convolutions of the down- and upsamplers.
//!
//! candle has no conv3d, so every convolution here is an im2col plus GEMMs,
//! on activations kept in diffusers' own `[B, C, T, H, W]` layout:
//!
//! - For a padded clip `xp` (`T + 2` frames), output frame `t` of a 3x3x3
//!   convolution is `bias + sum_k W_k * cols(xp[t + k])`, where `cols`
//!   gathers the 3x3 spatial neighbourhood (`9C` values) of each pixel and
//!   `W_k` is the `[O, 9C]` slice of the kernel at temporal tap `k`.
//! - We build `cols` once for all `T + 2` padded frames: a `[9C, (T+2)HW]`
//!   matrix made of nine strided copies. The operand of tap `k` is then the
//!   column window of frames `k..k+T`, a view with no copy, and three GEMMs
//!   `[O, 9C] x [9C, THW]` summed give `[O, T, H, W]` directly, so no
//!   permutes are needed anywhere in the VAE.
//!
//! Compared with three candle `conv2d` calls (one per temporal tap, frames
//! batched) this copies 9x instead of 27x the input, keeps the GEMMs large
//! and ran about twice as fast on CPU. The same ops map to strided copies and
//! cuBLAS GEMMs on a GPU; candle's cuBLAS wrapper wants dense operands, so
//! there the column windows are made contiguous first. The matrix is built
//! for bands of output rows sized to a fixed budget, so its memory does not
//! grow with the resolution or the number of frames.
//!
//! In f32 on the CPU the same convolution runs on raw slices (the `cpu`
//! module): the padded input is written in one pass together with the norm
//! and SiLU before it, and the GEMMs accumulate into the output. There the
//! convolutions with many channels skip the im2col matrix: a channels-last
//! copy of the input is the GEMMs' operand as it is (`cpu::conv`).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::cpu::{self, ConvShape, Fill, NormSilu, Pad};
use crate::error::{Error, Result};

/// candle's result: loading and the generic path's ops.
type CResult<T> = candle_core::Result<T>;

/// Upper bound for one im2col band, in bytes. Small on CPU, where bigger
/// bands buy nothing; larger on GPUs, where fewer launches matter.
pub(crate) const IM2COL_BUDGET_CPU: usize = 64 << 20;
pub(crate) const IM2COL_BUDGET_GPU: usize = 1 << 30;

/// The causal convolutions' carried frames, one slot per convolution, kept
/// from one frame batch to the next (diffusers' nested `conv_cache` dicts).
pub(crate) type ConvCache = Vec<Option<Tensor>>;

/// Hands out cache slots while a network is loaded.
#[derive(Debug, Default)]
pub(crate) struct SlotCounter(usize);

impl SlotCounter {
    fn next(&mut self) -> usize {
        self.0 += 1;
        self.0 - 1
    }

    pub(crate) fn count(&self) -> usize {
        self.0
    }
}

/// A convolution kernel laid out for [`im2col`]: per temporal tap one
/// `[O, kh*kw*C]` matrix whose columns run over `(kh, kw, c)`.
#[derive(Debug, Clone)]
struct Kernel {
    /// `[kt, O, kh*kw*C]`, the taps' matrices one after another.
    weight: Tensor,
    bias: Tensor,
    kh: usize,
    kw: usize,
}

/// What a CPU-path convolution adds to its output besides the bias.
pub(crate) enum Residual<'a> {
    None,
    /// This tensor, of the output's shape (a resnet's identity shortcut).
    Identity(&'a Tensor),
    /// This 1x1x1 convolution of this tensor (a resnet's `conv_shortcut`).
    Pointwise(&'a Pointwise, &'a Tensor),
}

impl Kernel {
    /// From a `[O, C, kt, kh, kw]` weight and `[O]` bias.
    fn new(weight: &Tensor, bias: &Tensor) -> CResult<Self> {
        let (o, c, kt, kh, kw) = weight.dims5()?;
        let weight = weight
            .permute((2, 0, 3, 4, 1))?
            .reshape((kt, o, kh * kw * c))?
            .contiguous()?;
        Ok(Self {
            weight,
            bias: bias.reshape((o, 1))?,
            kh,
            kw,
        })
    }

    fn taps(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Unpadded convolution of `xp` `[B, C, T + kt - 1, Hp, Wp]` with the
    /// given spatial stride (1 or 2), giving `[B, O, T, Ho, Wo]`. For stride 2
    /// `Hp` and `Wp` must be even and hold one row/column pair beyond the last
    /// one read, which callers pad with zeros that no tap uses.
    fn conv(&self, xp: &Tensor, stride: usize) -> CResult<Tensor> {
        let budget = if xp.device().is_cpu() {
            IM2COL_BUDGET_CPU
        } else {
            IM2COL_BUDGET_GPU
        };
        self.conv_in_bands(xp, stride, budget / xp.dtype().size_in_bytes())
    }

    /// The CPU f32 path: pads `x` `[B, C, T, H, W]` as `fill` and `pad` say
    /// ([`cpu::fill_padded`], with `prev` as the context frames), convolves it
    /// into bias plus `residual`, and returns the output with the padded
    /// input's last `pad.context` frames (the next frame batch's context).
    /// `x` is taken by value so that it can be freed before the GEMMs.
    fn forward_cpu(
        &self,
        x: Tensor,
        fill: &Fill,
        pad: Pad,
        prev: Option<&Tensor>,
        stride: usize,
        residual: Residual,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let dims = x.dims5()?;
        let (b, c, t, h, w) = dims;
        let (_, hi, wi) = fill.output_size((t, h, w));
        if let Some(p) = prev
            && p.dims() != [b, c, pad.context, hi, wi]
        {
            return Err(Error::Internal(format!(
                "context frames {:?} for an input of {dims:?}",
                p.dims()
            )));
        }
        let (xp, padded) = cpu::with_data(&x, |xs| match prev {
            Some(p) => cpu::with_data(p, |ps| cpu::fill_padded(xs, dims, fill, Some(ps), pad)),
            None => cpu::fill_padded(xs, dims, fill, None, pad),
        })?;
        drop(x);
        let context = if pad.context > 0 {
            let frames = cpu::context_frames(&xp, padded, pad)?;
            Some(cpu::tensor(frames, &[b, c, pad.context, hi, wi])?)
        } else {
            None
        };
        let shape = ConvShape {
            input: padded,
            kernel: (self.taps(), self.kh, self.kw),
            stride,
            replicated: if prev.is_none() { pad.context } else { 0 },
        };
        let (t, ho, wo) = shape.output();
        let o = self.bias.dim(0)?;
        let out_dims = [b, o, t, ho, wo];
        let sizes = (b, o, t * ho * wo);
        let mut out = match residual {
            Residual::None => {
                cpu::with_data(&self.bias, |bias| cpu::init_output(sizes, bias, None))?
            }
            Residual::Identity(r) => {
                if r.dims() != out_dims {
                    return Err(Error::Internal(format!(
                        "residual {:?} for an output of {out_dims:?}",
                        r.dims()
                    )));
                }
                cpu::with_data(&self.bias, |bias| {
                    cpu::with_data(r, |rs| cpu::init_output(sizes, bias, Some(rs)))
                })?
            }
            Residual::Pointwise(p, r) => {
                let bias = (&self.bias + &p.bias)?;
                let mut out = cpu::with_data(&bias, |bias| cpu::init_output(sizes, bias, None))?;
                p.add_to_cpu(&mut out, r, out_dims)?;
                out
            }
        };
        let budget = IM2COL_BUDGET_CPU / std::mem::size_of::<f32>();
        cpu::with_data(&self.weight, |w| cpu::conv(&xp, shape, w, &mut out, budget))?;
        drop(xp);
        Ok((cpu::tensor(out, &out_dims)?, context))
    }

    /// [`Self::conv`] with im2col bands of at most `budget` elements (or one
    /// output row, if a row alone is larger).
    fn conv_in_bands(&self, xp: &Tensor, stride: usize, budget: usize) -> CResult<Tensor> {
        let (b, c, tp, hp, wp) = xp.dims5()?;
        let o = self.bias.dim(0)?;
        let kt = self.taps();
        let t = tp + 1 - kt;
        let ho = (hp - self.kh) / stride + 1;
        let wo = (wp - self.kw) / stride + 1;
        if stride == 2 && (hp % 2 != 0 || wp % 2 != 0 || hp / 2 < ho + 1 || wp / 2 < wo + 1) {
            candle_core::bail!("stride-2 convolution input {hp}x{wp} is not padded for {ho}x{wo}");
        }
        let per_row = self.kh * self.kw * c * tp * wo;
        let band = (budget / per_row.max(1)).clamp(1, ho);
        let xp = xp.contiguous()?;
        let mut samples = Vec::with_capacity(b);
        for i in 0..b {
            let x = xp.get(i)?;
            let mut bands = Vec::with_capacity(ho.div_ceil(band));
            let mut r0 = 0;
            while r0 < ho {
                let n = band.min(ho - r0);
                let cols = im2col(&x, (self.kh, self.kw), stride, r0, n, wo)?;
                let mut acc: Option<Tensor> = None;
                for k in 0..kt {
                    let w = self.weight.get(k)?;
                    let mut window = cols.narrow(1, k * n * wo, t * n * wo)?;
                    if !window.device().is_cpu() {
                        window = window.contiguous()?;
                    }
                    let y = w.matmul(&window)?;
                    acc = Some(match acc {
                        None => y,
                        Some(a) => (a + y)?,
                    });
                }
                drop(cols);
                let y = match acc {
                    Some(a) => a.broadcast_add(&self.bias)?,
                    None => candle_core::bail!("kernel without taps"),
                };
                bands.push(y.reshape((o, t, n, wo))?);
                r0 += n;
            }
            samples.push(Tensor::cat(&bands, 2)?);
        }
        Tensor::stack(&samples, 0)
    }
}

/// The `[kh*kw*C, T*n*Wo]` im2col matrix of output rows `r0..r0+n` of one
/// padded sample `x` `[C, T, Hp, Wp]`, rows ordered `(kh, kw, c)`, columns
/// `(t, row, col)`.
fn im2col(
    x: &Tensor,
    (kh, kw): (usize, usize),
    stride: usize,
    r0: usize,
    n: usize,
    wo: usize,
) -> CResult<Tensor> {
    let (c, t, hp, wp) = x.dims4()?;
    let mut views = Vec::with_capacity(kh * kw);
    if stride == 1 {
        for i in 0..kh {
            for j in 0..kw {
                views.push(x.narrow(2, r0 + i, n)?.narrow(3, j, wo)?);
            }
        }
    } else {
        // Row 2y + i of the input is phase i % 2 of row pair y + i / 2.
        let pairs = x.reshape((c, t, hp / 2, 2, wp / 2, 2))?;
        for i in 0..kh {
            for j in 0..kw {
                views.push(
                    pairs
                        .narrow(2, r0 + i / 2, n)?
                        .narrow(3, i % 2, 1)?
                        .narrow(4, j / 2, wo)?
                        .narrow(5, j % 2, 1)?
                        .squeeze(5)?
                        .squeeze(3)?,
                );
            }
        }
    }
    Tensor::cat(&views, 0)?.reshape((kh * kw * c, t * n * wo))
}

/// `CogVideoXCausalConv3d` with a `(3, 3, 3)` kernel, stride 1: zero padding
/// of 1 on H and W; in time the previous batch's last two input frames, or,
/// for the first batch, the first frame twice.
#[derive(Debug, Clone)]
pub(crate) struct CausalConv3d {
    kernel: Kernel,
    slot: usize,
}

impl CausalConv3d {
    /// Loads `<vb>.conv.weight` `[out, in, 3, 3, 3]` and `<vb>.conv.bias`.
    pub(crate) fn load(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        slots: &mut SlotCounter,
    ) -> CResult<Self> {
        let vb = vb.pp("conv");
        let weight = vb.get((out_c, in_c, 3, 3, 3), "weight")?;
        let bias = vb.get(out_c, "bias")?;
        Ok(Self {
            kernel: Kernel::new(&weight, &bias)?,
            slot: slots.next(),
        })
    }

    /// `[B, C, T, H, W]` -> `[B, O, T, H, W]`, updating this convolution's
    /// cache slot.
    pub(crate) fn forward(&self, x: &Tensor, cache: &mut ConvCache) -> Result<Tensor> {
        if cpu::applies(x) {
            return self.forward_cpu(x.clone(), &Fill::Copy, Residual::None, cache);
        }
        Ok(self.forward_generic(x, cache)?)
    }

    /// The CPU f32 path of `forward(fill(x)) + residual` ([`Kernel::forward_cpu`]).
    pub(crate) fn forward_cpu(
        &self,
        x: Tensor,
        fill: &Fill,
        residual: Residual,
        cache: &mut ConvCache,
    ) -> Result<Tensor> {
        let prev = cache[self.slot].take();
        let pad = Pad::same(self.kernel.taps() - 1);
        let (y, context) = self
            .kernel
            .forward_cpu(x, fill, pad, prev.as_ref(), 1, residual)?;
        cache[self.slot] = context;
        Ok(y)
    }

    fn forward_generic(&self, x: &Tensor, cache: &mut ConvCache) -> CResult<Tensor> {
        let context = self.kernel.taps() - 1;
        let frames = x.dim(2)?;
        let xt = match cache[self.slot].take() {
            Some(prev) => Tensor::cat(&[&prev, x], 2)?,
            None => {
                let first = x.narrow(2, 0, 1)?;
                let mut parts = vec![first; context];
                parts.push(x.clone());
                Tensor::cat(&parts, 2)?
            }
        };
        // A copy, so the cache does not pin the whole padded input.
        cache[self.slot] = Some(xt.narrow(2, frames, context)?.contiguous()?);
        let xp = xt.pad_with_zeros(3, 1, 1)?.pad_with_zeros(4, 1, 1)?;
        drop(xt);
        self.kernel.conv(&xp, 1)
    }
}

/// A per-frame 2D convolution (the down- and upsamplers' `nn.Conv2d`),
/// 3x3, applied to all frames at once.
#[derive(Debug, Clone)]
pub(crate) struct FrameConv2d {
    kernel: Kernel,
}

impl FrameConv2d {
    /// Loads `<vb>.weight` `[out, in, 3, 3]` and `<vb>.bias`.
    pub(crate) fn load(vb: VarBuilder, in_c: usize, out_c: usize) -> CResult<Self> {
        let weight = vb.get((out_c, in_c, 3, 3), "weight")?.unsqueeze(2)?;
        let bias = vb.get(out_c, "bias")?;
        Ok(Self {
            kernel: Kernel::new(&weight, &bias)?,
        })
    }

    /// Convolution of an already padded `[B, C, T, Hp, Wp]` clip; see
    /// [`Kernel::conv`] for what stride 2 expects of the padding.
    pub(crate) fn forward(&self, xp: &Tensor, stride: usize) -> CResult<Tensor> {
        self.kernel.conv(xp, stride)
    }

    /// The CPU f32 path: `x` padded and filled as `fill` and `pad` say, then
    /// convolved with the given stride.
    pub(crate) fn forward_cpu(
        &self,
        x: Tensor,
        fill: &Fill,
        pad: Pad,
        stride: usize,
    ) -> Result<Tensor> {
        let (y, _) = self
            .kernel
            .forward_cpu(x, fill, pad, None, stride, Residual::None)?;
        Ok(y)
    }
}

/// A 1x1x1 convolution: a matmul over channels at every position.
#[derive(Debug, Clone)]
pub(crate) struct Pointwise {
    weight: Tensor,
    bias: Tensor,
}

impl Pointwise {
    /// Loads `<vb>.weight` `[out, in, 1, 1, 1]` and `<vb>.bias`.
    pub(crate) fn load(vb: VarBuilder, in_c: usize, out_c: usize) -> CResult<Self> {
        let weight = vb.get((out_c, in_c, 1, 1, 1), "weight")?;
        let bias = vb.get(out_c, "bias")?;
        Self::new(weight.reshape((out_c, in_c))?, bias)
    }

    /// From a `[O, C]` weight and `[O]` bias.
    pub(crate) fn new(weight: Tensor, bias: Tensor) -> CResult<Self> {
        let o = weight.dim(0)?;
        Ok(Self {
            weight,
            bias: bias.reshape((o, 1))?,
        })
    }

    /// CPU f32: adds `weight * x` (no bias) to `out`, which holds the
    /// `[B, O, ...]` values of `out_dims`.
    fn add_to_cpu(&self, out: &mut [f32], x: &Tensor, out_dims: [usize; 5]) -> Result<()> {
        let (b, c) = (x.dim(0)?, x.dim(1)?);
        let s = x.elem_count() / (b * c).max(1);
        if out_dims[0] != b
            || out_dims[1] != self.weight.dim(0)?
            || out_dims[2..].iter().product::<usize>() != s
        {
            return Err(Error::Internal(format!(
                "shortcut of {:?} into an output of {out_dims:?}",
                x.dims()
            )));
        }
        cpu::with_data(&self.weight, |w| {
            cpu::with_data(x, |xs| {
                cpu::pointwise_acc(out, w, xs, (b, c, s));
                Ok(())
            })
        })
    }

    /// Stacks two convolutions over the same input into one (outputs of
    /// `self` first).
    pub(crate) fn concat(&self, other: &Self) -> CResult<Self> {
        Ok(Self {
            weight: Tensor::cat(&[&self.weight, &other.weight], 0)?,
            bias: Tensor::cat(&[&self.bias, &other.bias], 0)?,
        })
    }
}

impl Module for Pointwise {
    /// `[B, C, T, H, W]` -> `[B, O, T, H, W]`.
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let o = self.weight.dim(0)?;
        let samples = (0..b)
            .map(|i| {
                self.weight
                    .matmul(&x.get(i)?.reshape((c, t * h * w))?)?
                    .broadcast_add(&self.bias)?
                    .reshape((o, t, h, w))
            })
            .collect::<CResult<Vec<_>>>()?;
        Tensor::stack(&samples, 0)
    }
}

/// `nn.GroupNorm` over `[B, C, ...]`, statistics per sample and group over
/// all remaining axes (so, in the VAE, over the frames of the current batch).
/// Applied as torch does on CPU: `y = x * scale + shift` with per-channel
/// `scale = rstd * gamma` and `shift = beta - mean * scale`.
#[derive(Debug, Clone)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub(crate) fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> CResult<Self> {
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }

    /// CPU f32: this norm of `x` `[B, C, ...]` as the per-channel affine of
    /// a [`NormSilu`] (without modulation).
    pub(crate) fn norm_silu(&self, x: &Tensor) -> Result<NormSilu> {
        let (b, c) = (x.dim(0)?, x.dim(1)?);
        let spatial = x.elem_count() / (b * c).max(1);
        let (scale, shift) = cpu::with_data(x, |xs| {
            cpu::with_data(&self.weight, |gamma| {
                cpu::with_data(&self.bias, |beta| {
                    Ok(cpu::group_norm_affine(
                        xs,
                        (b, c, spatial),
                        self.groups,
                        (gamma, beta),
                        self.eps,
                    ))
                })
            })
        })?;
        Ok(NormSilu {
            scale,
            shift,
            modulation: None,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let g = self.groups;
        let last = dims[dims.len() - 1];
        let n = x.elem_count() / (b * g);
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        // Two-level sums (over the last axis, then the rest) keep f32
        // rounding small for the millions of values a group spans.
        let x4 = xf.reshape((b, g, n / last, last))?;
        let mean = (x4.sum_keepdim(3)?.sum_keepdim(2)? / n as f64)?;
        let var = (x4
            .broadcast_sub(&mean)?
            .sqr()?
            .sum_keepdim(3)?
            .sum_keepdim(2)?
            / n as f64)?;
        let rstd = (var + self.eps)?.sqrt()?.recip()?;
        let cg = c / g;
        let gamma = self.weight.to_dtype(DType::F32)?.reshape((1, g, cg))?;
        let beta = self.bias.to_dtype(DType::F32)?.reshape((1, g, cg))?;
        let scale = gamma.broadcast_mul(&rstd.reshape((b, g, 1))?)?;
        let shift = beta.broadcast_sub(&scale.broadcast_mul(&mean.reshape((b, g, 1))?)?)?;
        let mut bshape = vec![1usize; dims.len()];
        bshape[0] = b;
        bshape[1] = c;
        let scale = scale.reshape(bshape.clone())?;
        let shift = shift.reshape(bshape)?;
        drop(x4);
        xf.broadcast_mul(&scale)?
            .broadcast_add(&shift)?
            .to_dtype(dtype)
    }
}

/// Nearest-neighbour source indices as torch's `interpolate(mode="nearest")`
/// computes them: `floor(dst * (in / out))` in f32, clamped.
pub(crate) fn nearest_indices(in_size: usize, out_size: usize) -> Vec<u32> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|d| (((d as f32) * scale).floor() as usize).min(in_size - 1) as u32)
        .collect()
}

/// Gathers `indices` along `dim` (a no-op for the identity).
pub(crate) fn gather(x: &Tensor, dim: usize, indices: &[u32], device: &Device) -> CResult<Tensor> {
    let identity =
        indices.len() == x.dim(dim)? && indices.iter().enumerate().all(|(i, &s)| i == s as usize);
    if identity {
        return Ok(x.clone());
    }
    let idx = Tensor::from_slice(indices, indices.len(), device)?;
    x.contiguous()?.index_select(&idx, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;

    /// Unpadded 3D convolution by definition on `[C, T, H, W]` data.
    fn conv_by_definition(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize) -> Vec<f32> {
        let (c, t, h, wd) = x.dims4().unwrap();
        let (_, _, kt, kh, kw) = w.dims5().unwrap();
        let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let wv = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bv = b.to_vec1::<f32>().unwrap();
        let (to, ho, wo) = (t - kt + 1, (h - kh) / stride + 1, (wd - kw) / stride + 1);
        let mut out = Vec::with_capacity(bv.len() * to * ho * wo);
        for (oc, &bias) in bv.iter().enumerate() {
            for ot in 0..to {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut s = bias as f64;
                        for ic in 0..c {
                            for a in 0..kt {
                                for i in 0..kh {
                                    for j in 0..kw {
                                        let xi = ((ic * t + ot + a) * h + oy * stride + i) * wd
                                            + ox * stride
                                            + j;
                                        let wi = (((oc * c + ic) * kt + a) * kh + i) * kw + j;
                                        s += xv[xi] as f64 * wv[wi] as f64;
                                    }
                                }
                            }
                        }
                        out.push(s as f32);
                    }
                }
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn im2col_conv_matches_definition() -> Result<()> {
        let dev = Device::Cpu;
        for (stride, kt, h, w) in [(1, 3, 6, 7), (1, 1, 5, 4), (2, 1, 8, 10), (2, 1, 6, 8)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, 4 + kt - 1, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (5, 3, kt, 3, 3), &dev)?;
            let b = Tensor::randn(0f32, 1.0, 5, &dev)?;
            let y = Kernel::new(&wt, &b)?.conv(&x, stride)?;
            for i in 0..2 {
                let expect = conv_by_definition(&x.get(i)?, &wt, &b, stride);
                let got = y.get(i)?.flatten_all()?.to_vec1::<f32>()?;
                assert!(max_diff(&got, &expect) < 1e-4, "stride {stride} kt {kt}");
            }
        }
        Ok(())
    }

    #[test]
    fn bands_do_not_change_the_result() -> Result<()> {
        // A budget of a few rows forces many bands; compare with one band.
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 4, 5, 40, 9), &dev)?;
        let wt = Tensor::randn(0f32, 1.0, (2, 4, 3, 3, 3), &dev)?;
        let b = Tensor::zeros(2, DType::F32, &dev)?;
        let k = Kernel::new(&wt, &b)?;
        let expect = conv_by_definition(&x.get(0)?, &wt, &b, 1);
        for budget in [1, 36 * 5 * 9 * 3, usize::MAX] {
            let got = k
                .conv_in_bands(&x, 1, budget)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert!(max_diff(&got, &expect) < 1e-4, "budget {budget}");
        }
        Ok(())
    }

    #[test]
    fn group_norm_matches_definition() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1.0, (2, 4, 3, 5, 6), &dev)? + 3.0)?;
        let gn = GroupNorm {
            weight: Tensor::new(&[1.0f32, 2.0, -1.0, 0.5], &dev)?,
            bias: Tensor::new(&[0.0f32, 1.0, 2.0, -3.0], &dev)?,
            groups: 2,
            eps: 1e-6,
        };
        let y = gn.forward(&x)?;
        let reference = candle_nn::GroupNorm::new(gn.weight.clone(), gn.bias.clone(), 4, 2, 1e-6)?
            .forward(&x)?;
        let d = (y - reference)?
            .abs()?
            .flatten_all()?
            .max(D::Minus1)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "{d}");
        Ok(())
    }

    #[test]
    fn nearest_matches_torch_rules() {
        assert_eq!(nearest_indices(2, 4), vec![0, 0, 1, 1]);
        assert_eq!(nearest_indices(2, 8), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(nearest_indices(3, 3), vec![0, 1, 2]);
        assert_eq!(nearest_indices(3, 9), vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert_eq!(nearest_indices(1, 3), vec![0, 0, 0]);
    }
}
