//! Arithmetic that has to round as PyTorch's does, shared by the models and
//! the schedulers.

use std::ops::{Add, Div, Mul, Sub};

/// f32 or f64, for the functions below.
pub trait Float:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    /// `n` as this type (`n as f32`, `n as f64`).
    fn from_usize(n: usize) -> Self;
    /// `x` rounded to this type (`x as f32`, `x`).
    fn from_f64(x: f64) -> Self;
}

impl Float for f32 {
    fn from_usize(n: usize) -> Self {
        n as f32
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Float for f64 {
    fn from_usize(n: usize) -> Self {
        n as f64
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// `torch.linspace` in `T` with ATen's symmetric evaluation (the second half
/// counts back from `end`), which decides the last bits of RoPE positions
/// and of the schedulers' betas.
pub fn linspace<T: Float>(start: T, end: T, steps: usize) -> Vec<T> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / T::from_usize(steps - 1);
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * T::from_usize(i)
            } else {
                end - step * T::from_usize(steps - i - 1)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_is_symmetric_like_aten() {
        let v = linspace(0.0f32, 12.0, 13);
        assert_eq!(v, (0..13).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(linspace(3.0f32, 3.0, 1), vec![3.0]);
    }
}
