//! Frames in memory, as callers (the C API, the OpenFX plugin) hand them
//! over: borrowed byte buffers in one of four [`PixelFormat`]s with signed
//! row strides; and the frame counts a CogVideoX clip may have.
//!
//! # Strides and the C API
//!
//! A frame view is a byte slice, the offset of the top row within it and a
//! signed row stride: row `y` starts at `top_offset + y * stride`. A C caller
//! passes a pointer to the **top row** and the stride in bytes; for a
//! bottom-up image (OpenFX hosts: row 0 of the buffer is the bottom of the
//! picture) the stride is negative. The FFI layer turns that into a slice
//! that starts `(height - 1) * |stride|` bytes *before* the pointer and is
//! [`FrameLayout::span`] bytes long, with `top_offset =
//! FrameLayout::top_offset()`. Strides need not be multiples of the sample
//! size: 16-bit and float samples are read with `from_ne_bytes`, so neither
//! the buffer's nor the rows' alignment matters.

mod view;

use crate::error::{Error, Result};
pub use view::{FrameLayout, FrameMut, FrameRef, MAX_DIMENSION, PixelFormat};

/// Frames the VAE compresses into one latent frame (after the first).
pub const TEMPORAL_COMPRESSION: usize = 4;

/// How many of `n` frames a CogVideoX clip can use: the largest `4k + 1` not
/// above `n`, dropping frames from the end as the CogVideo DDIM-inversion
/// script does (`n - (n + 3) % 4`; 81 → 81, 80 → 77).
pub fn usable_frame_count(n: usize) -> Result<usize> {
    if n == 0 {
        return Err(Error::invalid("a clip needs at least one frame"));
    }
    Ok(n - (n - 1) % TEMPORAL_COMPRESSION)
}

/// Latent frames the VAE makes of `frames` video frames: `(T - 1) / 4 + 1`.
pub fn latent_frame_count(frames: usize) -> Result<usize> {
    if frames == 0 {
        return Err(Error::invalid("a clip needs at least one frame"));
    }
    Ok((frames - 1) / TEMPORAL_COMPRESSION + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts() {
        let want = [
            (1, 1),
            (2, 1),
            (4, 1),
            (5, 5),
            (8, 5),
            (9, 9),
            (48, 45),
            (49, 49),
            (80, 77),
            (81, 81),
        ];
        for (n, k) in want {
            assert_eq!(usable_frame_count(n).unwrap(), k, "{n}");
            // The script's own formula.
            assert_eq!(n - (n + 3) % 4, k);
        }
        assert!(usable_frame_count(0).is_err());
        assert_eq!(latent_frame_count(49).unwrap(), 13);
        assert_eq!(latent_frame_count(81).unwrap(), 21);
        assert_eq!(latent_frame_count(1).unwrap(), 1);
        assert!(latent_frame_count(0).is_err());
    }
}
