//! Fused, tiled attention for f32 on the CPU (flash-style).
//!
//! Each task takes a block of [`BLOCK_Q`] queries of one head and walks the
//! keys in blocks of [`BLOCK_K`]: one GEMM gives the block's scores, an
//! online softmax (running row maximum and sum) turns them into weights
//! against the maximum seen so far, rescaling what was accumulated, and a
//! second GEMM adds the weighted values. Only one block of scores per thread
//! ever exists, so memory does not grow with the square of the sequence, and
//! the scores stay in the cache between the two products instead of making a
//! round trip through memory as the chunked path's do.
//!
//! Queries, values and the output are token-major (`[B, S, H, Dh]`, the
//! layout of the projections), read and written in place through strides.
//! The keys alone are copied once, per head and transposed (`[B, H, Dh, S]`):
//! the GEMM kernel packs an operand whose rows are not contiguous on every
//! call, and token-major keys were re-packed (a gather) for every query
//! block, about a tenth of the time at long sequence lengths.

use candle_core::{Result, Tensor};

use crate::models::cpu::{
    self, LANES, Shared, exp2_nonpositive, multiversion, par_pieces_polled, try_zeros, with_slices,
};

/// Queries per task. Each task packs every key and value block of its head
/// for the GEMMs, so larger query blocks pack less often; with [`BLOCK_K`]
/// the score block is 512 KiB, which stays in a current server core's L2
/// cache (2 MiB) between the two products. 256 took 3% longer (Emerald
/// Rapids, AVX2 and AVX-512 builds alike), 128 another 3%.
const BLOCK_Q: usize = 512;
/// Keys per step.
const BLOCK_K: usize = 256;

/// Whether the inputs take this path: f32 on the CPU.
pub(super) fn applies(q: &Tensor, kv: &[(&Tensor, &Tensor)]) -> bool {
    cpu::applies(q) && kv.iter().all(|(k, v)| cpu::applies(k) && cpu::applies(v))
}

/// `softmax(q k^T * scale) v` with the keys and values of all `kv` segments
/// taken as one sequence; `q` `[B, Sq, H, Dh]`, each segment `[B, Sk, H, Dh]`.
/// Returns `[B, Sq, H, Dh]`.
pub(super) fn attention(q: &Tensor, kv: &[(&Tensor, &Tensor)], scale: f32) -> Result<Tensor> {
    let (b, sq, h, d) = q.dims4()?;
    let mut ts = vec![q.contiguous()?];
    let mut lens = Vec::with_capacity(kv.len());
    for (k, v) in kv {
        let (kb, sk, kh, kd) = k.dims4()?;
        if (kb, kh, kd) != (b, h, d) || v.dims() != k.dims() {
            candle_core::bail!(
                "attention keys {:?} and values {:?} do not match queries {:?}",
                k.dims(),
                v.dims(),
                q.dims()
            );
        }
        lens.push(sk);
        ts.push(k.contiguous()?);
        ts.push(v.contiguous()?);
    }
    crate::models::poll::check()?;
    let keys_t = with_slices(&ts[1..], |s| {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| transpose_keys(s[2 * i], (b, len, h, d)))
            .collect::<Result<Vec<_>>>()
    })?;
    let threads = candle_core::utils::get_num_threads().max(1);
    let tasks = b * h * sq.div_ceil(BLOCK_Q);
    let workers = threads.min(tasks).max(1);
    // Per worker: a block of scores, the output accumulator, the running
    // maxima, sums and rescale factors of its rows.
    let per_worker = BLOCK_Q * BLOCK_K + BLOCK_Q * d + 3 * BLOCK_Q;
    let mut scratch = try_zeros(workers * per_worker, "attention scratch")?;
    crate::models::poll::check()?;
    let mut out = try_zeros(b * sq * h * d, "attention output")?;
    with_slices(&ts, |s| {
        let (qs, segs) = (s[0], &s[1..]);
        let segments: Vec<Segment> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| Segment {
                k_t: &keys_t[i],
                v: segs[2 * i + 1],
                len,
            })
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let out_ptr = Shared(out.as_mut_ptr());
        // The calling thread polls between its tasks; a stop makes every
        // worker take no further task.
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let job = |scratch: &mut [f32], caller: bool| -> Result<()> {
            loop {
                if caller && let Err(e) = crate::models::poll::check() {
                    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(e);
                }
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(());
                }
                let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if t >= tasks {
                    return Ok(());
                }
                let blocks = sq.div_ceil(BLOCK_Q);
                let (bh, qb) = (t / blocks, t % blocks);
                let (bi, hi) = (bh / h, bh % h);
                let q0 = qb * BLOCK_Q;
                let rows = BLOCK_Q.min(sq - q0);
                let q_off = ((bi * sq + q0) * h + hi) * d;
                // SAFETY: this task's output rows (tokens q0..q0+rows of head hi
                // in sample bi) are written by no other task, and lie in `out`.
                let out_rows = unsafe { out_ptr.get().add(q_off) };
                query_block(
                    &qs[q_off..],
                    &segments,
                    (bi, hi, rows),
                    (h, d),
                    // Scores in base 2 (see `softmax_step`).
                    scale * std::f32::consts::LOG2_E,
                    scratch,
                    out_rows,
                );
            }
        };
        if workers == 1 {
            job(&mut scratch, true)
        } else {
            std::thread::scope(|scope| {
                let mut pieces = scratch.chunks_mut(per_worker);
                let first = pieces.next();
                for piece in pieces {
                    scope.spawn(|| job(piece, false));
                }
                first.map_or(Ok(()), |first| job(first, true))
            })
        }
    })?;
    drop(scratch);
    Tensor::from_vec(out, (b, sq, h, d), q.device())
}

/// Tokens per step of [`transpose_keys`]: a tile of 16 key rows stays in the
/// L1 cache while each of its columns is written out as 16 contiguous values.
const TRANSPOSE_TILE: usize = 16;

/// The keys `k` `[B, S, H, Dh]` as `[B, H, Dh, S]`, every head of every
/// sample transposed by one task.
fn transpose_keys(k: &[f32], (b, s, h, d): (usize, usize, usize, usize)) -> Result<Vec<f32>> {
    let mut out = try_zeros(b * h * d * s, "transposed attention keys")?;
    par_pieces_polled(&mut out, d * s, |bh, dst| {
        let (bi, hi) = (bh / h, bh % h);
        for t0 in (0..s).step_by(TRANSPOSE_TILE) {
            let tile = TRANSPOSE_TILE.min(s - t0);
            for j in 0..d {
                let col = &mut dst[j * s + t0..][..tile];
                for (t, c) in col.iter_mut().enumerate() {
                    *c = k[((bi * s + t0 + t) * h + hi) * d + j];
                }
            }
        }
    })?;
    Ok(out)
}

/// The keys (transposed, `[B, H, Dh, S]`) and values (`[B, S, H, Dh]`) of
/// one segment of the key sequence.
struct Segment<'a> {
    k_t: &'a [f32],
    v: &'a [f32],
    len: usize,
}

/// One block of `rows` queries (starting at `q`, row stride `h * d`) against
/// every key; writes the normalised outputs at `out` with the same strides.
/// `scale2` is the attention's scale times `log2(e)`: the softmax then works
/// in base 2, the same weights for a cheaper exponential.
fn query_block(
    q: &[f32],
    segments: &[Segment],
    (bi, hi, rows): (usize, usize, usize),
    (h, d): (usize, usize),
    scale2: f32,
    scratch: &mut [f32],
    out: *mut f32,
) {
    let stride = h * d;
    let (scores, rest) = scratch.split_at_mut(BLOCK_Q * BLOCK_K);
    let (acc, rest) = rest.split_at_mut(BLOCK_Q * d);
    let (max, rest) = rest.split_at_mut(BLOCK_Q);
    let (sum, corr) = rest.split_at_mut(BLOCK_Q);
    acc[..rows * d].fill(0.0);
    max[..rows].fill(f32::NEG_INFINITY);
    sum[..rows].fill(0.0);
    debug_assert!(q.len() >= (rows - 1) * stride + d);
    for seg in segments {
        let base = (bi * seg.len * h + hi) * d;
        let base_t = (bi * h + hi) * d * seg.len;
        let mut k0 = 0;
        while k0 < seg.len {
            let cols = BLOCK_K.min(seg.len - k0);
            let off = base + k0 * stride;
            // SAFETY: the query rows lie in `q` (checked above), keys
            // k0..k0+cols of head hi (columns of its `[Dh, len]` block in
            // `k_t`, rows of `v`) lie in their segment, and the
            // scratch blocks are disjoint slices of this worker's own buffer.
            unsafe {
                // scores[rows x cols] = scale2 * q[rows x d] k[cols x d]^T
                gemm::gemm(
                    rows,
                    cols,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    BLOCK_K as isize,
                    false,
                    q.as_ptr(),
                    1,
                    stride as isize,
                    seg.k_t.as_ptr().add(base_t + k0),
                    1,
                    seg.len as isize,
                    0.0,
                    scale2,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            softmax_step(scores, cols, &mut max[..rows], &mut sum[..rows], corr);
            for (r, &c) in corr[..rows].iter().enumerate() {
                if c != 1.0 {
                    acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= c);
                }
            }
            // SAFETY: as above.
            unsafe {
                // acc[rows x d] += weights[rows x cols] v[cols x d]
                gemm::gemm(
                    rows,
                    d,
                    cols,
                    acc.as_mut_ptr(),
                    1,
                    d as isize,
                    true,
                    scores.as_ptr(),
                    1,
                    BLOCK_K as isize,
                    seg.v.as_ptr().add(off),
                    1,
                    stride as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            k0 += cols;
        }
    }
    for r in 0..rows {
        let inv = 1.0 / sum[r];
        // SAFETY: row r of this task's output block (see `attention`).
        let dst = unsafe { std::slice::from_raw_parts_mut(out.add(r * stride), d) };
        for (o, a) in dst.iter_mut().zip(&acc[r * d..(r + 1) * d]) {
            *o = a * inv;
        }
    }
}

multiversion! {
    /// The online softmax over one block of scores (`max.len()` rows of `cols`
    /// values, row stride [`BLOCK_K`]): replaces the scores by
    /// `2^(score - new_max)`, updates each row's running maximum and sum, and
    /// leaves in `corr` the factor `2^(old_max - new_max)` by which what was
    /// accumulated for the row must be rescaled. The per-row steps (new
    /// maximum, correction) run as one pass over all rows, vectorised across
    /// them, rather than a scalar exponential at the end of each row.
    fn softmax_step(
        scores: &mut [f32],
        cols: usize,
        max: &mut [f32],
        sum: &mut [f32],
        corr: &mut [f32],
    ) {
        let rows = max.len();
        let corr = &mut corr[..rows];
        // The block's row maxima, held in `corr` until the next pass.
        for (row, m) in scores.chunks(BLOCK_K).zip(corr.iter_mut()) {
            let mut lanes = [f32::NEG_INFINITY; LANES];
            let mut chunks = row[..cols].chunks_exact(LANES);
            for c in &mut chunks {
                for i in 0..LANES {
                    lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
                }
            }
            for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
                *l = if v > *l { v } else { *l };
            }
            *m = fold_lanes(lanes, |a, b| if b > a { b } else { a });
        }
        for (m, c) in max.iter_mut().zip(corr.iter_mut()) {
            let new_max = if *c > *m { *c } else { *m };
            *c = exp2_nonpositive(*m - new_max);
            *m = new_max;
        }
        for (r, row) in scores.chunks_mut(BLOCK_K).take(rows).enumerate() {
            let new_max = max[r];
            let mut acc = [0f32; LANES];
            let mut chunks = row[..cols].chunks_exact_mut(LANES);
            for c in &mut chunks {
                for i in 0..LANES {
                    let e = exp2_nonpositive(c[i] - new_max);
                    c[i] = e;
                    acc[i] += e;
                }
            }
            for (a, v) in acc.iter_mut().zip(chunks.into_remainder()) {
                *v = exp2_nonpositive(*v - new_max);
                *a += *v;
            }
            sum[r] = sum[r] * corr[r] + fold_lanes(acc, |a, b| a + b);
        }
    }
}

/// `f` over the lanes of a vector by halves (a tree: log2(LANES) vector
/// steps where a left-to-right fold takes LANES scalar ones).
#[inline(always)]
fn fold_lanes(mut lanes: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for i in 0..half {
            lanes[i] = f(lanes[i], lanes[i + half]);
        }
        half /= 2;
    }
    lanes[0]
}
