//! The attention and feed-forward layers' f32 CPU kernels: linear layers
//! that start from the bias and accumulate onto it, the tanh GELU in place,
//! and the query/key LayerNorm with RoPE in one pass.

use candle_core::utils::barrier_pool;
use candle_core::{Module, Result, Tensor};
use candle_nn::Linear;

use crate::models::cpu::{
    GEMM_LANES, Shared, applies, exp, gemm_parallelism, lane_sum, multiversion, par_pieces,
    par_pieces_polled, transpose, try_zeros, with_slices,
};

/// Tanh GELU, `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`,
/// written as `x / (1 + exp(-2u))`, the same function.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2 / pi)
    let u = K * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

multiversion! {
    fn gelu_slice(xs: &mut [f32]) {
        for x in xs {
            *x = gelu_one(*x);
        }
    }
}

/// Tanh GELU of `xs` in place (candle's `gelu` is scalar and
/// single-threaded), in vectorised pieces across the threads.
fn gelu_in_place(xs: &mut [f32]) {
    const PIECE: usize = 1 << 14;
    let n = xs.len();
    let (body, tail) = xs.split_at_mut(n - n % PIECE);
    par_pieces(body, PIECE, |_, piece| gelu_slice(piece));
    gelu_slice(tail);
}

/// `lin` as [`linear`] runs it fastest: an f32 CPU weight `W` `[N, K]` is
/// stored transposed (`[K, N]` row-major, seen through a transposed view, so
/// the layer keeps its shape and candle's `Linear` still applies). GEMM packs
/// the weight for its vector lanes; from `[N, K]` it does so on one thread
/// while the others wait, which made the 1024-wide products of the mid
/// benchmark 12% slower on two cores (interleaved, 1876 tokens). Other
/// dtypes and devices are returned as they are.
pub(super) fn cpu_linear(lin: Linear) -> Result<Linear> {
    let w = lin.weight();
    if !applies(w) || !w.is_contiguous() {
        return Ok(lin);
    }
    let (n, k) = w.dims2()?;
    let t = with_slices(std::slice::from_ref(w), |s| transpose(s[0], (n, k)))?;
    let stored = Tensor::from_vec(t, (k, n), w.device())?.t()?;
    Ok(Linear::new(stored, lin.bias().cloned()))
}

/// Rows per thread from which [`linear`] splits its product by columns.
const SPLIT_ROWS: usize = 64;

/// Most work between two polls of [`linear`], in floating-point
/// operations: about a tenth of a second on two cores.
const POLL_PIECE_FLOPS: usize = 8_000_000_000;

/// The fewest rows of a polled piece: smaller products run slower (the
/// weight is packed again for every piece).
const MIN_POLL_ROWS: usize = 128;

/// Rows `r0..r0 + rows` of `out` `[m, n]` (row-major, holding the bias
/// when `read_dst`) plus `xs` `[m, k]` times W^T, W's `n * k` values read
/// with row stride `w_rs` and column stride `w_cs` as W^T `[k, n]`.
fn gemm_rows(
    xs: &[f32],
    (ws, w_rs, w_cs): (&[f32], usize, usize),
    out: &mut [f32],
    (r0, m): (usize, usize),
    (n, k): (usize, usize),
    read_dst: bool,
) {
    // Each thread computes its own columns as a GEMM of its own: gemm's
    // threads meet after every block of the product, and this made the
    // products of the mid benchmark 5 to 9% faster on two cores
    // (interleaved A/B). Parts of whole vectors, to keep the packing
    // aligned; few rows leave it to gemm.
    let threads = candle_core::utils::get_num_threads().max(1);
    let per = if threads > 1 && m >= SPLIT_ROWS * threads {
        n.div_ceil(threads).next_multiple_of(GEMM_LANES)
    } else {
        n
    };
    assert!((r0 + m) * n <= out.len() && (r0 + m) * k <= xs.len() && n * k <= ws.len());
    let dst = Shared(out[r0 * n..].as_mut_ptr());
    let xs = &xs[r0 * k..];
    let part = |j0: usize, par: gemm::Parallelism| {
        let cols = per.min(n - j0);
        // SAFETY: out from row r0 is [m, n] row-major, xs from row r0
        // [m, k] row-major (checked above) and ws the n * k values of W,
        // which the strides read as W^T [k, n]; the part's columns
        // j0..j0 + cols lie inside all three, and no other part writes them.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                dst.get().add(j0),
                1,
                n as isize,
                read_dst,
                xs.as_ptr(),
                1,
                k as isize,
                ws.as_ptr().add(j0 * w_cs),
                w_cs as isize,
                w_rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    };
    if per == n {
        part(0, gemm_parallelism());
    } else {
        barrier_pool().execute_chunked(n.div_ceil(per), |range| {
            for p in range {
                part(p * per, gemm::Parallelism::None);
            }
        });
    }
}

/// A linear layer's `x W^T + b` for an f32 CPU input `[..., K]`, followed by
/// the tanh GELU when `gelu` is set. candle's `Linear` writes the product
/// into a fresh tensor and adds the bias into another, one full-size
/// allocation and pass more per layer (and one more for the activation);
/// here the rows of the output start as the bias, the GEMM accumulates onto
/// them, and the GELU is applied in place. Other dtypes and devices take
/// candle's path.
pub(crate) fn linear(lin: &Linear, x: &Tensor, gelu: bool) -> Result<Tensor> {
    let w = lin.weight();
    if !applies(x) || !applies(w) || lin.bias().is_some_and(|b| !applies(b)) {
        let y = lin.forward(x)?;
        return if gelu { y.gelu() } else { Ok(y) };
    }
    let (n, k) = w.dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("linear layer of {:?} applied to {dims:?}", w.dims());
    }
    let m = x.elem_count() / k.max(1);
    // The GEMM's right operand is W^T `[K, N]`: its row and column strides
    // in the stored weight, `[N, K]` or (see `cpu_linear`) `[K, N]`.
    let (w, w_rs, w_cs) = if w.is_contiguous() {
        (w.clone(), 1, k)
    } else if w.t()?.is_contiguous() {
        (w.t()?, n, 1)
    } else {
        (w.contiguous()?, 1, k)
    };
    let mut ts = vec![x.contiguous()?, w];
    if let Some(b) = lin.bias() {
        ts.push(b.contiguous()?);
    }
    let mut out = try_zeros(m * n, "linear layer output")?;
    with_slices(&ts, |v| {
        let (xs, ws) = (v[0], v[1]);
        if let Some(&bias) = v.get(2) {
            par_pieces_polled(&mut out, n, |_, row| row.copy_from_slice(bias))?;
        }
        // With a poll installed the rows run in pieces of about
        // `POLL_PIECE_FLOPS`, polled between: the pieces give the same bits
        // (each output element sums over K in the same order).
        let rows = if crate::models::poll::installed() {
            let most = (POLL_PIECE_FLOPS / (2 * n * k).max(1)).max(MIN_POLL_ROWS);
            // Pieces of equal size: a short last one would run slowest.
            m.div_ceil(m.div_ceil(most).max(1)).max(1)
        } else {
            m.max(1)
        };
        let read_dst = v.len() == 3;
        for r0 in (0..m).step_by(rows) {
            crate::models::poll::check()?;
            let piece = (r0, rows.min(m - r0));
            gemm_rows(xs, (ws, w_rs, w_cs), &mut out, piece, (n, k), read_dst);
            // Piece by piece, so that a poll comes no later than a piece.
            if gelu {
                gelu_in_place(&mut out[piece.0 * n..][..piece.1 * n]);
            }
        }
        Ok(())
    })?;
    let mut shape = dims.to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    Tensor::from_vec(out, shape, x.device())
}

/// The query or key projection `x` `[B, S, H * Dh]` as `[B, S, H, Dh]`,
/// LayerNorm-ed per head (`weight`, `bias` `[Dh]`) and, from token
/// `text_len` on, rotated by the half-width tables `cos`, `sin`
/// `[S - text_len, Dh / 2]` (interleaved pairs, as `rope_i`), in one pass.
pub(super) fn qk_norm_rope(
    x: &Tensor,
    heads: usize,
    (weight, bias, eps): (&Tensor, &Tensor, f32),
    text_len: usize,
    rope: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let (b, s, hd) = x.dims3()?;
    let d = hd / heads;
    let mut ts = vec![x.contiguous()?, weight.contiguous()?, bias.contiguous()?];
    if let Some((cos, sin)) = rope {
        if cos.dims() != [s - text_len, d / 2] || sin.dims() != cos.dims() {
            candle_core::bail!(
                "rotary tables {:?} do not fit {} video tokens of head size {d}",
                cos.dims(),
                s - text_len
            );
        }
        ts.push(cos.contiguous()?);
        ts.push(sin.contiguous()?);
    }
    let mut out = try_zeros(b * s * hd, "query/key projection")?;
    with_slices(&ts, |v| {
        let (xs, w, bi) = (v[0], v[1], v[2]);
        let tables = (v.len() == 5).then(|| (v[3], v[4]));
        par_pieces_polled(&mut out, d, |row, dst| {
            let tok = (row / heads) % s;
            let rope = match tables {
                Some((cos, sin)) if tok >= text_len => {
                    let half = d / 2;
                    let at = (tok - text_len) * half;
                    Some((&cos[at..][..half], &sin[at..][..half]))
                }
                _ => None,
            };
            qk_row(&xs[row * d..][..d], dst, w, bi, eps, rope);
        })
    })?;
    Tensor::from_vec(out, (b, s, heads, d), x.device())
}

multiversion! {
    /// One head's row of [`qk_norm_rope`]: LayerNorm of `src` into `dst`, then,
    /// given the row's `cos` and `sin`, the rotation of its interleaved pairs.
    fn qk_row(
        src: &[f32],
        dst: &mut [f32],
        weight: &[f32],
        bias: &[f32],
        eps: f32,
        rope: Option<(&[f32], &[f32])>,
    ) {
        let d = src.len() as f32;
        let mean = lane_sum(src, |v| v) / d;
        let var = lane_sum(src, |v| (v - mean) * (v - mean)) / d;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((o, &v), &w), &b) in dst.iter_mut().zip(src).zip(weight).zip(bias) {
            *o = (v - mean) * rstd * w + b;
        }
        if let Some((cos, sin)) = rope {
            for ((pair, &c), &s) in dst.chunks_exact_mut(2).zip(cos).zip(sin) {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * c - x1 * s;
                pair[1] = x0 * s + x1 * c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// The fast GELU and candle's agree within f32 rounding, over a range
    /// that covers both tails, on a length that is not a multiple of a piece.
    #[test]
    fn gelu_matches_candle() {
        let n = 3 * (1 << 14) + 5;
        let xs: Vec<f32> = (0..n).map(|i| (i as f32 / n as f32 - 0.5) * 40.0).collect();
        let mut fast = xs.clone();
        gelu_in_place(&mut fast);
        let x = Tensor::from_vec(xs, n, &Device::Cpu).unwrap();
        let generic = x.gelu().unwrap().to_vec1::<f32>().unwrap();
        for (i, (a, b)) in fast.iter().zip(&generic).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "gelu at {i}: {a} vs {b}"
            );
        }
    }

    /// The fused linear layer (bias first, GEMM onto it, GELU in place)
    /// agrees with candle's `Linear` and `gelu` within f32 rounding, with
    /// and without bias, with the weight as published and as `cpu_linear`
    /// stores it, for a batch of two and a long inner dimension (which the
    /// GEMM splits, so the bias is not added last), its columns computed in
    /// parts by the threads.
    #[test]
    fn linear_matches_candle() {
        let dev = Device::Cpu;
        let (k, n) = (1100, 37);
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
        // 2 x 150 rows: enough for the products to be split by columns
        // across the threads (`SPLIT_ROWS` per thread), in unequal parts.
        let x = Tensor::randn(0f32, 1.0, (2, 150, k), &dev).unwrap();
        for lin in [Linear::new(w.clone(), Some(b)), Linear::new(w, None)] {
            let stored = cpu_linear(lin.clone()).unwrap();
            assert!(stored.weight().t().unwrap().is_contiguous());
            for (layout, fast_lin) in [("published", &lin), ("transposed", &stored)] {
                for gelu in [false, true] {
                    let fast = linear(fast_lin, &x, gelu).unwrap();
                    let mut generic = lin.forward(&x).unwrap();
                    if gelu {
                        generic = generic.gelu().unwrap();
                    }
                    assert_eq!(fast.dims(), &[2, 150, n]);
                    let diff = crate::test_util::max_diff(&fast, &generic);
                    assert!(
                        diff < 1e-5,
                        "{layout} bias {} gelu {gelu}: {diff}",
                        lin.bias().is_some()
                    );
                }
            }
            // candle's own path (other dtypes and devices) takes the stored
            // layout too.
            let diff =
                crate::test_util::max_diff(&stored.forward(&x).unwrap(), &lin.forward(&x).unwrap());
            assert!(diff < 1e-5, "candle on the transposed weight: {diff}");
        }
    }
}
