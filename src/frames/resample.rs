//! Separable Lanczos-3 resampling of RGB f32 planes, as Pillow's
//! `Image.resize(..., LANCZOS, box=...)` computes its coefficients: the
//! filter support grows with the downscale factor (antialiasing), taps that
//! fall outside the source are dropped and the rest renormalised.
//!
//! Resizing runs row by row from a row source to a row sink so that neither
//! side needs a full-size intermediate copy of the frame.

use super::ResizeMode;

/// Lanczos lobes; Pillow's `LANCZOS` and diffusers' default `resample`.
const LANCZOS_A: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-LANCZOS_A..LANCZOS_A).contains(&x) {
        sinc(x) * sinc(x / LANCZOS_A)
    } else {
        0.0
    }
}

/// Where each destination sample along one axis reads from.
#[derive(Debug)]
enum Taps {
    /// Unit scale at a whole-pixel offset: a plain copy. Kept apart from the
    /// filter so that equal sizes and whole-pixel crops are exact (the sinc
    /// of a non-zero integer is not exactly 0 in floating point).
    Shift(usize),
    /// `spans[i] = (first source index, count)`; the weights of destination
    /// `i` are `weights[i * width..][..count]`.
    Filter {
        spans: Vec<(usize, usize)>,
        weights: Vec<f32>,
        width: usize,
    },
}

/// One axis of a resize: the source interval `[start, start + len * scale)`
/// lands on destination samples `offset..offset + len`.
#[derive(Debug)]
struct Axis {
    offset: usize,
    len: usize,
    taps: Taps,
}

impl Axis {
    fn new(src_len: usize, start: f64, scale: f64, offset: usize, len: usize) -> Self {
        let taps = if scale == 1.0 && start.fract() == 0.0 {
            Taps::Shift(start as usize)
        } else {
            Self::lanczos_taps(src_len, start, scale, len)
        };
        Axis { offset, len, taps }
    }

    /// The whole source onto `len` samples at `offset`.
    fn whole(src_len: usize, offset: usize, len: usize) -> Self {
        Self::new(src_len, 0.0, src_len as f64 / len as f64, offset, len)
    }

    /// Pillow's `precompute_coeffs`, in f64, stored as f32.
    fn lanczos_taps(src_len: usize, start: f64, scale: f64, len: usize) -> Taps {
        let filter_scale = scale.max(1.0);
        let support = LANCZOS_A * filter_scale;
        let width = support.ceil() as usize * 2 + 1;
        let mut spans = Vec::with_capacity(len);
        let mut weights = vec![0.0f32; len * width];
        let mut w64 = vec![0.0f64; width];
        for (i, out) in weights.chunks_exact_mut(width).enumerate() {
            let center = start + (i as f64 + 0.5) * scale;
            // Truncation as Pillow's `(int)` casts; both ends clipped to the source.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).clamp(0, src_len as i64) as usize;
            let end = end.max(first + 1).min(src_len);
            let first = first.min(end - 1);
            let count = (end - first).min(width);
            let mut sum = 0.0;
            for (k, w) in w64[..count].iter_mut().enumerate() {
                *w = lanczos(((first + k) as f64 - center + 0.5) / filter_scale);
                sum += *w;
            }
            for (o, w) in out.iter_mut().zip(&w64[..count]) {
                *o = if sum == 0.0 { 0.0 } else { (w / sum) as f32 };
            }
            spans.push((first, count));
        }
        Taps::Filter {
            spans,
            weights,
            width,
        }
    }

    /// Source indices `[first, end)` that any destination sample reads.
    fn source_range(&self) -> (usize, usize) {
        match &self.taps {
            Taps::Shift(s) => (*s, s + self.len),
            Taps::Filter { spans, .. } => spans
                .iter()
                .fold((usize::MAX, 0), |(a, b), &(s, n)| (a.min(s), b.max(s + n))),
        }
    }

    /// Resamples one line: `dst[i]` from `src` (indexed from source 0).
    fn apply_line(&self, src: &[f32], dst: &mut [f32]) {
        match &self.taps {
            Taps::Shift(s) => dst.copy_from_slice(&src[*s..*s + dst.len()]),
            Taps::Filter {
                spans,
                weights,
                width,
            } => {
                for ((d, &(first, count)), w) in
                    dst.iter_mut().zip(spans).zip(weights.chunks_exact(*width))
                {
                    *d = src[first..first + count]
                        .iter()
                        .zip(&w[..count])
                        .map(|(s, w)| s * w)
                        .sum();
                }
            }
        }
    }
}

/// A full resize from a `src_w x src_h` frame to a `dst_w x dst_h` frame:
/// the image lands on the destination rectangle given by the two axes; the
/// rest of the destination (letterbox bars) is black.
#[derive(Debug)]
pub(crate) struct Plan {
    src_w: usize,
    dst_w: usize,
    dst_h: usize,
    x: Axis,
    y: Axis,
}

impl Plan {
    pub(crate) fn new(mode: ResizeMode, src: (usize, usize), dst: (usize, usize)) -> Self {
        let ((src_w, src_h), (dst_w, dst_h)) = (src, dst);
        // Compare aspect ratios exactly: sizes are at most 2^15, products fit.
        let wider_dst = dst_w * src_h >= dst_h * src_w;
        let (x, y) = match mode {
            ResizeMode::Stretch => (Axis::whole(src_w, 0, dst_w), Axis::whole(src_h, 0, dst_h)),
            ResizeMode::Fit => {
                // The limiting axis fills the destination; the other is
                // scaled to whole pixels and centred, as diffusers'
                // `_resize_and_fill` sizes and places the image.
                let (cw, ch) = if wider_dst {
                    ((src_w * dst_h / src_h).max(1), dst_h)
                } else {
                    (dst_w, (src_h * dst_w / src_w).max(1))
                };
                (
                    Axis::whole(src_w, dst_w / 2 - cw / 2, cw),
                    Axis::whole(src_h, dst_h / 2 - ch / 2, ch),
                )
            }
            ResizeMode::Crop => {
                // As diffusers' `_resize_and_crop`: scale to a whole-pixel
                // size that covers the destination, then cut a centred
                // window at offset `covered / 2 - len / 2`; done here in
                // one pass by resampling the matching source box.
                if wider_dst {
                    let covered = src_h * dst_w / src_w;
                    (
                        Axis::whole(src_w, 0, dst_w),
                        crop_axis(src_h, covered, dst_h),
                    )
                } else {
                    let covered = src_w * dst_h / src_h;
                    (
                        crop_axis(src_w, covered, dst_w),
                        Axis::whole(src_h, 0, dst_h),
                    )
                }
            }
        };
        Plan {
            src_w,
            dst_w,
            dst_h,
            x,
            y,
        }
    }

    /// Resamples one frame. `read_row(y, rows)` fills the three channel rows
    /// of source row `y` (each `src_w` long); `write_row(y, rows)` receives
    /// destination row `y`, `dst_w` samples per channel, black (0) outside
    /// the image rectangle.
    pub(crate) fn run(
        &self,
        scratch: &mut Scratch,
        mut read_row: impl FnMut(usize, [&mut [f32]; 3]),
        mut write_row: impl FnMut(usize, [&[f32]; 3]),
    ) {
        let (y_first, y_end) = self.y.source_range();
        let cw = self.x.len;
        let Scratch { src, mid, dst } = scratch;
        for c in 0..3 {
            src[c].resize(self.src_w, 0.0);
            mid[c].resize((y_end - y_first) * cw, 0.0);
            dst[c].clear();
            dst[c].resize(self.dst_w, 0.0);
        }

        // Horizontal pass over the source rows the vertical pass needs.
        for y in y_first..y_end {
            let [r, g, b] = src;
            read_row(y, [r, g, b]);
            for c in 0..3 {
                let line = &mut mid[c][(y - y_first) * cw..][..cw];
                self.x.apply_line(&src[c], line);
            }
        }

        // Vertical pass, one destination row at a time.
        let (x0, y0) = (self.x.offset, self.y.offset);
        for yd in 0..self.dst_h {
            for c in 0..3 {
                let out = &mut dst[c][x0..x0 + cw];
                if yd < y0 || yd >= y0 + self.y.len {
                    out.fill(0.0);
                } else {
                    self.vertical(yd - y0, &mid[c], y_first, out);
                }
            }
            write_row(yd, [&dst[0], &dst[1], &dst[2]]);
        }
    }

    /// Destination image row `i` from the horizontally resampled rows in
    /// `mid` (row `k` of `mid` is source row `y_first + k`).
    fn vertical(&self, i: usize, mid: &[f32], y_first: usize, out: &mut [f32]) {
        let cw = out.len();
        let row = |y: usize| &mid[(y - y_first) * cw..][..cw];
        match &self.y.taps {
            Taps::Shift(s) => out.copy_from_slice(row(s + i)),
            Taps::Filter {
                spans,
                weights,
                width,
            } => {
                let (first, count) = spans[i];
                out.fill(0.0);
                for (k, &w) in weights[i * width..][..count].iter().enumerate() {
                    for (o, s) in out.iter_mut().zip(row(first + k)) {
                        *o += w * s;
                    }
                }
            }
        }
    }
}

/// The cropped axis of [`ResizeMode::Crop`]: the source scaled to `covered`
/// samples, of which the centred `len` are kept.
fn crop_axis(src_len: usize, covered: usize, len: usize) -> Axis {
    let scale = src_len as f64 / covered as f64;
    let skip = covered / 2 - len / 2;
    Axis::new(src_len, skip as f64 * scale, scale, 0, len)
}

/// Per-thread working rows, reused from frame to frame.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    src: [Vec<f32>; 3],
    mid: [Vec<f32>; 3],
    dst: [Vec<f32>; 3],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resizes one plane (same data in all channels) and returns channel 0.
    fn resize(
        mode: ResizeMode,
        src: &[f32],
        (sw, sh): (usize, usize),
        (dw, dh): (usize, usize),
    ) -> Vec<f32> {
        let plan = Plan::new(mode, (sw, sh), (dw, dh));
        let mut out = vec![f32::NAN; dw * dh];
        plan.run(
            &mut Scratch::default(),
            |y, rows| {
                for r in rows {
                    r.copy_from_slice(&src[y * sw..][..sw]);
                }
            },
            |y, rows| out[y * dw..][..dw].copy_from_slice(rows[0]),
        );
        out
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    #[test]
    fn equal_sizes_are_exact_copies() {
        let src = ramp(7 * 5);
        for mode in [ResizeMode::Stretch, ResizeMode::Crop, ResizeMode::Fit] {
            assert_eq!(resize(mode, &src, (7, 5), (7, 5)), src, "{mode:?}");
        }
    }

    #[test]
    fn whole_pixel_crop_is_an_exact_window() {
        // 9x4 -> 5x4: unit scale, two columns cut on each side.
        let src = ramp(9 * 4);
        let out = resize(ResizeMode::Crop, &src, (9, 4), (5, 4));
        for y in 0..4 {
            assert_eq!(&out[y * 5..][..5], &src[y * 9 + 2..][..5]);
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![0.25f32; 13 * 11];
        for (mode, dst) in [
            (ResizeMode::Stretch, (5, 3)),
            (ResizeMode::Stretch, (40, 29)),
            (ResizeMode::Crop, (8, 3)),
            (ResizeMode::Crop, (3, 17)),
        ] {
            for v in resize(mode, &src, (13, 11), dst) {
                assert!((v - 0.25).abs() < 1e-6, "{mode:?} {dst:?}: {v}");
            }
        }
    }

    #[test]
    fn fit_letterboxes_with_black() {
        // 4x2 into 4x4: image rows 1..3, black rows 0 and 3.
        let src = vec![1.0f32; 8];
        let out = resize(ResizeMode::Fit, &src, (4, 2), (4, 4));
        assert_eq!(&out[..4], &[0.0; 4]);
        assert_eq!(&out[4..12], &[1.0; 8]);
        assert_eq!(&out[12..], &[0.0; 4]);
        // 2x4 into 5x4: image columns 1..3 (offset 5 / 2 - 2 / 2).
        let src = vec![1.0f32; 8];
        let out = resize(ResizeMode::Fit, &src, (2, 4), (5, 4));
        for y in 0..4 {
            assert_eq!(&out[y * 5..][..5], &[0.0, 1.0, 1.0, 0.0, 0.0]);
        }
    }

    #[test]
    fn downscale_by_two_matches_pillow_weights() {
        // Pillow LANCZOS, 8 -> 4 samples (scale 2, support 6): the weights of
        // output 0 are lanczos((x - 1 + 0.5) / 2) for x in 0..7, normalised.
        let plan = Plan::new(ResizeMode::Stretch, (8, 1), (4, 1));
        let Taps::Filter {
            spans,
            weights,
            width,
        } = &plan.x.taps
        else {
            panic!("expected a filter");
        };
        assert_eq!(spans[0], (0, 7));
        let raw: Vec<f64> = (0..7)
            .map(|x| lanczos((x as f64 - 1.0 + 0.5) / 2.0))
            .collect();
        let sum: f64 = raw.iter().sum();
        for (k, r) in raw.iter().enumerate() {
            assert!((weights[k] as f64 - r / sum).abs() < 1e-7);
        }
        assert_eq!(*width, 13);
    }

    #[test]
    fn downscale_averages_fine_detail() {
        // A one-pixel checkerboard shrunk 4x averages to grey, not aliasing.
        let src: Vec<f32> = (0..32 * 32)
            .map(|i| ((i % 32 + i / 32) % 2) as f32)
            .collect();
        for v in resize(ResizeMode::Stretch, &src, (32, 32), (8, 8)) {
            assert!((v - 0.5).abs() < 0.02, "{v}");
        }
    }
}
