//! `CogVideoXUpsample3D` (diffusers `models/upsampling.py`).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::causal_conv3d::{FrameConv2d, gather};
use super::cpu::{self, Fill, Pad};
use crate::error::Result;

type CResult<T> = candle_core::Result<T>;

/// Nearest 2x upsampling of every frame (and, with `compress_time`, of the
/// frame axis except a lone first frame), then a padded 3x3 convolution of
/// every frame.
#[derive(Debug, Clone)]
pub(crate) struct CogVideoXUpsample3D {
    conv: FrameConv2d,
    compress_time: bool,
}

impl CogVideoXUpsample3D {
    /// Loads `<vb>.conv.weight` `[C, C, 3, 3]` and its bias.
    pub(crate) fn load(vb: VarBuilder, channels: usize, compress_time: bool) -> CResult<Self> {
        Ok(Self {
            conv: FrameConv2d::load(vb.pp("conv"), channels, channels)?,
            compress_time,
        })
    }

    /// `[B, C, T, H, W]` -> `[B, C, T', 2H, 2W]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, t, h, w) = x.dims5()?;
        let double = |n: usize| (0..2 * n).map(|i| i / 2).collect::<Vec<_>>();
        let frames = if self.compress_time && t > 1 {
            frame_indices(t)
        } else {
            (0..t).collect()
        };
        if cpu::applies(x) {
            // The resize is done while writing the convolution's padded input.
            let fill = Fill::Nearest {
                frames: &frames,
                rows: &double(h),
                cols: &double(w),
            };
            return self.conv.forward_cpu(x.clone(), &fill, Pad::same(0), 1);
        }
        let dev = x.device();
        let narrow = |v: Vec<usize>| v.into_iter().map(|i| i as u32).collect::<Vec<_>>();
        let x = gather(x, 4, &narrow(double(w)), dev)?;
        let x = gather(&x, 3, &narrow(double(h)), dev)?;
        let x = gather(&x, 2, &narrow(frames), dev)?;
        let x = x.pad_with_zeros(3, 1, 1)?.pad_with_zeros(4, 1, 1)?;
        Ok(self.conv.forward(&x, 1)?)
    }
}

/// Source frames of the temporal 2x: every frame twice, except that with an
/// odd count the first frame appears once (`T' = 1 + 2(T - 1)`).
fn frame_indices(t: usize) -> Vec<usize> {
    if t % 2 == 1 {
        std::iter::once(0)
            .chain((2..2 * t).map(|i| i / 2))
            .collect()
    } else {
        (0..2 * t).map(|i| i / 2).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::frame_indices;

    #[test]
    fn temporal_upsampling_keeps_a_lone_first_frame() {
        assert_eq!(frame_indices(3), vec![0, 1, 1, 2, 2]);
        assert_eq!(frame_indices(2), vec![0, 0, 1, 1]);
        assert_eq!(frame_indices(5).len(), 9);
    }
}
