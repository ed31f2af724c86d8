//! Owned RGBA frames and copies to and from host images (RGBA or RGB, any
//! row order, 8- or 16-bit or float).

use std::ffi::CStr;
use std::hash::{DefaultHasher, Hasher};

use crate::capi;
use crate::ofx::*;

/// A top-down, tightly packed RGBA frame in one of the C API's formats.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub format: u32,
    pub data: Vec<u8>,
}

pub fn bytes_per_channel(format: u32) -> usize {
    match format {
        capi::FORMAT_RGBA16 => 2,
        capi::FORMAT_RGBA32F => 4,
        _ => 1,
    }
}

/// The format frames of `format` are kept in (collected sources, results):
/// float as 16-bit, half the bytes. The model sees no difference that
/// matters: the library clamps float input to [0, 1] and writes results in
/// [0, 1], where 16 bits are within 1/131070 of any value.
pub fn compact_format(format: u32) -> u32 {
    match format {
        capi::FORMAT_RGBA32F => capi::FORMAT_RGBA16,
        f => f,
    }
}

/// The C API format for an OpenFX pixel depth.
pub fn format_of_depth(depth: &str) -> Result<u32, String> {
    let is = |c: &CStr| depth.as_bytes() == c.to_bytes();
    match depth {
        _ if is(kOfxBitDepthByte) => Ok(capi::FORMAT_RGBA8),
        _ if is(kOfxBitDepthShort) => Ok(capi::FORMAT_RGBA16),
        _ if is(kOfxBitDepthFloat) => Ok(capi::FORMAT_RGBA32F),
        d => Err(format!(
            "pixel depth {d:?} is not supported (8-bit, 16-bit or float RGBA)"
        )),
    }
}

impl Frame {
    pub fn new(width: usize, height: usize, format: u32) -> Frame {
        let len = width * height * 4 * bytes_per_channel(format);
        Frame {
            width,
            height,
            format,
            data: vec![0; len],
        }
    }

    pub fn row_bytes(&self) -> usize {
        self.width * 4 * bytes_per_channel(self.format)
    }

    /// The frame as the C API describes it (writable for outputs).
    pub fn as_capi(&mut self) -> capi::Frame {
        capi::Frame {
            data: self.data.as_mut_ptr().cast(),
            width: self.width as i32,
            height: self.height as i32,
            stride_bytes: self.row_bytes() as i64,
            format: self.format,
        }
    }

    /// The frame as the C API describes an input, which it only reads.
    pub fn as_capi_input(&self) -> capi::Frame {
        capi::Frame {
            data: self.data.as_ptr().cast_mut().cast(),
            width: self.width as i32,
            height: self.height as i32,
            stride_bytes: self.row_bytes() as i64,
            format: self.format,
        }
    }

    /// A hash of the size, format and pixels: the frame's identity in cache
    /// keys.
    pub fn content_hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        h.write_usize(self.width);
        h.write_usize(self.height);
        h.write_u32(self.format);
        h.write(&self.data);
        h.finish()
    }

    /// Channel `i` of the frame as a value in [0, 1] (float may exceed it).
    fn channel(&self, i: usize) -> f32 {
        match self.format {
            capi::FORMAT_RGBA16 => {
                u16::from_ne_bytes([self.data[2 * i], self.data[2 * i + 1]]) as f32 / 65535.0
            }
            capi::FORMAT_RGBA32F => f32::from_ne_bytes(
                self.data[4 * i..4 * i + 4]
                    .try_into()
                    .expect("four bytes per float channel"),
            ),
            _ => self.data[i] as f32 / 255.0,
        }
    }

    /// Bytes of pixel data held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// This frame as the plugin keeps it (`compact_format`).
    pub fn compact(&self) -> Frame {
        self.to_format(compact_format(self.format))
    }

    /// This frame reduced to `w` x `h` (not larger), each output pixel the
    /// mean of the input pixels its area covers (whole pixels), in the same
    /// format.
    pub fn downscale(&self, w: usize, h: usize) -> Frame {
        let mut out = Frame::new(w, h, capi::FORMAT_RGBA32F);
        let span = |i: usize, n: usize, full: usize| (i * full / n, ((i + 1) * full).div_ceil(n));
        for y in 0..h {
            let (y0, y1) = span(y, h, self.height);
            for x in 0..w {
                let (x0, x1) = span(x, w, self.width);
                let mut sum = [0f32; 4];
                for sy in y0..y1 {
                    for sx in x0..x1 {
                        for (c, v) in sum.iter_mut().enumerate() {
                            *v += self.channel((sy * self.width + sx) * 4 + c);
                        }
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as f32;
                for (c, v) in sum.iter().enumerate() {
                    let i = (y * w + x) * 4 + c;
                    out.data[4 * i..4 * i + 4].copy_from_slice(&(v / n).to_ne_bytes());
                }
            }
        }
        out.to_format(self.format)
    }

    /// Linear-light values re-encoded as display-referred ones (the sRGB
    /// transfer curve, extended past 1 and mirrored below 0), alpha kept, in
    /// the same format: what the model is trained on. See `display_to_linear`.
    pub fn linear_to_display(&self) -> Frame {
        self.map_colour(srgb_encode)
    }

    /// The inverse of `linear_to_display`: display-referred values (a
    /// result) back to linear light.
    pub fn display_to_linear(&self) -> Frame {
        self.map_colour(srgb_decode)
    }

    /// `f` applied to the colour channels (not alpha), in float, back in
    /// this frame's format.
    fn map_colour(&self, f: fn(f32) -> f32) -> Frame {
        let mut out = Frame::new(self.width, self.height, capi::FORMAT_RGBA32F);
        for i in 0..self.width * self.height * 4 {
            let v = self.channel(i);
            let v = if i % 4 == 3 { v } else { f(v) };
            out.data[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
        }
        out.to_format(self.format)
    }

    /// This frame in `format` (a copy; rounding to the nearest level).
    pub fn to_format(&self, format: u32) -> Frame {
        if format == self.format {
            return self.clone();
        }
        let mut out = Frame::new(self.width, self.height, format);
        for i in 0..self.width * self.height * 4 {
            let v = self.channel(i);
            match format {
                capi::FORMAT_RGBA16 => {
                    let q = (v.clamp(0.0, 1.0) * 65535.0).round() as u16;
                    out.data[2 * i..2 * i + 2].copy_from_slice(&q.to_ne_bytes());
                }
                capi::FORMAT_RGBA32F => {
                    out.data[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
                }
                _ => out.data[i] = (v.clamp(0.0, 1.0) * 255.0).round() as u8,
            }
        }
        out
    }
}

/// The sRGB encoding (IEC 61966-2-1) of a linear value; odd-symmetric, and
/// continued past 1 by the same power law, so that nothing is lost before
/// the library clamps.
pub fn srgb_encode(v: f32) -> f32 {
    let a = v.abs();
    let e = if a <= 0.003_130_8 {
        12.92 * a
    } else {
        1.055 * a.powf(1.0 / 2.4) - 0.055
    };
    e.copysign(v)
}

/// The inverse of `srgb_encode`.
pub fn srgb_decode(v: f32) -> f32 {
    let a = v.abs();
    let d = if a <= 0.040_45 {
        a / 12.92
    } else {
        ((a + 0.055) / 1.055).powf(2.4)
    };
    d.copysign(v)
}

/// A fetched host image; released on drop, so every path releases it.
pub struct HostImage {
    pub s: Suites,
    pub props: Props,
    pub data: *mut u8,
    pub row_bytes: isize,
    pub bounds: [i32; 4],
    /// The C API format of the same depth (frames are always RGBA).
    pub format: u32,
    /// 4 (RGBA) or 3 (RGB).
    pub channels: usize,
}

impl HostImage {
    /// The image of `clip` at `time`, or `None` when the host has none.
    pub fn fetch(s: Suites, clip: OfxImageClipHandle, time: f64) -> Result<Option<Self>, String> {
        let get = call!(s.effect, clipGetImage);
        let mut h: OfxPropertySetHandle = std::ptr::null_mut();
        // SAFETY: valid clip handle; NULL region asks for the whole image.
        let st = unsafe { get(clip, time, std::ptr::null(), &mut h) };
        if st != kOfxStatOK || h.is_null() {
            return Ok(None);
        }
        let props = Props { s, h };
        // Build the struct first so that an error below still releases.
        let mut img = HostImage {
            s,
            props,
            data: std::ptr::null_mut(),
            row_bytes: 0,
            bounds: [0; 4],
            format: 0,
            channels: 4,
        };
        img.data = props.get_ptr(kOfxImagePropData, 0)?.cast();
        img.row_bytes = props.get_int(kOfxImagePropRowBytes, 0)? as isize;
        img.bounds = props.get_ints::<4>(kOfxImagePropBounds)?;
        let comps = props.get_str(kOfxImageEffectPropComponents, 0)?;
        img.channels = if comps.as_bytes() == kOfxImageComponentRGBA.to_bytes() {
            4
        } else if comps.as_bytes() == kOfxImageComponentRGB.to_bytes() {
            3
        } else {
            return Err(format!(
                "components {comps:?} are not supported (RGBA or RGB)"
            ));
        };
        let depth = props.get_str(kOfxImageEffectPropPixelDepth, 0)?;
        if crate::trace::enabled() {
            crate::trace::image(time, img.bounds, img.row_bytes, &depth, &comps);
        }
        img.format = format_of_depth(&depth)?;
        if img.data.is_null() {
            return Err("the host gave an image without data".into());
        }
        Ok(Some(img))
    }

    pub fn width(&self) -> usize {
        (self.bounds[2] - self.bounds[0]).max(0) as usize
    }

    pub fn height(&self) -> usize {
        (self.bounds[3] - self.bounds[1]).max(0) as usize
    }

    fn pixel_bytes(&self) -> usize {
        self.channels * bytes_per_channel(self.format)
    }

    /// The row at pixel row `y` (bounds coordinates, bottom-up).
    fn row_ptr(&self, y: i32) -> *mut u8 {
        let dy = (y - self.bounds[1]) as isize;
        // Signed arithmetic: rows may run towards lower addresses.
        self.data.wrapping_offset(dy * self.row_bytes)
    }

    /// A top-down RGBA copy of the whole image (RGB gets an opaque alpha).
    pub fn to_frame(&self) -> Frame {
        let mut f = Frame::new(self.width(), self.height(), self.format);
        let rb = f.row_bytes();
        let (bpc, pb) = (bytes_per_channel(self.format), self.pixel_bytes());
        let opaque: Vec<u8> = match self.format {
            capi::FORMAT_RGBA16 => u16::MAX.to_ne_bytes().to_vec(),
            capi::FORMAT_RGBA32F => 1f32.to_ne_bytes().to_vec(),
            _ => vec![u8::MAX],
        };
        for r in 0..f.height {
            let y = self.bounds[3] - 1 - r as i32;
            // SAFETY: rows inside the bounds hold width * pixel bytes.
            let src = unsafe { std::slice::from_raw_parts(self.row_ptr(y), f.width * pb) };
            let dst = &mut f.data[r * rb..(r + 1) * rb];
            if self.channels == 4 {
                dst.copy_from_slice(src);
            } else {
                for (d, s) in dst.chunks_exact_mut(4 * bpc).zip(src.chunks_exact(pb)) {
                    d[..pb].copy_from_slice(s);
                    d[pb..].copy_from_slice(&opaque);
                }
            }
        }
        f
    }

    /// Writes `frame` (top-down, covering these bounds) into the part of
    /// this image inside `window`, converting its format.
    pub fn write(&mut self, frame: &Frame, window: [i32; 4]) -> Result<(), String> {
        if frame.width != self.width() || frame.height != self.height() {
            return Err(format!(
                "result is {}x{} but the output image is {}x{}",
                frame.width,
                frame.height,
                self.width(),
                self.height()
            ));
        }
        let frame = frame.to_format(self.format);
        let pb = self.pixel_bytes();
        let x0 = window[0].max(self.bounds[0]);
        let x1 = window[2].min(self.bounds[2]);
        let y0 = window[1].max(self.bounds[1]);
        let y1 = window[3].min(self.bounds[3]);
        if x0 >= x1 {
            return Ok(());
        }
        let fpb = 4 * bytes_per_channel(self.format);
        let n = (x1 - x0) as usize;
        for y in y0..y1 {
            let r = (self.bounds[3] - 1 - y) as usize;
            let off = r * frame.row_bytes() + (x0 - self.bounds[0]) as usize * fpb;
            let src = &frame.data[off..off + n * fpb];
            // SAFETY: the row lies inside the image's bounds.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    self.row_ptr(y).add((x0 - self.bounds[0]) as usize * pb),
                    n * pb,
                )
            };
            if self.channels == 4 {
                dst.copy_from_slice(src);
            } else {
                // RGB keeps the colour; alpha has nowhere to go.
                for (d, s) in dst.chunks_exact_mut(pb).zip(src.chunks_exact(fpb)) {
                    d.copy_from_slice(&s[..pb]);
                }
            }
        }
        Ok(())
    }
}

impl Drop for HostImage {
    fn drop(&mut self) {
        if let Some(release) = self.s.effect.clipReleaseImage {
            // SAFETY: the handle came from clipGetImage and is released once.
            unsafe { release(self.props.h) };
        }
    }
}

/// `a * (1 - t) + b * t`, per channel, in the frames' shared format.
pub fn blend(a: &Frame, b: &Frame, t: f32) -> Frame {
    let (fa, fb) = (
        a.to_format(capi::FORMAT_RGBA32F),
        b.to_format(capi::FORMAT_RGBA32F),
    );
    let mut out = Frame::new(a.width, a.height, capi::FORMAT_RGBA32F);
    for i in 0..a.width * a.height * 4 {
        let v = fa.channel(i) * (1.0 - t) + fb.channel(i) * t;
        out.data[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
    }
    out.to_format(a.format)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host image over `buf`, bottom row first in memory when `row_bytes`
    /// is positive, top row first (as MLT) when negative.
    fn host(buf: &mut [u8], w: i32, h: i32, format: u32, channels: usize, down: bool) -> HostImage {
        // SAFETY: tables of optional function pointers: all absent.
        let s = unsafe {
            Suites {
                prop: Box::leak(Box::new(std::mem::zeroed())),
                effect: Box::leak(Box::new(std::mem::zeroed())),
                param: Box::leak(Box::new(std::mem::zeroed())),
                message: None,
                progress: None,
                temporal: false,
                natron: false,
            }
        };
        let rb = w as isize * (channels * bytes_per_channel(format)) as isize;
        let (data, row_bytes) = if down {
            // The bottom row (y = 0) is the last in memory.
            (buf[(h as usize - 1) * rb as usize..].as_mut_ptr(), -rb)
        } else {
            (buf.as_mut_ptr(), rb)
        };
        HostImage {
            s,
            props: Props {
                s,
                h: std::ptr::null_mut(),
            },
            data,
            row_bytes,
            bounds: [0, 0, w, h],
            format,
            channels,
        }
    }

    #[test]
    fn rgb_images_read_as_opaque_rgba_and_take_the_colour_back_in_either_row_order() {
        for down in [false, true] {
            // 2x2 RGB, 8-bit: rows in memory as the host lays them out.
            let mut buf: Vec<u8> = (1..=12).collect();
            let img = host(&mut buf, 2, 2, capi::FORMAT_RGBA8, 3, down);
            let f = img.to_frame();
            // Top-down: the top row is the one at y = 1.
            let top: &[u8] = if down {
                &[1, 2, 3, 4, 5, 6]
            } else {
                &[7, 8, 9, 10, 11, 12]
            };
            assert_eq!(
                &f.data[..8],
                &[top[0], top[1], top[2], 255, top[3], top[4], top[5], 255]
            );
            let mut out = f.clone();
            out.data.iter_mut().for_each(|v| *v = v.wrapping_add(100));
            let mut img = img;
            img.write(&out, [0, 0, 2, 2]).unwrap();
            drop(img);
            assert_eq!(buf, (101..=112).collect::<Vec<u8>>(), "down: {down}");
        }
    }

    #[test]
    fn linear_float_round_trips_through_display_referred_values() {
        // Linear samples above 1 (Natron's highlights), below 0 and mid-grey.
        let vals = [0.0f32, 0.002, 0.18, 0.5, 1.0, 1.6, -0.01, 0.75];
        let mut f = Frame::new(2, 1, capi::FORMAT_RGBA32F);
        for (i, v) in vals.iter().enumerate() {
            f.data[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
        }
        let d = f.linear_to_display();
        // Mid-grey is about 0.46 on the sRGB curve; alpha (index 3, 7) is kept.
        assert!((d.channel(2) - 0.4614).abs() < 1e-3, "{}", d.channel(2));
        assert!(d.channel(5) > 1.0, "past 1 stays past 1");
        assert_eq!((d.channel(3), d.channel(7)), (0.5, 0.75));
        let back = d.display_to_linear();
        for (i, v) in vals.iter().enumerate() {
            let got = back.channel(i);
            assert!(
                (got - v).abs() <= 1e-5 * v.abs().max(1.0),
                "{v} came back as {got}"
            );
        }
    }

    #[test]
    fn sixteen_bit_rgba_round_trips_with_negative_row_bytes() {
        let mut buf: Vec<u8> = (0..3 * 2 * 8).map(|i| i as u8).collect();
        let want = buf.clone();
        let img = host(&mut buf, 3, 2, capi::FORMAT_RGBA16, 4, true);
        let f = img.to_frame();
        // The top row (y = 1) is first in memory.
        assert_eq!(&f.data[..24], &want[..24]);
        let mut img = img;
        img.write(&f, [0, 0, 3, 2]).unwrap();
        drop(img);
        assert_eq!(buf, want);
    }
}
