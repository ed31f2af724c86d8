//! Sources of Gaussian noise for the pipelines: the initial latents, the VAE
//! posterior sample and the DPM scheduler's per-step draws.
//!
//! [`SeededNoise`] is a small counter-based generator defined here, not a
//! crate's: its stream is part of the library's reproducibility promise (same
//! seed, same video, on every platform and release). [`RecordedNoise`] hands
//! out caller-supplied tensors in order, so a run can be replayed exactly
//! against another implementation.

use std::collections::VecDeque;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Something that produces standard normal tensors on request.
pub trait NoiseSource: Send {
    /// A `N(0, 1)` tensor of `shape` in f32 on `device`. `purpose` names the
    /// draw for error messages ("initial latents", "DPM step 3", ...).
    fn randn(&mut self, shape: &[usize], device: &Device, purpose: &str) -> Result<Tensor>;
}

/// Deterministic noise from a 64-bit seed: SplitMix64 for uniform bits,
/// Box-Muller for normals. Fast enough on the host for latent-sized draws.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    state: u64,
}

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never zero, so the logarithm below is finite.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

impl NoiseSource for SeededNoise {
    fn randn(&mut self, shape: &[usize], device: &Device, _purpose: &str) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut data = Vec::with_capacity(n + 1);
        while data.len() < n {
            let r = (-2.0 * self.uniform().ln()).sqrt();
            let theta = 2.0 * std::f64::consts::PI * self.uniform();
            data.push((r * theta.cos()) as f32);
            data.push((r * theta.sin()) as f32);
        }
        data.truncate(n);
        Ok(Tensor::from_vec(data, shape, device)?)
    }
}

/// Replays caller-supplied noise tensors in order.
#[derive(Debug, Clone, Default)]
pub struct RecordedNoise {
    queue: VecDeque<Tensor>,
}

impl RecordedNoise {
    pub fn new(tensors: impl IntoIterator<Item = Tensor>) -> Self {
        Self {
            queue: tensors.into_iter().collect(),
        }
    }

    /// How many recorded draws are left.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl NoiseSource for RecordedNoise {
    fn randn(&mut self, shape: &[usize], device: &Device, purpose: &str) -> Result<Tensor> {
        let t = self
            .queue
            .pop_front()
            .ok_or_else(|| Error::invalid(format!("no recorded noise left for {purpose}")))?;
        if t.dims() != shape {
            return Err(Error::invalid(format!(
                "recorded noise for {purpose} has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_reproducible_and_standard() {
        let dev = Device::Cpu;
        let a = SeededNoise::new(42).randn(&[4, 1000], &dev, "t").unwrap();
        let b = SeededNoise::new(42).randn(&[4, 1000], &dev, "t").unwrap();
        let c = SeededNoise::new(43).randn(&[4, 1000], &dev, "t").unwrap();
        let diff = |x: &Tensor, y: &Tensor| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(diff(&a, &b), 0.0);
        assert!(diff(&a, &c) > 1.0);
        let mean = a.mean_all().unwrap().to_scalar::<f32>().unwrap();
        let var = a
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.1,
            "mean {mean} var {var}"
        );
    }

    #[test]
    fn recorded_noise_checks_shape_and_count() {
        let dev = Device::Cpu;
        let mut r = RecordedNoise::new([Tensor::zeros((2, 3), DType::F32, &dev).unwrap()]);
        assert!(
            r.randn(&[3, 2], &dev, "x")
                .unwrap_err()
                .to_string()
                .contains("shape")
        );
        let mut r = RecordedNoise::new([Tensor::zeros((2, 3), DType::F32, &dev).unwrap()]);
        r.randn(&[2, 3], &dev, "x").unwrap();
        assert!(
            r.randn(&[2, 3], &dev, "y")
                .unwrap_err()
                .to_string()
                .contains("no recorded noise left for y")
        );
    }
}
