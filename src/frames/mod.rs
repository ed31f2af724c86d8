//! Frames in memory to and from the model's video tensor.
//!
//! Callers (the C API, the OpenFX plugin) hand over frames as borrowed byte
//! buffers in one of four [`PixelFormat`]s and get results written into
//! buffers they own. This module converts a clip of such frames into the
//! `[1, 3, T, H, W]` f32 tensor in `[-1, 1]` the VAE encodes, and a decoded
//! video tensor back into frames of any size and format, resizing between
//! the caller's size and the working size with a [`ResizeMode`].
//!
//! # Values
//!
//! Input, to `[0, 1]` in f32 and then `v * 2 - 1` (diffusers'
//! `VaeImageProcessor.normalize`):
//! - 8-bit: `x / 255`, exactly as diffusers' `pil_to_numpy` (`/ 255.0` on
//!   float32) and the CogVideo DDIM-inversion script (`x / 255.0 * 2.0 - 1.0`
//!   on float32); both give the same f32 values, since doubling is exact.
//! - 16-bit: `x / 65535`.
//! - float: clamped to `[0, 1]` first (NaN reads as 0). Compositors hand over
//!   scene-referred values outside that range; the model was trained on
//!   `[0, 1]` display images, so anything else is out of distribution.
//! - alpha is ignored: frames are taken as they are, not un-premultiplied.
//!
//! Output, diffusers' `VideoProcessor.postprocess_video` →
//! `VaeImageProcessor.postprocess`: `(x * 0.5 + 0.5).clamp(0, 1)` computed in
//! the tensor's own dtype (as diffusers does with the VAE's output dtype; it
//! is f32 for an f32 tensor), then converted to f32, then
//! - 8-bit: `round_half_even(v * 255)` with the product in f32, which is
//!   `numpy_to_pil`'s `(images * 255).round().astype("uint8")` after
//!   `pt_to_numpy` (the `output_type="pil"` path);
//! - 16-bit: likewise with 65535;
//! - float: `v` as is (the `output_type="np"` values);
//! - alpha, where the format has it, is opaque: 255, 65535 or 1.0.
//!
//! # Resizing
//!
//! Lanczos-3 with Pillow's coefficients (diffusers' default `resample`):
//! separable, support widened by the downscale factor so downscaling
//! antialiases, run in f32 on `[0, 1]` planes. Crop and fit geometry (the
//! whole-pixel scaled size and the centring offset) are those of diffusers'
//! `_resize_and_crop` / `_resize_and_fill`. An axis at unit scale and a
//! whole-pixel offset is a plain copy, so equal sizes are the identity
//! exactly. Resampled values are clamped to `[0, 1]` again (Lanczos
//! overshoots at edges). Pillow resamples 8-bit images in fixed point and
//! rounds to 8 bits, so resized values are close to diffusers' (within about
//! one 8-bit level), not bit-identical; unresized values are identical.
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

mod resample;
mod view;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use resample::{Plan, Scratch};
pub use view::{FrameLayout, FrameMut, FrameRef, MAX_DIMENSION, PixelFormat};

/// How a frame is fitted to a size with a different aspect ratio. Each mode
/// is used the same way in both directions: input frame → working size, and
/// model frame → output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// Scale x and y independently to the target size (may distort).
    #[default]
    Stretch,
    /// Scale to cover the target, keeping the aspect ratio, and cut off
    /// what overhangs, centred.
    Crop,
    /// Scale to fit inside the target, keeping the aspect ratio, centred,
    /// with black bars (`-1` in model space, 0 in pixels) on the sides.
    Fit,
}

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

/// Converts a clip into the model's `[1, 3, T, height, width]` f32 video
/// tensor in `[-1, 1]` on `device` (T = `frames.len()`; a single image gives
/// T = 1, as the image-to-video pipelines use it). All frames must share
/// size and format; strides may differ.
pub fn frames_to_video(
    frames: &[FrameRef<'_>],
    height: usize,
    width: usize,
    mode: ResizeMode,
    device: &Device,
) -> Result<Tensor> {
    let first = frames
        .first()
        .ok_or_else(|| Error::invalid("a clip needs at least one frame"))?;
    view::check_dimensions("working", width, height)?;
    for (i, f) in frames.iter().enumerate() {
        if (f.width(), f.height(), f.format()) != (first.width(), first.height(), first.format()) {
            return Err(Error::invalid(format!(
                "frame {i} is {}x{} {} but frame 0 is {}x{} {}: frames of a clip must share \
                 size and format",
                f.width(),
                f.height(),
                f.format(),
                first.width(),
                first.height(),
                first.format()
            )));
        }
    }

    let t = frames.len();
    let plane = width * height;
    let mut data = alloc_f32(t.checked_mul(3 * plane), "video tensor")?;
    let plan = Plan::new(mode, (first.width(), first.height()), (width, height));
    {
        // Channel-major layout [3, T, H, W]: frame t's planes are the t-th
        // chunk of each channel's block.
        let (r, rest) = data.split_at_mut(t * plane);
        let (g, b) = rest.split_at_mut(t * plane);
        let planes = r
            .chunks_exact_mut(plane)
            .zip(g.chunks_exact_mut(plane))
            .zip(b.chunks_exact_mut(plane));
        let mut jobs: Vec<_> = frames
            .iter()
            .zip(planes)
            .map(|(f, ((r, g), b))| (f, [r, g, b]))
            .collect();
        parallel(&mut jobs, |(frame, planes), scratch| {
            plan.run(
                scratch,
                |y, rows| decode_row(frame.row(y), frame.format(), rows),
                |y, rows| {
                    for (plane, row) in planes.iter_mut().zip(rows) {
                        for (o, v) in plane[y * width..][..width].iter_mut().zip(row) {
                            *o = clamp01(*v) * 2.0 - 1.0;
                        }
                    }
                },
            )
        })?;
    }
    Ok(Tensor::from_vec(data, (1, 3, t, height, width), device)?)
}

/// Writes a decoded video tensor (`[1, 3, T, H, W]` or `[3, T, H, W]`, model
/// space, any float dtype and device) into `outputs`, one per frame. Each
/// output may have its own size and format.
pub fn video_to_frames(
    video: &Tensor,
    outputs: &mut [FrameMut<'_>],
    mode: ResizeMode,
) -> Result<()> {
    HostVideo::from_tensor(video)?.write_frames(outputs, mode)
}

/// A decoded video on the host, postprocessed to RGB planes in `[0, 1]` at
/// the model's size. Lets a caller that renders one frame at a time (an
/// OpenFX render call) fetch the tensor once and write frames on demand.
#[derive(Debug, Clone)]
pub struct HostVideo {
    frames: usize,
    height: usize,
    width: usize,
    /// `[3, T, H, W]`, channel-major like the tensor.
    data: Vec<f32>,
}

impl HostVideo {
    /// Denormalises `video` as diffusers' postprocessing does (see the
    /// module docs) and copies it to the host.
    pub fn from_tensor(video: &Tensor) -> Result<Self> {
        let video = match video.dims() {
            [1, _, _, _, _] => video.squeeze(0)?,
            [_, _, _, _] => video.clone(),
            dims => {
                return Err(Error::invalid(format!(
                    "video tensor must be [1, 3, T, H, W] or [3, T, H, W], got {dims:?}"
                )));
            }
        };
        let (c, frames, height, width) = video.dims4()?;
        if c != 3 || frames == 0 || height == 0 || width == 0 {
            return Err(Error::invalid(format!(
                "video tensor must have 3 channels and non-empty frames, got {:?}",
                video.dims()
            )));
        }
        if !video.dtype().is_float() {
            return Err(Error::invalid(format!(
                "video tensor must be floating point, got {:?}",
                video.dtype()
            )));
        }
        let data = video
            .affine(0.5, 0.5)?
            .clamp(0f32, 1f32)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(HostVideo {
            frames,
            height,
            width,
            data,
        })
    }

    pub fn num_frames(&self) -> usize {
        self.frames
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Channel `c` (0 = R, 1 = G, 2 = B) of frame `t`, `height * width`
    /// values row by row.
    ///
    /// # Panics
    /// If `c >= 3` or `t >= num_frames()`.
    pub fn plane(&self, c: usize, t: usize) -> &[f32] {
        assert!(c < 3 && t < self.frames, "plane ({c}, {t}) out of range");
        let n = self.height * self.width;
        &self.data[(c * self.frames + t) * n..][..n]
    }

    /// Writes frame `index` into `output`, resized with `mode`.
    pub fn write_frame(
        &self,
        index: usize,
        output: &mut FrameMut<'_>,
        mode: ResizeMode,
    ) -> Result<()> {
        if index >= self.frames {
            return Err(Error::invalid(format!(
                "frame {index} requested from a video of {} frames",
                self.frames
            )));
        }
        self.write(index, output, mode, &mut Scratch::default());
        Ok(())
    }

    /// Writes every frame, `outputs[t]` receiving frame `t`.
    pub fn write_frames(&self, outputs: &mut [FrameMut<'_>], mode: ResizeMode) -> Result<()> {
        if outputs.len() != self.frames {
            return Err(Error::invalid(format!(
                "{} output frames given for a video of {} frames",
                outputs.len(),
                self.frames
            )));
        }
        let mut jobs: Vec<_> = outputs.iter_mut().enumerate().collect();
        parallel(&mut jobs, |(t, out), scratch| {
            self.write(*t, out, mode, scratch)
        })
    }

    fn write(&self, t: usize, out: &mut FrameMut<'_>, mode: ResizeMode, scratch: &mut Scratch) {
        let plan = Plan::new(mode, (self.width, self.height), (out.width(), out.height()));
        let planes = [self.plane(0, t), self.plane(1, t), self.plane(2, t)];
        let w = self.width;
        let format = out.format();
        plan.run(
            scratch,
            |y, rows| {
                for (row, plane) in rows.into_iter().zip(planes) {
                    row.copy_from_slice(&plane[y * w..][..w]);
                }
            },
            |y, rows| encode_row(rows, format, out.row_mut(y)),
        );
    }
}

/// `[0, 1]` clamp that also maps NaN to 0 (`f32::clamp` keeps NaN).
fn clamp01(v: f32) -> f32 {
    if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
}

/// Reads one row of pixels into three channel rows in `[0, 1]`.
fn decode_row(bytes: &[u8], format: PixelFormat, [r, g, b]: [&mut [f32]; 3]) {
    let px = bytes.chunks_exact(format.bytes_per_pixel());
    let out = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
    match format {
        PixelFormat::Rgb8 | PixelFormat::Rgba8 => {
            for (p, ((r, g), b)) in px.zip(out) {
                *r = p[0] as f32 / 255.0;
                *g = p[1] as f32 / 255.0;
                *b = p[2] as f32 / 255.0;
            }
        }
        PixelFormat::Rgba16 => {
            let s =
                |p: &[u8], c: usize| u16::from_ne_bytes([p[2 * c], p[2 * c + 1]]) as f32 / 65535.0;
            for (p, ((r, g), b)) in px.zip(out) {
                *r = s(p, 0);
                *g = s(p, 1);
                *b = s(p, 2);
            }
        }
        PixelFormat::Rgba32F => {
            let s = |p: &[u8], c: usize| {
                clamp01(f32::from_ne_bytes([
                    p[4 * c],
                    p[4 * c + 1],
                    p[4 * c + 2],
                    p[4 * c + 3],
                ]))
            };
            for (p, ((r, g), b)) in px.zip(out) {
                *r = s(p, 0);
                *g = s(p, 1);
                *b = s(p, 2);
            }
        }
    }
}

/// Writes three channel rows in `[0, 1]` (clamped here) as pixels.
fn encode_row([r, g, b]: [&[f32]; 3], format: PixelFormat, bytes: &mut [u8]) {
    let px = bytes.chunks_exact_mut(format.bytes_per_pixel());
    let rgb = r
        .iter()
        .zip(g)
        .zip(b)
        .map(|((r, g), b)| [*r, *g, *b].map(clamp01));
    match format {
        PixelFormat::Rgb8 | PixelFormat::Rgba8 => {
            for (p, v) in px.zip(rgb) {
                for (o, v) in p.iter_mut().zip(v) {
                    *o = (v * 255.0).round_ties_even() as u8;
                }
                if let Some(a) = p.get_mut(3) {
                    *a = u8::MAX;
                }
            }
        }
        PixelFormat::Rgba16 => {
            for (p, v) in px.zip(rgb) {
                let q = v.map(|v| (v * 65535.0).round_ties_even() as u16);
                for (o, s) in p.chunks_exact_mut(2).zip(q.into_iter().chain([u16::MAX])) {
                    o.copy_from_slice(&s.to_ne_bytes());
                }
            }
        }
        PixelFormat::Rgba32F => {
            for (p, v) in px.zip(rgb) {
                for (o, s) in p.chunks_exact_mut(4).zip(v.into_iter().chain([1.0])) {
                    o.copy_from_slice(&s.to_ne_bytes());
                }
            }
        }
    }
}

/// A zeroed f32 buffer of `len` values (`None`: too many to count), or an
/// error instead of an abort if it cannot be had.
fn alloc_f32(len: Option<usize>, what: &str) -> Result<Vec<f32>> {
    let len = len.ok_or_else(|| Error::invalid(format!("{what} is too large")))?;
    crate::memory::try_zeroed(len, what)
}

/// Runs `work` over `jobs` on up to one thread per core, contiguous chunks
/// per thread, each with its own scratch rows.
fn parallel<T: Send>(jobs: &mut [T], work: impl Fn(&mut T, &mut Scratch) + Sync) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    if threads <= 1 {
        let mut scratch = Scratch::default();
        jobs.iter_mut().for_each(|j| work(j, &mut scratch));
        return Ok(());
    }
    let per_thread = jobs.len().div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks_mut(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    let mut scratch = Scratch::default();
                    chunk.iter_mut().for_each(|j| work(j, &mut scratch));
                })
            })
            .collect();
        // Join every thread before reporting, so none outlives the borrow.
        let panicked = handles
            .into_iter()
            .map(|h| h.join())
            .filter(|r| r.is_err())
            .count();
        if panicked == 0 {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "{panicked} frame conversion thread(s) panicked"
            )))
        }
    })
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

    #[test]
    fn eight_bit_codes_survive_decode_and_encode() {
        let bytes: Vec<u8> = (0..=255).flat_map(|v| [v, 255 - v, v / 2]).collect();
        let mut planes = [vec![0.0; 256], vec![0.0; 256], vec![0.0; 256]];
        let [r, g, b] = &mut planes;
        decode_row(&bytes, PixelFormat::Rgb8, [r, g, b]);
        // Through model space and back, as the full round trip does.
        for p in &mut planes {
            for v in p.iter_mut() {
                *v = (*v * 2.0 - 1.0) * 0.5 + 0.5;
            }
        }
        let mut out = vec![0u8; bytes.len()];
        encode_row(
            [&planes[0], &planes[1], &planes[2]],
            PixelFormat::Rgb8,
            &mut out,
        );
        assert_eq!(out, bytes);
    }

    #[test]
    fn float_input_is_clamped_and_nan_is_black() {
        let px: Vec<u8> = [-0.5f32, 2.0, f32::NAN, 1.0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let (mut r, mut g, mut b) = ([9.0], [9.0], [9.0]);
        decode_row(&px, PixelFormat::Rgba32F, [&mut r, &mut g, &mut b]);
        assert_eq!((r[0], g[0], b[0]), (0.0, 1.0, 0.0));
    }
}
