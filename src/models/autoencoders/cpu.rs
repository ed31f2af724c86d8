//! The VAE's f32 CPU path: kernels on raw slices that fuse what the candle
//! ops of the generic path do in many full-size passes.
//!
//! Built from candle ops, one resnet block at full resolution makes some
//! twenty temporaries the size of its activations (norm statistics, scale,
//! shift, modulation, SiLU, the causal frame concat, two zero pads, the
//! convolution's bands and their concat); on the CPU each fresh allocation of
//! that size also costs page faults, and together they took over half of the
//! decoder's time. Here a block makes four:
//!
//! - [`fill_padded`] writes a convolution's zero-padded input (carried frames
//!   in front) in one pass, applying on the way the GroupNorm, the spatial
//!   norm's modulation and the SiLU, or the upsampler's nearest resize.
//! - [`conv`] runs the convolution of `causal_conv3d` as GEMMs that
//!   accumulate into the output, which [`init_output`] starts as bias plus
//!   shortcut: on a channels-last copy of the input read in place where the
//!   channel counts allow, else on an im2col matrix.
//!
//! The spatial norm's `conv_y(zq)` and `conv_b(zq)` are pointwise, so they
//! commute with the nearest resize of `zq`: they are computed at the
//! latent's own size and looked up per pixel ([`Modulation`]).
//!
//! The full-size buffers are allocated with [`try_zeroed`], which reports a failed
//! allocation as [`Error::OutOfMemory`]: the library runs inside its host's
//! process, and Rust's default is to abort it.

use candle_core::utils::barrier_pool;
use candle_core::{Storage, Tensor};

use crate::error::{Error, Result};
use crate::memory::try_zeroed;
pub(crate) use crate::models::cpu::applies;
use crate::models::cpu::{
    GEMM_LANES, Shared, exp, gemm_parallelism, multiversion, par_pieces, transpose,
};

/// Calls `f` with the f32 values of `x` in row-major order.
pub(crate) fn with_data<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Internal(format!(
            "the VAE's CPU path got a tensor on {:?}",
            x.device()
        )));
    };
    f(&cpu.as_slice::<f32>()?[layout.start_offset()..][..x.elem_count()])
}

/// `Tensor` from row-major values, on the CPU.
pub(crate) fn tensor(data: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, dims, &candle_core::Device::Cpu)?)
}

/// `torch.nn.functional.silu`, `v / (1 + exp(-v))`, with an `exp` that
/// vectorises (libm's is a scalar call per value).
#[inline(always)]
fn silu(v: f32) -> f32 {
    v / (1.0 + exp(-v))
}

multiversion! {
    /// `dst = silu(src * scale + shift)`: a row of the GroupNorm and SiLU that
    /// feed a convolution.
    fn norm_silu_row(dst: &mut [f32], src: &[f32], scale: f32, shift: f32) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = silu(v * scale + shift);
        }
    }
}

multiversion! {
    /// [`norm_silu_row`] with the spatial norm's modulation: column `i` is
    /// multiplied by `ys[i]` and shifted by `bs[i]` before the SiLU.
    fn modulated_silu_row(
        dst: &mut [f32],
        src: &[f32],
        scale: f32,
        shift: f32,
        ys: &[f32],
        bs: &[f32],
    ) {
        for (((d, &v), &y), &b) in dst.iter_mut().zip(src).zip(ys).zip(bs) {
            *d = silu((v * scale + shift) * y + b);
        }
    }
}

multiversion! {
    /// Sum of `xs` (with `shift` subtracted and squared when `square`): f32 lanes
    /// over short runs, f64 across runs, so the millions of values of a group
    /// keep their precision.
    fn group_sum(xs: &[f32], shift: f32, square: bool) -> f64 {
        const LANES: usize = 16;
        let mut total = 0f64;
        for run in xs.chunks(4096) {
            let mut acc = [0f32; LANES];
            let body = run.chunks_exact(LANES);
            let tail: f32 = body
                .remainder()
                .iter()
                .map(|&v| if square { (v - shift) * (v - shift) } else { v })
                .sum();
            for lanes in body {
                for (a, &v) in acc.iter_mut().zip(lanes) {
                    let d = v - shift;
                    *a += if square { d * d } else { v };
                }
            }
            total += acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64;
        }
        total
    }
}

/// GroupNorm as a per-sample, per-channel `scale` and `shift`
/// (`y = x * scale + shift`) for `x` `[B, C, ...]` with `spatial` values per
/// channel: `scale = rstd * gamma`, `shift = beta - mean * scale`.
pub(crate) fn group_norm_affine(
    x: &[f32],
    (b, c, spatial): (usize, usize, usize),
    groups: usize,
    (gamma, beta): (&[f32], &[f32]),
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let per_group = c / groups * spatial;
    // Mean and rstd of every (sample, group), one group per task.
    let mut stats = vec![0f32; 2 * b * groups];
    par_pieces(&mut stats, 2, |i, s| {
        let xs = &x[i * per_group..][..per_group];
        let mean = group_sum(xs, 0.0, false) / per_group as f64;
        let var = group_sum(xs, mean as f32, true) / per_group as f64;
        s[0] = mean as f32;
        s[1] = (1.0 / (var + eps).sqrt()) as f32;
    });
    let cg = c / groups;
    let mut scale = vec![0f32; b * c];
    let mut shift = vec![0f32; b * c];
    for i in 0..b * c {
        let (mean, rstd) = (stats[2 * (i / cg)], stats[2 * (i / cg) + 1]);
        scale[i] = rstd * gamma[i % c];
        shift[i] = beta[i % c] - mean * scale[i];
    }
    (scale, shift)
}

/// The spatial norm's `conv_y(zq)` and `conv_b(zq)` for features of size
/// `t x h x w`: computed on `zq` at its own size, with the nearest resize as
/// index maps.
pub(crate) struct Modulation {
    /// `[B, 2C, tz, hz, wz]`: the `C` channels of `conv_y`, then `conv_b`'s.
    pub yb: Vec<f32>,
    /// `(tz, hz, wz)`.
    pub size: (usize, usize, usize),
    /// Latent frame, row and column of each feature frame, row and column.
    pub frames: Vec<usize>,
    pub rows: Vec<usize>,
    pub cols: Vec<usize>,
}

/// GroupNorm (per-channel affine), optional spatial modulation, then SiLU.
pub(crate) struct NormSilu {
    /// `[B * C]`.
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    pub modulation: Option<Modulation>,
}

/// What [`fill_padded`] writes for each position of its source.
pub(crate) enum Fill<'a> {
    /// The value itself.
    Copy,
    /// `silu(norm(x))`, as the resnets and the output norms feed their
    /// convolutions.
    NormSilu(&'a NormSilu),
    /// Nearest-neighbour resampling: output frame, row and column `i` read
    /// source frame, row and column `frames[i]`, `rows[i]`, `cols[i]`.
    Nearest {
        frames: &'a [usize],
        rows: &'a [usize],
        cols: &'a [usize],
    },
}

impl Fill<'_> {
    /// `T' x H' x W'` of what this writes for a `t x h x w` source.
    pub(crate) fn output_size(&self, (t, h, w): (usize, usize, usize)) -> (usize, usize, usize) {
        match self {
            Fill::Nearest { frames, rows, cols } => (frames.len(), rows.len(), cols.len()),
            _ => (t, h, w),
        }
    }
}

/// How a convolution input is padded: `context` frames in front (carried
/// from the previous frame batch, or copies of the first frame), and zero
/// rows and columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pad {
    pub context: usize,
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad {
    /// Zero padding of 1 around every frame, `context` frames in front.
    pub(crate) fn same(context: usize) -> Self {
        Self {
            context,
            top: 1,
            bottom: 1,
            left: 1,
            right: 1,
        }
    }
}

/// Writes the padded convolution input for `x` `[B, C, T, H, W]`: returns
/// `[B, C, context + T', top + H' + bottom, left + W' + right]` where
/// `T' x H' x W'` is `T x H x W`, or the map lengths for
/// [`Fill::Nearest`]. The context frames are `prev` `[B, C, context, H', W']`
/// when given (taken as is), else the first filled frame repeated.
pub(crate) fn fill_padded(
    x: &[f32],
    (b, c, t, h, w): (usize, usize, usize, usize, usize),
    fill: &Fill,
    prev: Option<&[f32]>,
    pad: Pad,
) -> Result<(Vec<f32>, [usize; 5])> {
    let (to, ho, wo) = fill.output_size((t, h, w));
    let tp = pad.context + to;
    let (hp, wp) = (pad.top + ho + pad.bottom, pad.left + wo + pad.right);
    let mut out = try_zeroed(b * c * tp * hp * wp, "a convolution's padded input")?;
    par_pieces(&mut out, hp * wp, |i, plane| {
        let (bc, f) = (i / tp, i % tp);
        let rows = plane[pad.top * wp..].chunks_mut(wp).take(ho);
        if f < pad.context
            && let Some(prev) = prev
        {
            let src = &prev[(bc * pad.context + f) * ho * wo..][..ho * wo];
            for (dst, src) in rows.zip(src.chunks(wo)) {
                dst[pad.left..][..wo].copy_from_slice(src);
            }
            return;
        }
        let tf = f.saturating_sub(pad.context);
        let (bi, ci) = (bc / c, bc % c);
        // The modulation rows `conv_y`, `conv_b` of the latent row last
        // used, resized to the feature width: nearest-resized rows repeat,
        // so each is gathered once and the row kernel reads it in order.
        let mut resized: Option<(usize, Vec<f32>)> = None;
        for (y, dst) in rows.enumerate() {
            let dst = &mut dst[pad.left..][..wo];
            match fill {
                Fill::Copy => dst.copy_from_slice(&x[((bc * t + tf) * h + y) * w..][..w]),
                Fill::Nearest { frames, rows, cols } => {
                    let src = &x[((bc * t + frames[tf]) * h + rows[y]) * w..][..w];
                    for (d, &s) in dst.iter_mut().zip(cols.iter()) {
                        *d = src[s];
                    }
                }
                Fill::NormSilu(n) => {
                    let src = &x[((bc * t + tf) * h + y) * w..][..w];
                    let (s, sh) = (n.scale[bc], n.shift[bc]);
                    match &n.modulation {
                        None => norm_silu_row(dst, src, s, sh),
                        Some(m) => {
                            let (tz, hz, wz) = m.size;
                            let row = |ch: usize| {
                                let at = ((bi * 2 * c + ch) * tz + m.frames[tf]) * hz + m.rows[y];
                                &m.yb[at * wz..][..wz]
                            };
                            let (ys, bs) = (row(ci), row(c + ci));
                            if wz == wo {
                                // Same width: the nearest resize is the identity.
                                modulated_silu_row(dst, src, s, sh, ys, bs);
                                continue;
                            }
                            if resized.as_ref().is_none_or(|(r, _)| *r != m.rows[y]) {
                                let mut both = match resized.take() {
                                    Some((_, both)) => both,
                                    None => vec![0f32; 2 * wo],
                                };
                                let (yr, br) = both.split_at_mut(wo);
                                for ((a, b), &k) in yr.iter_mut().zip(br).zip(&m.cols) {
                                    (*a, *b) = (ys[k], bs[k]);
                                }
                                resized = Some((m.rows[y], both));
                            }
                            if let Some((_, both)) = &resized {
                                let (yr, br) = both.split_at(wo);
                                modulated_silu_row(dst, src, s, sh, yr, br);
                            }
                        }
                    }
                }
            }
        }
    });
    Ok((out, [b, c, tp, hp, wp]))
}

/// The last `pad.context` frames of a padded input from [`fill_padded`],
/// without the zero border: `[B, C, context, H', W']`, what the next frame
/// batch puts in front.
pub(crate) fn context_frames(
    xp: &[f32],
    [b, c, tp, hp, wp]: [usize; 5],
    pad: Pad,
) -> Result<Vec<f32>> {
    let (ho, wo) = (hp - pad.top - pad.bottom, wp - pad.left - pad.right);
    let k = pad.context;
    let mut out = try_zeroed(b * c * k * ho * wo, "a convolution's carried frames")?;
    par_pieces(&mut out, ho * wo, |i, plane| {
        let (bc, f) = (i / k, i % k);
        let src = &xp[(bc * tp + tp - k + f) * hp * wp..][..hp * wp];
        for (dst, row) in plane.chunks_mut(wo).zip(src[pad.top * wp..].chunks(wp)) {
            dst.copy_from_slice(&row[pad.left..][..wo]);
        }
    });
    Ok(out)
}

/// A convolution output `[B, O, S]` (`S` values per channel) holding `bias`
/// plus, when given, `residual` of the same shape.
pub(crate) fn init_output(
    (b, o, spatial): (usize, usize, usize),
    bias: &[f32],
    residual: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let mut out = try_zeroed(b * o * spatial, "a convolution's output")?;
    par_pieces(&mut out, spatial, |i, plane| match residual {
        Some(r) => {
            for (d, &v) in plane.iter_mut().zip(&r[i * spatial..][..spatial]) {
                *d = v + bias[i % o];
            }
        }
        None => plane.fill(bias[i % o]),
    });
    Ok(out)
}

/// `dst[m x n] += lhs[m x k] * rhs[k x n]`, all row-major with the given row
/// strides, on candle's number of threads.
///
/// # Safety
/// Every row `r` of each operand, `ptr + r * row_stride .. + columns`, must
/// lie inside its allocation, and `dst` must not overlap the others.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_acc(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_rs: usize,
) {
    // SAFETY: as promised by the caller; gemm computes
    // dst = 1 * dst + 1 * lhs * rhs with these strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            true,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            1,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_parallelism(),
        );
    }
}

/// `out[b] += weight[O x C] * x[b][C x S]` for every sample of `x` `[B, C, S]`
/// (a 1x1x1 convolution added into `out` `[B, O, S]`).
pub(crate) fn pointwise_acc(
    out: &mut [f32],
    weight: &[f32],
    x: &[f32],
    (b, c, s): (usize, usize, usize),
) {
    let o = weight.len() / c;
    assert!(out.len() == b * o * s && x.len() == b * c * s && weight.len() == o * c);
    for i in 0..b {
        let dst = out[i * o * s..][..o * s].as_mut_ptr();
        // SAFETY: the asserts above bound every row of the three operands.
        unsafe {
            gemm_acc(
                (o, s, c),
                dst,
                s,
                weight.as_ptr(),
                c,
                x[i * c * s..].as_ptr(),
                s,
            )
        };
    }
}

/// Shapes of one convolution: input `[B, C, Tp, Hp, Wp]` (already padded),
/// kernel `kt x kh x kw`, spatial stride, and how many of the input's
/// leading frames are copies of the frame after them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    pub input: [usize; 5],
    pub kernel: (usize, usize, usize),
    pub stride: usize,
    /// A causal convolution's first frame batch puts copies of its first
    /// frame in front ([`fill_padded`] without context frames): the taps of
    /// an output frame that read those copies are one product with the sum
    /// of their weights ([`frame_taps`]). 0 when the frames are distinct.
    pub replicated: usize,
}

impl ConvShape {
    /// `(T, Ho, Wo)` of the output.
    pub(crate) fn output(&self) -> (usize, usize, usize) {
        let [_, _, tp, hp, wp] = self.input;
        let (kt, kh, kw) = self.kernel;
        (
            tp - (kt - 1),
            (hp - kh) / self.stride + 1,
            (wp - kw) / self.stride + 1,
        )
    }
}

/// The products of output frame `ti` of a convolution with `kt` temporal
/// taps whose first `replicated` input frames copy the frame after them, as
/// `(matrix, input frame)`: matrix `k < kt` is tap `k`'s weights, matrix
/// `kt + m - 1` the sum of taps `0..=m` ([`merged_taps`]). Taps `0..=m` of
/// the early output frames all read copies of frame `replicated`; one
/// product with their summed weights does their work (a 9-frame clip's
/// first convolution makes 24 frame products instead of 27, a single image's
/// one instead of three).
fn frame_taps(ti: usize, kt: usize, replicated: usize) -> impl Iterator<Item = (usize, usize)> {
    let m = replicated.saturating_sub(ti).min(kt - 1);
    (m..kt).map(move |k| (if k == m && m > 0 { kt + m - 1 } else { k }, ti + k))
}

/// The summed weights [`frame_taps`] names, from the taps' matrices (any
/// one layout): entry `m - 1` is the sum of taps `0..=m`, for `m` in
/// `1..=min(replicated, kt - 1)`.
fn merged_taps(taps: &[&[f32]], replicated: usize) -> Result<Vec<Vec<f32>>> {
    let mut merged: Vec<Vec<f32>> = Vec::new();
    for &tap in taps.iter().take(replicated + 1).skip(1) {
        let before = merged.last().map_or(taps[0], Vec::as_slice);
        let mut sum = try_zeroed(tap.len(), "a convolution's summed taps")?;
        for ((d, &a), &w) in sum.iter_mut().zip(before).zip(tap) {
            *d = a + w;
        }
        merged.push(sum);
    }
    Ok(merged)
}

/// Adds the convolution of `xp` to `out` `[B, O, T, Ho, Wo]`. `weight` is
/// `[kt, O, kh * kw * C]`, columns ordered `(kh, kw, c)`; `budget` bounds the
/// values of the input copies made per band of output rows. Stride 1 with at
/// least [`CHANNELS_LAST_MIN`] input and output channels (the resnets' and
/// mid blocks' convolutions) runs [`conv_channels_last`], the rest (the first
/// and last convolutions, the downsamplers) [`conv_im2col`].
pub(crate) fn conv(
    xp: &[f32],
    shape: ConvShape,
    weight: &[f32],
    out: &mut [f32],
    budget: usize,
) -> Result<()> {
    let [b, c, tp, hp, wp] = shape.input;
    let (kt, kh, kw) = shape.kernel;
    let (t, ho, wo) = shape.output();
    let k = kh * kw * c;
    let o = weight.len() / (kt * k);
    let s = shape.stride;
    assert!(xp.len() == b * c * tp * hp * wp && weight.len() == kt * o * k);
    assert!(out.len() == b * o * t * ho * wo && (ho - 1) * s + kh <= hp && (wo - 1) * s + kw <= wp);
    if takes_channels_last(c, o, s) {
        conv_channels_last(xp, shape, weight, out, budget)
    } else {
        conv_im2col(xp, shape, weight, out, budget)
    }
}

/// [`conv`] through an im2col matrix (see the `causal_conv3d` module for its
/// layout), built for bands of output rows of at most `budget` values (at
/// least one row) and reused from band to band; each output frame and
/// temporal tap is one GEMM into the output's rows. Each frame of the matrix
/// is padded to a multiple of [`GEMM_LANES`]; when that adds columns, the
/// GEMMs of an output frame accumulate into a scratch block as wide, added
/// into `out` after its last tap. Shapes as [`conv`] checks them.
fn conv_im2col(
    xp: &[f32],
    shape: ConvShape,
    weight: &[f32],
    out: &mut [f32],
    budget: usize,
) -> Result<()> {
    let [b, c, tp, hp, wp] = shape.input;
    let (kt, kh, kw) = shape.kernel;
    let (t, ho, wo) = shape.output();
    let k = kh * kw * c;
    let o = weight.len() / (kt * k);
    let s = shape.stride;
    let band = (budget / (k * tp * wo).max(1)).clamp(1, ho);
    let mut taps: Vec<&[f32]> = weight.chunks(o * k).collect();
    let merged = merged_taps(&taps, shape.replicated)?;
    taps.extend(merged.iter().map(Vec::as_slice));
    let frame_max = (band * wo).next_multiple_of(GEMM_LANES);
    let mut cols = try_zeroed(k * tp * frame_max, "a convolution's im2col matrix")?;
    let mut scratch = Vec::new();
    for i in 0..b {
        let x = &xp[i * c * tp * hp * wp..][..c * tp * hp * wp];
        let y = &mut out[i * o * t * ho * wo..][..o * t * ho * wo];
        for r0 in (0..ho).step_by(band) {
            let n = band.min(ho - r0);
            let frame = (n * wo).next_multiple_of(GEMM_LANES);
            let width = tp * frame;
            // Row (di, dj, ci) of the matrix: input channel ci shifted by
            // (di, dj), for every padded frame and output row of the band.
            par_pieces(&mut cols[..k * width], width, |q, row| {
                let (tap, ci) = (q / c, q % c);
                let (di, dj) = (tap / kw, tap % kw);
                // The replicated frames are never read (frame_taps).
                for (f, frame_row) in row.chunks_mut(frame).enumerate().skip(shape.replicated) {
                    for (yy, dst) in frame_row.chunks_mut(wo).take(n).enumerate() {
                        let src = &x[((ci * tp + f) * hp + (r0 + yy) * s + di) * wp + dj..];
                        if s == 1 {
                            dst.copy_from_slice(&src[..wo]);
                        } else {
                            for (xx, d) in dst.iter_mut().enumerate() {
                                *d = src[xx * s];
                            }
                        }
                    }
                }
            });
            if frame != n * wo && scratch.is_empty() {
                scratch = try_zeroed(o * frame_max, "a convolution's output block")?;
            }
            for ti in 0..t {
                let at = (ti * ho + r0) * wo;
                // Straight into the output rows when they are as wide as the
                // matrix's frames, else into the scratch block.
                let (dst, dst_rs) = if frame == n * wo {
                    (y[at..].as_mut_ptr(), t * ho * wo)
                } else {
                    scratch[..o * frame].fill(0.0);
                    (scratch.as_mut_ptr(), frame)
                };
                for (j, f) in frame_taps(ti, kt, shape.replicated) {
                    // SAFETY: `dst` holds o rows of `frame` values, dst_rs
                    // apart: output rows from `at` (n * wo = frame values
                    // per channel, t * ho * wo apart, inside `y`) or the
                    // scratch block (o * frame values); the weights are o
                    // rows of k values; matrix rows hold `frame` values of
                    // frame f <= ti + kt - 1 < tp, width apart, inside the
                    // first k * width of cols.
                    unsafe {
                        gemm_acc(
                            (o, frame, k),
                            dst,
                            dst_rs,
                            taps[j].as_ptr(),
                            k,
                            cols[f * frame..].as_ptr(),
                            width,
                        );
                    }
                }
                if frame != n * wo {
                    for (ch, block) in scratch.chunks(frame).take(o).enumerate() {
                        let rows = &mut y[ch * t * ho * wo + at..][..n * wo];
                        for (d, &v) in rows.iter_mut().zip(block) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Fewest output channels for [`conv_channels_last`]: its GEMMs run the
/// output channels along the vector lanes.
const CHANNELS_LAST_MIN: usize = 64;
/// Values of a [`conv_channels_last`] output block (`[pixels, O]`), sized to
/// stay in a core's L2 cache while the taps accumulate into it.
const BLOCK_VALUES: usize = 1 << 18;

/// Whether [`conv`] runs [`conv_channels_last`] for `c` input and `o`
/// output channels at spatial `stride`.
pub(crate) fn takes_channels_last(c: usize, o: usize, stride: usize) -> bool {
    let lanes = |n: usize| n >= CHANNELS_LAST_MIN && n.is_multiple_of(GEMM_LANES);
    stride == 1 && lanes(o) && lanes(c)
}

/// Output rows per band of [`conv_channels_last`]: the output block within
/// [`BLOCK_VALUES`], the channels-last copy within `budget` values.
fn channels_last_band(shape: ConvShape, o: usize, budget: usize) -> usize {
    let [_, c, tp, _, wp] = shape.input;
    let kh = shape.kernel.1;
    // Saturating: the memory estimate asks for any size.
    (BLOCK_VALUES / o.saturating_mul(wp).max(1))
        .min((budget / tp.saturating_mul(wp).saturating_mul(c).max(1)).saturating_sub(kh - 1))
        .clamp(1, shape.output().1)
}

/// Values [`conv_channels_last`] allocates besides its input and output:
/// the transposed and summed weights, the channels-last copy and the output
/// block.
pub(crate) fn channels_last_scratch(shape: ConvShape, o: usize, budget: usize) -> usize {
    let [_, c, tp, _, wp] = shape.input;
    let (kt, kh, kw) = shape.kernel;
    let band = channels_last_band(shape, o, budget);
    let product = |xs: &[usize]| xs.iter().fold(1usize, |a, &x| a.saturating_mul(x));
    let matrices = kt + shape.replicated.min(kt - 1);
    product(&[matrices, o, kh, kw, c])
        .saturating_add(product(&[tp, band.saturating_add(kh - 1), wp, c]))
        .saturating_add(product(&[band, wp, o]))
}

/// [`conv`] for stride 1 without an im2col matrix. Each band of input rows
/// is copied channels-last (`[Tp, rows, Wp, C]`); then the `kw` taps of a
/// kernel row are one GEMM whose right-hand side is that copy read in place:
/// output pixel `p` of a row reads the `kw * C` contiguous values from pixel
/// `p` on, so the pixel stride is `C` and the rows of the product overlap.
/// Output rows are computed `Wp` wide (the `kw - 1` values past each row's end
/// are computed and dropped) so that a band is one product per kernel row.
/// The output channels are the GEMM's vector lanes: `gemm` packs the weights
/// (`O x kw * C` per call) instead of an im2col band (`kh * kw * C x pixels`,
/// nine times the input, copied and then packed once per temporal tap).
/// Shapes as [`conv`] checks them, stride 1, `C` and `O` multiples of
/// [`GEMM_LANES`].
fn conv_channels_last(
    xp: &[f32],
    shape: ConvShape,
    weight: &[f32],
    out: &mut [f32],
    budget: usize,
) -> Result<()> {
    let [b, c, tp, hp, wp] = shape.input;
    let (kt, kh, kw) = shape.kernel;
    let (t, ho, wo) = shape.output();
    let k = kh * kw * c;
    let o = weight.len() / (kt * k);
    let band = channels_last_band(shape, o, budget);
    // Each tap's weights `[k, O]`: packing them for the vector lanes is then
    // a copy, where from `[O, k]` it gathers (8% of a decode).
    let mut taps = weight
        .chunks(o * k)
        .map(|tap| transpose(tap, (o, k)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let merged = merged_taps(
        &taps.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        shape.replicated,
    )?;
    taps.extend(merged);
    let mut xcl = try_zeroed(
        tp * (band + kh - 1) * wp * c,
        "a convolution's channels-last input",
    )?;
    let mut block = try_zeroed(band * wp * o, "a convolution's output block")?;
    for i in 0..b {
        let x = &xp[i * c * tp * hp * wp..][..c * tp * hp * wp];
        let y = &mut out[i * o * t * ho * wo..][..o * t * ho * wo];
        for r0 in (0..ho).step_by(band) {
            let n = band.min(ho - r0);
            let rows = n + kh - 1;
            // Row (f, rr) of the copy: padded input row r0 + rr of frame f.
            // In tiles of GEMM_LANES channels by GEMM_LANES pixels, so that
            // reads and writes both run along cache lines.
            par_pieces(&mut xcl[..tp * rows * wp * c], wp * c, |q, dst| {
                let (f, rr) = (q / rows, q % rows);
                if f < shape.replicated {
                    // Never read (frame_taps).
                    return;
                }
                let src = |ci: usize| &x[((ci * tp + f) * hp + r0 + rr) * wp..][..wp];
                let mut tile = [[0f32; GEMM_LANES]; GEMM_LANES];
                for c0 in (0..c).step_by(GEMM_LANES) {
                    for x0 in (0..wp).step_by(GEMM_LANES) {
                        let xs = GEMM_LANES.min(wp - x0);
                        for (j, row) in tile.iter_mut().enumerate() {
                            for (t, &v) in row.iter_mut().zip(&src(c0 + j)[x0..x0 + xs]) {
                                *t = v;
                            }
                        }
                        for xx in 0..xs {
                            let d = &mut dst[(x0 + xx) * c + c0..][..GEMM_LANES];
                            for (d, row) in d.iter_mut().zip(&tile) {
                                *d = row[xx];
                            }
                        }
                    }
                }
            });
            // The last row only as wide as the output: its overrun would
            // read past the band.
            let pixels = (n - 1) * wp + wo;
            // Each thread takes its own pixels through every tap and into the
            // output: gemm's own split meets at a barrier after every block
            // of every product.
            let per = pixels.div_ceil(candle_core::utils::get_num_threads().max(1));
            let (block_ptr, y_ptr) = (Shared(block.as_mut_ptr()), Shared(y.as_mut_ptr()));
            let plane = t * ho * wo;
            for ti in 0..t {
                let part = |p0: usize| {
                    let count = per.min(pixels - p0);
                    for (j, ((matrix, f), di)) in frame_taps(ti, kt, shape.replicated)
                        .flat_map(|a| (0..kh).map(move |b| (a, b)))
                        .enumerate()
                    {
                        // SAFETY: the block holds `pixels` rows of o values,
                        // of which this part alone writes rows p0..p0 + count;
                        // this kernel row's kw * c rows of o weights lie in
                        // matrix `matrix`'s k rows; pixel p reads kw * c values
                        // from (row di + p / wp, column p % wp) of frame
                        // f <= ti + kt - 1 < tp of the copy, and the last one
                        // ends at the band's last row's column
                        // wo - 1 + kw - 1 = wp - 1.
                        unsafe {
                            gemm::gemm(
                                o,
                                count,
                                kw * c,
                                block_ptr.get().add(p0 * o),
                                o as isize,
                                1,
                                j > 0,
                                taps[matrix][di * kw * c * o..].as_ptr(),
                                o as isize,
                                1,
                                xcl[(f * rows + di) * wp * c + p0 * c..].as_ptr(),
                                c as isize,
                                1,
                                1.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                    }
                    // This part's output pixels: columns x0..x1 of row r.
                    let end = p0 + count;
                    for r in p0 / wp..=(end - 1) / wp {
                        let (x0, x1) = (
                            p0.max(r * wp) - r * wp,
                            end.min(r * wp + wo).saturating_sub(r * wp),
                        );
                        if x1 <= x0 {
                            continue;
                        }
                        let at = (ti * ho + r0 + r) * wo + x0;
                        for ch in 0..o {
                            // SAFETY: output row r0 + r of frame ti, channel
                            // ch, columns x0..x1 < wo: inside `y`, and written
                            // by this part alone (its pixels); the block rows
                            // read are this part's own.
                            let (dst, src) = unsafe {
                                (
                                    std::slice::from_raw_parts_mut(
                                        y_ptr.get().add(ch * plane + at),
                                        x1 - x0,
                                    ),
                                    std::slice::from_raw_parts(
                                        block_ptr.get().add((r * wp + x0) * o + ch),
                                        (x1 - x0 - 1) * o + 1,
                                    ),
                                )
                            };
                            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(o)) {
                                *d += v;
                            }
                        }
                    }
                };
                barrier_pool().execute_chunked(pixels.div_ceil(per), |range| {
                    for q in range {
                        part(q * per);
                    }
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(0x85eb_ca6b);
                (h >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Within f32 rounding of sums of a few thousand products.
    fn assert_close(got: &[f32], reference: &[f32]) {
        let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-5 * scale, "max difference {diff} (max {scale})");
    }

    /// Output frames 0 and 1 of a causal convolution whose input starts
    /// with two copies of frame 2 read it through summed taps.
    #[test]
    fn frame_taps_merge_the_replicated_frames() {
        let frames = |ti, replicated| frame_taps(ti, 3, replicated).collect::<Vec<_>>();
        assert_eq!(frames(0, 2), [(4, 2)]);
        assert_eq!(frames(1, 2), [(3, 2), (2, 3)]);
        assert_eq!(frames(2, 2), [(0, 2), (1, 3), (2, 4)]);
        assert_eq!(frames(0, 0), [(0, 0), (1, 1), (2, 2)]);
        assert_eq!(frames(0, 1), [(3, 1), (2, 2)]);
        let (w0, w1, w2) = ([1.0, 2.0], [10.0, 20.0], [100.0, 200.0]);
        let merged = merged_taps(&[&w0, &w1, &w2], 2).unwrap();
        assert_eq!(merged, [vec![11.0, 22.0], vec![111.0, 222.0]]);
    }

    /// The channels-last convolution matches the im2col one, and both match
    /// themselves told that the input's first two frames copy the third (a
    /// first frame batch, whose taps are then summed): three bands (a budget
    /// of two output rows), two samples, three temporal taps, output rows 7
    /// wide (not a multiple of the vector width), onto a nonzero output; a
    /// clip of distinct frames, a single image and a clip after two copies.
    #[test]
    fn convolution_paths_agree() {
        for (t, replicated) in [(2, 0), (1, 2), (4, 2)] {
            let (b, c, o, hp, wp) = (2, 64, 80, 7, 9);
            let tp = t + 2;
            let exact = ConvShape {
                input: [b, c, tp, hp, wp],
                kernel: (3, 3, 3),
                stride: 1,
                replicated: 0,
            };
            let (_, ho, wo) = exact.output();
            let mut xp = values(b * c * tp * hp * wp, 1);
            for plane in xp.chunks_mut(tp * hp * wp) {
                let (copies, rest) = plane.split_at_mut(replicated * hp * wp);
                for copy in copies.chunks_mut(hp * wp) {
                    copy.copy_from_slice(&rest[..hp * wp]);
                }
            }
            let weight = values(3 * o * 9 * c, 2);
            let start = values(b * o * t * ho * wo, 3);
            let budget = tp * wp * c * (2 + 2);
            let mut reference = start.clone();
            conv_im2col(&xp, exact, &weight, &mut reference, budget).unwrap();
            let shape = ConvShape {
                replicated,
                ..exact
            };
            let mut fast = start.clone();
            conv_channels_last(&xp, shape, &weight, &mut fast, budget).unwrap();
            let mut im2col = start;
            conv_im2col(&xp, shape, &weight, &mut im2col, budget).unwrap();
            assert_close(&fast, &reference);
            assert_close(&im2col, &reference);
        }
    }

    /// What the memory estimate adds for a channels-last convolution: the
    /// three buffers (with the summed taps of a first frame batch), and no
    /// overflow at any size.
    #[test]
    fn channels_last_scratch_counts_its_buffers() {
        let shape = ConvShape {
            input: [1, 64, 4, 7, 9],
            kernel: (3, 3, 3),
            stride: 1,
            replicated: 0,
        };
        // Band: all 5 output rows (within both bounds).
        assert_eq!(channels_last_band(shape, 80, 1 << 20), 5);
        let values = 3 * 80 * 9 * 64 + 4 * 7 * 9 * 64 + 5 * 9 * 80;
        assert_eq!(channels_last_scratch(shape, 80, 1 << 20), values);
        // A first frame batch's two summed taps.
        let first = ConvShape {
            replicated: 2,
            ..shape
        };
        let summed = 2 * 80 * 9 * 64;
        assert_eq!(channels_last_scratch(first, 80, 1 << 20), values + summed);
        let huge = ConvShape {
            input: [1, 512, usize::MAX, usize::MAX, usize::MAX],
            ..shape
        };
        assert_eq!(channels_last_scratch(huge, 512, 1 << 24), usize::MAX);
    }
}
