//! The toolbox of the f32 CPU kernels (VAE, transformer, attention): a
//! polynomial `exp` the compiler can vectorise (libm's is scalar), compiling
//! a kernel for the CPU's vector width (`multiversion!`), and the plumbing
//! to run kernels on raw slices across candle's threads.

use candle_core::utils::barrier_pool;
use candle_core::{DType, Device, Result, Storage, Tensor};

/// Lanes of the vectorised loops: written as fixed-size arrays so that the
/// compiler keeps each in vector registers of the enabled width.
pub(crate) const LANES: usize = 16;

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
pub(crate) fn applies(x: &Tensor) -> bool {
    applies_to(x.device(), x.dtype())
}

/// Whether tensors of `dtype` on `device` take the f32 CPU paths, for the
/// memory estimates made before there is a tensor.
pub(crate) fn applies_to(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && dtype == DType::F32
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

/// [`try_zeroed`](crate::memory::try_zeroed), the one fallible zeroed
/// allocation, for kernels that return candle's errors: the
/// `OutOfMemory` kind comes back when the error leaves candle.
pub(crate) fn try_zeros(n: usize, what: &str) -> Result<Vec<f32>> {
    crate::memory::try_zeroed(n, what).map_err(crate::Error::into_candle)
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

/// [`par_pieces`] in waves of about [`POLL_WAVE`] values with the caller's
/// poll checked between them, where one is installed (see
/// `models/poll.rs`): a pass over a whole activation is a quarter of a
/// second of CPU work at the 5b model's default size. Same pieces, same
/// bits; an error from the poll leaves the rest of `out` unwritten.
pub(crate) fn par_pieces_polled(
    out: &mut [f32],
    len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<()> {
    if len == 0 || out.len() <= POLL_WAVE || !crate::models::poll::installed() {
        par_pieces(out, len, f);
        return Ok(());
    }
    // Whole rounds of the pool's threads per wave: a wave of three pieces on
    // two threads would leave one idle half the time.
    let threads = candle_core::utils::get_num_threads().max(1);
    let per_wave = (POLL_WAVE / len).max(1).next_multiple_of(threads) * len;
    for (w, wave) in out.chunks_mut(per_wave).enumerate() {
        crate::models::poll::check()?;
        let first = w * (per_wave / len);
        par_pieces(wave, len, |i, piece| f(first + i, piece));
    }
    Ok(())
}

/// `[B, S_i, D]` tensors joined along the tokens (dim 1), as `Tensor::cat`,
/// but for f32 on the CPU copied across the threads and polled between
/// waves: joining a 5b block's activations is 436 MB, a fifth of a second
/// on one thread.
pub(crate) fn cat_tokens(parts: &[&Tensor]) -> Result<Tensor> {
    if parts.is_empty() || !parts.iter().all(|t| applies(t)) {
        return Tensor::cat(parts, 1);
    }
    let (b, _, d) = parts[0].dims3()?;
    let mut lens = Vec::with_capacity(parts.len());
    for t in parts {
        let (tb, ts, td) = t.dims3()?;
        if (tb, td) != (b, d) {
            candle_core::bail!(
                "cannot join tokens {:?} and {:?}",
                parts[0].dims(),
                t.dims()
            );
        }
        lens.push(ts);
    }
    let s: usize = lens.iter().sum();
    let ts = parts
        .iter()
        .map(|t| t.contiguous())
        .collect::<Result<Vec<_>>>()?;
    let mut out = try_zeros(b * s * d, "joined tokens")?;
    with_slices(&ts, |v| {
        par_pieces_polled(&mut out, d, |row, dst| {
            let (sample, mut tok) = (row / s, row % s);
            for (src, &len) in v.iter().zip(&lens) {
                if tok < len {
                    dst.copy_from_slice(&src[(sample * len + tok) * d..][..d]);
                    return;
                }
                tok -= len;
            }
        })
    })?;
    Tensor::from_vec(out, (b, s, d), parts[0].device())
}

/// Values per wave of [`par_pieces_polled`]: 16 MiB, a few milliseconds of
/// the cheapest row work, so one more barrier per wave costs nothing.
const POLL_WAVE: usize = 1 << 22;

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
pub(crate) fn exp2_nonpositive(x: f32) -> f32 {
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

#[cfg(test)]
mod tests {
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

    /// The token join gives `Tensor::cat`'s values, polled in waves when a
    /// poll is installed, and stops on the poll's error.
    #[test]
    fn cat_tokens_is_cat_and_polls_in_waves() {
        use crate::models::poll::with_poll;
        use std::time::Duration;
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (2, 700, 3072), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (2, 900, 3072), &dev).unwrap();
        let want = Tensor::cat(&[&a, &b], 1).unwrap();
        let same = |t: &Tensor| {
            let d = (t - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        };
        same(&cat_tokens(&[&a, &b]).unwrap());
        let mut calls = 0;
        let mut count = || -> Result<()> {
            calls += 1;
            Ok(())
        };
        let polled = with_poll(Some(&mut count), Duration::ZERO, || cat_tokens(&[&a, &b])).unwrap();
        same(&polled);
        // 9.8 Mi values in waves of 4 Mi (rounded to whole rows): three.
        assert_eq!(calls, 3);
        let mut stop = || -> Result<()> { candle_core::bail!("stop") };
        let r = with_poll(Some(&mut stop), Duration::ZERO, || cat_tokens(&[&a, &b]));
        assert!(r.unwrap_err().to_string().contains("stop"));
    }
}
