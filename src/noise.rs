//! Sources of Gaussian noise for the pipelines: the initial latents, the VAE
//! posterior sample and the DPM scheduler's per-step draws.
//!
//! [`SeededNoise`] is a small counter-based generator defined here, not a
//! crate's: its stream is part of the library's reproducibility promise (same
//! seed, same video, on every platform and release). [`SuppliedNoise`]
//! hands out caller-supplied values first, so a run can be replayed exactly
//! against another implementation. [`NoiseOptions`] is what a call is
//! given, [`NoisePlan`] the draws it makes, in the order supplied noise is
//! consumed.

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

/// Noise for a call: a seed, optionally preceded by caller-supplied values
/// (see [`SuppliedNoise`]): the call's draws, flattened and concatenated in
/// the order each pipeline's options document.
#[derive(Debug, Clone, Default)]
pub struct NoiseOptions {
    pub seed: u64,
    pub supplied: Vec<f32>,
}

impl NoiseOptions {
    pub fn seed(seed: u64) -> Self {
        Self {
            seed,
            supplied: Vec::new(),
        }
    }

    /// Supplied draws given as tensors, in order.
    pub fn with_draws(seed: u64, draws: &[Tensor]) -> Result<Self> {
        let mut supplied = Vec::new();
        for d in draws {
            supplied.extend(d.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Self { seed, supplied })
    }

    pub(crate) fn source(&self) -> SuppliedNoise<'_> {
        SuppliedNoise::new(&self.supplied, self.seed)
    }
}

/// One random draw of a call: what it is for and its shape (f32, row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoiseDraw {
    pub purpose: String,
    pub shape: Vec<usize>,
}

impl NoiseDraw {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The draws a call makes, in the order supplied noise is consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoisePlan {
    pub draws: Vec<NoiseDraw>,
}

impl NoisePlan {
    pub(crate) fn push(&mut self, purpose: impl Into<String>, shape: &[usize]) {
        self.draws.push(NoiseDraw {
            purpose: purpose.into(),
            shape: shape.to_vec(),
        });
    }

    /// Values the whole call takes.
    pub fn total(&self) -> usize {
        self.draws.iter().map(NoiseDraw::len).sum()
    }

    /// Supplied noise must cover whole draws: all of them, or a prefix that
    /// ends at a draw boundary (the seed supplies the rest). Anything else is
    /// a caller mistake that would otherwise go unnoticed.
    pub fn check_supplied(&self, len: usize) -> Result<()> {
        let mut end = 0;
        if len == 0 {
            return Ok(());
        }
        for d in &self.draws {
            end += d.len();
            if end == len {
                return Ok(());
            }
        }
        Err(Error::invalid(format!(
            "noise_len {len} does not match this call's draws, which take {} values in all: {}; pass all of them or a prefix ending at a draw boundary",
            self.total(),
            self.summary()
        )))
    }

    /// "initial latents [1, 3, 16, 8, 12] (4608 values), 3 DPM step draws of [..] (4608 each)".
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut i = 0;
        while i < self.draws.len() {
            let d = &self.draws[i];
            let is_step = |x: &NoiseDraw| x.purpose.starts_with("DPM step") && x.shape == d.shape;
            let mut j = i + 1;
            if is_step(d) {
                while j < self.draws.len() && is_step(&self.draws[j]) {
                    j += 1;
                }
            }
            parts.push(if j - i > 1 {
                format!(
                    "{} DPM step draws of {:?} ({} each)",
                    j - i,
                    d.shape,
                    d.len()
                )
            } else {
                format!("{} {:?} ({} values)", d.purpose, d.shape, d.len())
            });
            i = j;
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
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
