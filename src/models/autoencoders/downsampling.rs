//! `CogVideoXDownsample3D` (diffusers `models/downsampling.py`).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::causal_conv3d::FrameConv2d;
use super::cpu::{self, Fill, Pad};
use crate::error::{Error, Result};

type CResult<T> = candle_core::Result<T>;

/// Optional temporal halving (first frame kept when the count is odd), then
/// zero padding on the right and bottom and a 3x3 stride-2 convolution of
/// every frame.
#[derive(Debug, Clone)]
pub(crate) struct CogVideoXDownsample3D {
    conv: FrameConv2d,
    compress_time: bool,
}

impl CogVideoXDownsample3D {
    /// Loads `<vb>.conv.weight` `[C, C, 3, 3]` and its bias.
    pub(crate) fn load(vb: VarBuilder, channels: usize, compress_time: bool) -> CResult<Self> {
        Ok(Self {
            conv: FrameConv2d::load(vb.pp("conv"), channels, channels)?,
            compress_time,
        })
    }

    /// `[B, C, T, H, W]` -> `[B, C, T', H', W']`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        if self.compress_time {
            x = halve_frames(&x)?;
        }
        let (_, _, _, h, w) = x.dims5()?;
        // diffusers pads by one and runs an unpadded stride-2 convolution,
        // giving ho = (h + 1 - 3) / 2 + 1. The stride-2 im2col reads row
        // pairs, so pad up to 2 * (ho + 1); the extra zeros are never used.
        if h < 2 || w < 2 {
            return Err(Error::Internal(format!(
                "cannot downsample a {h}x{w} frame (at least 2x2 needed)"
            )));
        }
        if cpu::applies(&x) {
            // diffusers' own padding: the CPU path reads rows by index, not in pairs.
            let pad = Pad {
                context: 0,
                top: 0,
                bottom: 1,
                left: 0,
                right: 1,
            };
            return self.conv.forward_cpu(x, &Fill::Copy, pad, 2);
        }
        let (ho, wo) = ((h - 2) / 2 + 1, (w - 2) / 2 + 1);
        let x = x
            .pad_with_zeros(3, 0, 2 * (ho + 1) - h)?
            .pad_with_zeros(4, 0, 2 * (wo + 1) - w)?;
        Ok(self.conv.forward(&x, 2)?)
    }
}

/// Averages frame pairs (`avg_pool1d(2, 2)` over time); with an odd count
/// the first frame is kept as is and the rest are paired.
fn halve_frames(x: &Tensor) -> CResult<Tensor> {
    let (b, c, t, h, w) = x.dims5()?;
    let keep = t % 2;
    if t == keep {
        return Ok(x.clone());
    }
    let pairs =
        x.narrow(2, keep, t - keep)?
            .contiguous()?
            .reshape((b, c, (t - keep) / 2, 2, h, w))?;
    let avg = ((pairs.narrow(3, 0, 1)? + pairs.narrow(3, 1, 1)?)? / 2.0)?.squeeze(3)?;
    if keep == 1 {
        Tensor::cat(&[&x.narrow(2, 0, 1)?, &avg], 2)
    } else {
        Ok(avg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn frame_halving_keeps_the_first_frame_of_odd_counts() -> CResult<()> {
        let dev = Device::Cpu;
        let frames = |v: &[f32]| Tensor::from_slice(v, (1, 1, v.len(), 1, 1), &dev);
        let got = |x: Tensor| -> CResult<Vec<f32>> { halve_frames(&x)?.flatten_all()?.to_vec1() };
        assert_eq!(
            got(frames(&[1.0, 2.0, 4.0, 6.0, 10.0])?)?,
            vec![1.0, 3.0, 8.0]
        );
        assert_eq!(got(frames(&[2.0, 4.0, 6.0, 10.0])?)?, vec![3.0, 8.0]);
        assert_eq!(got(frames(&[5.0])?)?, vec![5.0]);
        Ok(())
    }
}
