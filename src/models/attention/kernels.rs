//! Vectorised f32 helpers of the CPU paths: a polynomial `exp` the compiler
//! can vectorise (libm's is scalar), the tanh GELU built on it, and the
//! plumbing to run them on raw slices across candle's threads.

use std::alloc::{Layout, alloc_zeroed};

use candle_core::utils::barrier_pool;
use candle_core::{DType, Module, Result, Storage, Tensor};
use candle_nn::Linear;

/// Lanes of the vectorised loops: written as fixed-size arrays so that the
/// compiler keeps each in vector registers of the enabled width.
pub(super) const LANES: usize = 16;

/// Defines `$vis fn $name(args) -> R { body }` so that the body runs
/// compiled for AVX-512 (with the `avx512` feature, on by default) or AVX2,
/// both with FMA, when the CPU has them. The crate is built for baseline
/// x86-64 (SSE2), where the kernels' loops are 4 lanes wide and `mul_add` is
/// a libm call; each call checks the (cached) CPU features once, so a call
/// should cover at least a row of work.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[cfg(feature = "avx512")]
                {
                    #[target_feature(enable = "avx512f,fma")]
                    fn avx512($($arg: $ty),*) $(-> $ret)? {
                        generic($($arg),*)
                    }
                    if std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        // SAFETY: the CPU has the features `avx512` is compiled for.
                        return unsafe { avx512($($arg),*) };
                    }
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Whether `x` takes the f32 CPU paths.
pub(super) fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// A pointer that may be shared by worker threads, each of which only
/// touches its own disjoint part.
pub(crate) struct Shared(pub(crate) *mut f32);
// SAFETY: see the users; every task writes a part no other task writes.
unsafe impl Sync for Shared {}
impl Shared {
    // A method, so that closures capture the `Sync` wrapper, not the pointer.
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }
}

/// `vec![0f32; n]`, but a failed allocation is an error naming `what` and
/// the byte count instead of an abort of the host process. Zeroed memory
/// from the allocator, as `vec!` uses, so fresh pages are not written twice.
pub(crate) fn try_zeros(n: usize, what: &str) -> Result<Vec<f32>> {
    let oom = || {
        candle_core::Error::msg(format!(
            "out of memory: cannot allocate {} bytes for {what}",
            n as u128 * 4
        ))
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<f32>(n).map_err(|_| oom())?;
    // SAFETY: the layout has a non-zero size (n > 0).
    let ptr = unsafe { alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return Err(oom());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `n`
    // f32s (the size and alignment a `Vec<f32>` of capacity `n` uses), and
    // all `n` values are initialised: zero bits are 0.0.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// Calls `f` with the row-major f32 values of each of `ts` (which must be
/// contiguous f32 CPU tensors).
pub(crate) fn with_slices<R>(ts: &[Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (t, (storage, layout)) in ts.iter().zip(&guards) {
        let Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("a CPU kernel got a tensor on {:?}", t.device());
        };
        if !layout.is_contiguous() {
            candle_core::bail!("a CPU kernel got a non-contiguous tensor {:?}", t.dims());
        }
        slices.push(&cpu.as_slice::<f32>()?[layout.start_offset()..][..t.elem_count()]);
    }
    f(&slices)
}

/// Runs `f(i, piece)` for every `len`-sized piece of `out` on candle's CPU
/// thread pool.
pub(crate) fn par_pieces(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if len == 0 {
        return;
    }
    let base = Shared(out.as_mut_ptr());
    barrier_pool().execute_chunked(out.len() / len, |range| {
        for i in range {
            // SAFETY: `i < out.len() / len` and the pool hands out every index
            // once, so the pieces lie inside `out` and never overlap.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(i * len), len) };
            f(i, piece);
        }
    });
}

/// Below this `exp` is taken as 0 (the normal range ends near -87.3).
const EXP_MIN: f32 = -87.0;
/// Above this `exp` is taken as infinite (`f32::MAX` is `exp(88.72)`).
const EXP_MAX: f32 = 88.0;

/// `exp(x)` to about 1 ulp (Cephes' `expf`: `2^n` times a polynomial of the
/// remainder), in plain arithmetic so that it vectorises. Below -87 it
/// gives 0 (the normal range ends there; `-inf` included), above 88 `inf`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let (zero, inf) = (x < EXP_MIN, x > EXP_MAX);
    let y = exp_in_range(if zero {
        EXP_MIN
    } else if inf {
        EXP_MAX
    } else {
        x
    });
    if zero {
        0.0
    } else if inf {
        f32::INFINITY
    } else {
        y
    }
}

/// `2^x` for `x <= 0`, to about 1 ulp (Cephes' `exp2f`: `2^n` times a
/// polynomial of the remainder in `[-1/2, 1/2]`). The softmax works in base 2
/// (its scores come out of the GEMM already multiplied by `log2(e)`), which
/// saves `exp`'s range reduction (`x * log2(e)`, then the remainder times
/// `ln 2` in two parts): three of its multiply-adds. No
/// overflow to handle, and below -126 it gives `2^-126` (1.2e-38, `-inf`
/// included) rather than 0, which no sum of softmax weights (at least 1, from
/// the maximum) can tell apart. A NaN stays NaN.
#[inline(always)]
pub(super) fn exp2_nonpositive(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // `x < MIN ? MIN : x` is one vector `max` instruction.
    let x = if x < EXP2_MIN { EXP2_MIN } else { x };
    let n = x + ROUND;
    let f = x - (n - ROUND);
    let mut p = 1.535_336_2e-4f32;
    p = p.mul_add(f, 1.339_887_4e-3);
    p = p.mul_add(f, 9.618_437e-3);
    p = p.mul_add(f, 5.550_332_5e-2);
    p = p.mul_add(f, 2.402_264_8e-1);
    p = p.mul_add(f, 6.931_472e-1);
    let y = p.mul_add(f, 1.0);
    // n - ROUND as an integer, in -126..=0: the exponent of a normal float.
    let k = n.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    y * f32::from_bits(((k + 127) as u32) << 23)
}

/// Below this [`exp2_nonpositive`] is taken as `2^-126`, the smallest normal.
const EXP2_MIN: f32 = -126.0;

/// The polynomial of [`exp`] for `x` in `[EXP_MIN, EXP_MAX]`, with fused
/// multiply-adds: the callers' `fma` target feature makes each one
/// instruction (Rust never fuses `a * b + c` on its own); only the generic
/// fallbacks, for x86 CPUs older than FMA (2013), pay for libm's `fmaf`.
#[inline(always)]
fn exp_in_range(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let n = x.mul_add(LOG2E, ROUND);
    let nf = n - ROUND;
    let r = nf.mul_add(-LN2_LO, nf.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    let k = n.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    y * f32::from_bits(((k + 127) as u32) << 23)
}

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

/// f32 lanes of `gemm`'s widest kernels (AVX-512). A product whose output
/// is not a multiple of this many values along its contiguous dimension is
/// packed by `gemm` on the calling thread while the others wait: an im2col
/// band of 855 values ran 15% slower than one of 864. The convolutions pad
/// their bands to it, and the linear layers split their columns by it.
pub(crate) const GEMM_LANES: usize = 16;

/// How the large products run: on candle's number of threads, as its own
/// matmul does.
pub(crate) fn gemm_parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        threads => gemm::Parallelism::Rayon(threads),
    }
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

/// Output rows (source columns) of a [`transpose`] task.
const TILE: usize = 16;

/// `src` `[rows, cols]` as `[cols, rows]`, row-major, across the threads
/// (candle's strided copy runs on one thread, and streamed weights are
/// transposed again at every call).
pub(crate) fn transpose(src: &[f32], (rows, cols): (usize, usize)) -> Result<Vec<f32>> {
    let mut out = try_zeros(rows * cols, "a transposed weight")?;
    // Source row by source row: one cache line read, one value appended to
    // each of the tile's output rows.
    let tile = |first: usize, dst: &mut [f32]| {
        let width = dst.len() / rows.max(1);
        for r in 0..rows {
            for (i, &v) in src[r * cols + first..][..width].iter().enumerate() {
                dst[i * rows + r] = v;
            }
        }
    };
    let body = cols - cols % TILE;
    let (head, tail) = out.split_at_mut(body * rows);
    par_pieces(head, TILE * rows, |t, dst| tile(t * TILE, dst));
    tile(body, tail);
    Ok(out)
}

/// Rows per thread from which [`linear`] splits its product by columns.
const SPLIT_ROWS: usize = 64;

/// A linear layer's `x W^T + b` for an f32 CPU input `[..., K]`, followed by
/// the tanh GELU when `gelu` is set. candle's `Linear` writes the product
/// into a fresh tensor and adds the bias into another, one full-size
/// allocation and pass more per layer (and one more for the activation);
/// here the rows of the output start as the bias, the GEMM accumulates onto
/// them, and the GELU is applied in place. Other dtypes and devices take
/// candle's path.
pub(super) fn linear(lin: &Linear, x: &Tensor, gelu: bool) -> Result<Tensor> {
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
            par_pieces(&mut out, n, |_, row| row.copy_from_slice(bias));
        }
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
        let dst = Shared(out.as_mut_ptr());
        let read_dst = v.len() == 3;
        let part = |j0: usize, par: gemm::Parallelism| {
            let cols = per.min(n - j0);
            // SAFETY: out is [m, n] row-major, xs [m, k] row-major and ws the
            // n * k values of W, which the strides read as W^T [k, n]; the
            // part's columns j0..j0 + cols lie inside all three, and no
            // other part writes them.
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
        Ok(())
    })?;
    if gelu {
        gelu_in_place(&mut out);
    }
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
        par_pieces(&mut out, d, |row, dst| {
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
        });
        Ok(())
    })?;
    Tensor::from_vec(out, (b, s, heads, d), x.device())
}

/// Sum of `f(x)` over `xs`, in [`LANES`] partial sums so that it vectorises.
#[inline(always)]
pub(crate) fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    chunks.remainder().iter().map(|&v| f(v)).sum::<f32>() + acc.iter().sum::<f32>()
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

    #[test]
    fn exp_matches_std_within_rounding() {
        let mut x = -90.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x), x.exp());
            let tol = 4.0 * f32::EPSILON * want + f32::MIN_POSITIVE * 2f32.powi(24);
            assert!((got - want).abs() <= tol, "exp({x}) = {got}, std {want}");
            x += 0.001_7;
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(100.0), f32::INFINITY);
    }

    #[test]
    fn exp2_matches_std_within_rounding() {
        let mut x = -126.0f32;
        while x <= 0.0 {
            let (got, want) = (exp2_nonpositive(x), (x as f64).exp2());
            let err = (got as f64 - want).abs() / want;
            assert!(
                err <= 2.0 * f32::EPSILON as f64,
                "2^{x} = {got}, std {want}"
            );
            x += 0.000_77;
        }
        assert_eq!(exp2_nonpositive(0.0), 1.0);
        assert_eq!(exp2_nonpositive(-1.0), 0.5);
        for x in [-126.5, -1e4, f32::NEG_INFINITY] {
            assert_eq!(exp2_nonpositive(x), f32::MIN_POSITIVE);
        }
        assert!(exp2_nonpositive(f32::NAN).is_nan());
    }

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
