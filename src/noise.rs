//! Sources of Gaussian noise for the pipelines: the initial latents, the VAE
//! posterior sample and the DPM scheduler's per-step draws.
//!
//! [`SeededNoise`] is a small counter-based generator defined here, not a
//! crate's: its stream is part of the library's reproducibility promise (same
//! seed, same video, on every platform and release). [`SuppliedNoise`]
//! hands out caller-supplied values first, so a run can be replayed exactly
//! against another implementation.

use candle_core::{Device, Tensor};

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

/// Caller-supplied noise first, then a seeded generator: each draw takes the
/// next `numel` values of the supplied stream (the draws of a call,
/// flattened and concatenated in the order the call documents); once the
/// stream is used up the seeded generator continues. This lets a caller pin
/// just the initial latents, or every draw of a run to replay it against
/// another implementation.
#[derive(Debug, Clone)]
pub struct SuppliedNoise<'a> {
    data: &'a [f32],
    pos: usize,
    then: SeededNoise,
}

impl<'a> SuppliedNoise<'a> {
    /// Borrows the caller's values: a call may be handed gigabytes of noise,
    /// which are read, never copied.
    pub fn new(data: &'a [f32], seed: u64) -> Self {
        Self {
            data,
            pos: 0,
            then: SeededNoise::new(seed),
        }
    }

    /// Supplied values not yet consumed.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

impl NoiseSource for SuppliedNoise<'_> {
    fn randn(&mut self, shape: &[usize], device: &Device, purpose: &str) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        match self.remaining() {
            0 => self.then.randn(shape, device, purpose),
            left if left < n => Err(Error::invalid(format!(
                "supplied noise ends inside the draw for {purpose}: {left} values left, {n} needed"
            ))),
            _ => {
                let values = self.data[self.pos..self.pos + n].to_vec();
                self.pos += n;
                Ok(Tensor::from_vec(values, shape, device)?)
            }
        }
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
    fn supplied_noise_comes_first_then_the_seed() {
        let dev = Device::Cpu;
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut s = SuppliedNoise::new(&values, 7);
        let a = s.randn(&[2, 2], &dev, "a").unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
        let err = s.randn(&[3], &dev, "b").unwrap_err().to_string();
        assert!(err.contains("ends inside the draw for b"), "{err}");
        s.randn(&[2], &dev, "c").unwrap();
        let seeded = s.randn(&[4], &dev, "d").unwrap();
        let want = SeededNoise::new(7).randn(&[4], &dev, "d").unwrap();
        assert_eq!(
            seeded.to_vec1::<f32>().unwrap(),
            want.to_vec1::<f32>().unwrap()
        );
    }
}
