//! The generic attention path, for every dtype and device: candle ops on
//! query chunks, so that memory stays bounded for long videos.

use candle_core::{DType, Result, Tensor};

use super::MAX_SCORE_ELEMENTS;

/// `softmax(q k^T * scale) v` over `[B, H, S, Dh]` tensors. Scores and
/// softmax run in f32 whatever the activation dtype, as the fused attention
/// kernels of PyTorch accumulate.
pub(super) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, h, sq, _) = q.dims4()?;
    let sk = k.dim(2)?;
    let dtype = q.dtype();
    let kt = k.to_dtype(DType::F32)?.transpose(2, 3)?.contiguous()?;
    let vf = v.to_dtype(DType::F32)?.contiguous()?;
    let rows = (MAX_SCORE_ELEMENTS / (b * h * sk).max(1)).clamp(1, sq);
    let mut outs = Vec::with_capacity(sq.div_ceil(rows));
    let mut start = 0;
    while start < sq {
        if start > 0 {
            crate::models::poll::check()?;
        }
        let len = rows.min(sq - start);
        let qc = (q.narrow(2, start, len)?.to_dtype(DType::F32)? * scale)?.contiguous()?;
        let probs = candle_nn::ops::softmax_last_dim(&qc.matmul(&kt)?)?;
        outs.push(probs.matmul(&vf)?);
        start += len;
    }
    Tensor::cat(&outs, 2)?.to_dtype(dtype)
}
