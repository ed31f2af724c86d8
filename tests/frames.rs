//! Frames in memory to and from video tensors: diffusers parity (golden
//! files from scripts/golden/golden_frames.py), round trips over every
//! format and stride layout, resize modes and argument errors.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use cogvideo::Error;
use cogvideo::frames::{
    FrameLayout, FrameMut, FrameRef, HostVideo, MAX_DIMENSION, PixelFormat, ResizeMode,
    frames_to_video, latent_frame_count, usable_frame_count, video_to_frames,
};

const FORMATS: [PixelFormat; 4] = [
    PixelFormat::Rgb8,
    PixelFormat::Rgba8,
    PixelFormat::Rgba16,
    PixelFormat::Rgba32F,
];
const MODES: [ResizeMode; 3] = [ResizeMode::Stretch, ResizeMode::Crop, ResizeMode::Fit];
/// Stride padding byte, to check that it is neither read nor written.
const PAD: u8 = 0xA5;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden")
        .join(name)
}

fn golden_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(golden("frames.safetensors"), &Device::Cpu).unwrap()
}

fn golden_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden("frames.json")).unwrap()).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn u8s(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// How rows are laid out in a test buffer.
#[derive(Debug, Clone, Copy)]
enum Rows {
    Packed,
    /// Top-down with this many padding bytes per row (odd on purpose).
    Padded(usize),
    /// Bottom-up, this many padding bytes per row.
    BottomUp(usize),
}

const ROWS: [Rows; 5] = [
    Rows::Packed,
    Rows::Padded(3),
    Rows::Padded(16),
    Rows::BottomUp(0),
    Rows::BottomUp(5),
];

fn layout(w: usize, h: usize, format: PixelFormat, rows: Rows) -> FrameLayout {
    let row = (w * format.bytes_per_pixel()) as isize;
    let stride = match rows {
        Rows::Packed => row,
        Rows::Padded(p) => row + p as isize,
        Rows::BottomUp(p) => -(row + p as isize),
    };
    FrameLayout::new(w, h, format, stride).unwrap()
}

/// A frame buffer in `rows` layout holding `pixels` (packed top-down rows),
/// padding filled with [`PAD`]. Returns the buffer and its top offset.
fn buffer(pixels: &[u8], l: FrameLayout) -> (Vec<u8>, usize) {
    let mut buf = vec![PAD; l.span()];
    let top = l.top_offset();
    {
        let mut f = FrameMut::new(&mut buf, top, l).unwrap();
        for (y, row) in pixels.chunks_exact(l.row_bytes()).enumerate() {
            f.row_mut(y).copy_from_slice(row);
        }
    }
    (buf, top)
}

/// Every byte outside the rows' pixel data still holds [`PAD`].
fn assert_padding_intact(buf: &[u8], top: usize, l: FrameLayout, what: &str) {
    let mut pixel = vec![false; buf.len()];
    for y in 0..l.height() {
        let start = (top as isize + y as isize * l.stride()) as usize;
        pixel[start..start + l.row_bytes()].fill(true);
    }
    for (i, (&b, &p)) in buf.iter().zip(&pixel).enumerate() {
        assert!(p || b == PAD, "{what}: padding byte {i} overwritten");
    }
}

/// The packed top-down pixels of a frame.
fn pixels_of(f: &FrameMut<'_>) -> Vec<u8> {
    (0..f.height()).flat_map(|y| f.row(y).to_vec()).collect()
}

/// Random pixels for `format` with samples valid for the format: floats in
/// [0, 1] (a few outside, which must clamp), alpha arbitrary.
fn random_pixels(w: usize, h: usize, format: PixelFormat, seed: u64) -> Vec<u8> {
    let n = w * h * format.bytes_per_pixel();
    match format {
        PixelFormat::Rgba32F => noise(n / 4, seed)
            .iter()
            .flat_map(|&b| (b as f32 / 250.0 - 0.01).to_ne_bytes())
            .collect(),
        _ => noise(n, seed),
    }
}

/// Reads sample `c` of pixel `i` of packed pixels as a float in the
/// format's native scale (0..255, 0..65535 or the float itself).
fn sample(pixels: &[u8], format: PixelFormat, i: usize, c: usize) -> f32 {
    let o = i * format.bytes_per_pixel() + c * format.bytes_per_sample();
    match format {
        PixelFormat::Rgb8 | PixelFormat::Rgba8 => pixels[o] as f32,
        PixelFormat::Rgba16 => u16::from_ne_bytes([pixels[o], pixels[o + 1]]) as f32,
        PixelFormat::Rgba32F => f32::from_ne_bytes(pixels[o..o + 4].try_into().unwrap()),
    }
}

fn opaque(format: PixelFormat) -> f32 {
    match format {
        PixelFormat::Rgb8 | PixelFormat::Rgba8 => 255.0,
        PixelFormat::Rgba16 => 65535.0,
        PixelFormat::Rgba32F => 1.0,
    }
}

fn is_invalid<T: std::fmt::Debug>(r: cogvideo::Result<T>) -> String {
    match r {
        Err(Error::InvalidArgument(msg)) => msg,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// diffusers parity
// ---------------------------------------------------------------------------

/// `postprocess_video` on the f32 and bf16 videos: the floats ("np") and the
/// 8-bit frames ("pil") exactly, through every output format and layout.
#[test]
fn postprocess_matches_diffusers() {
    let g = golden_tensors();
    for (tag, dtype) in [("f32", DType::F32), ("bf16", DType::BF16)] {
        let key = if tag == "f32" {
            "post_video"
        } else {
            "post_video_bf16"
        };
        let video = g[key].to_dtype(dtype).unwrap();
        let want_np = f32s(&g[&format!("post_np_{tag}")]); // [1, T, H, W, 3]
        let want_u8 = u8s(&g[&format!("post_u8_{tag}")]); // [T, H, W, 3]
        let (_, _, t, h, w) = video.dims5().unwrap();

        let host = HostVideo::from_tensor(&video).unwrap();
        assert_eq!((host.num_frames(), host.height(), host.width()), (t, h, w));
        for f in 0..t {
            for c in 0..3 {
                for (i, &v) in host.plane(c, f).iter().enumerate() {
                    let want = want_np[(f * h * w + i) * 3 + c];
                    assert_eq!(v.to_bits(), want.to_bits(), "{tag} np t{f} c{c} px{i}");
                }
            }
        }

        for format in FORMATS {
            for rows in [Rows::Packed, Rows::BottomUp(7)] {
                let l = layout(w, h, format, rows);
                let mut bufs: Vec<(Vec<u8>, usize)> = (0..t)
                    .map(|_| buffer(&vec![0; w * h * format.bytes_per_pixel()], l))
                    .collect();
                let mut outs: Vec<FrameMut> = bufs
                    .iter_mut()
                    .map(|(b, top)| FrameMut::new(b, *top, l).unwrap())
                    .collect();
                // The [3, T, H, W] form too.
                let v = if matches!(rows, Rows::Packed) {
                    video.clone()
                } else {
                    video.squeeze(0).unwrap()
                };
                video_to_frames(&v, &mut outs, ResizeMode::Crop).unwrap();
                for (f, out) in outs.iter().enumerate() {
                    let px = pixels_of(out);
                    for i in 0..w * h {
                        for c in 0..3 {
                            let got = sample(&px, format, i, c);
                            let np = want_np[(f * h * w + i) * 3 + c];
                            let want = match format {
                                PixelFormat::Rgb8 | PixelFormat::Rgba8 => {
                                    f32::from(want_u8[(f * h * w + i) * 3 + c])
                                }
                                PixelFormat::Rgba16 => (np * 65535.0).round_ties_even(),
                                PixelFormat::Rgba32F => np,
                            };
                            assert_eq!(got, want, "{tag} {format:?} {rows:?} t{f} px{i} c{c}");
                        }
                        if format.channels() == 4 {
                            assert_eq!(sample(&px, format, i, 3), opaque(format));
                        }
                    }
                }
            }
        }
    }
}

/// `preprocess_video` of 8-bit frames at the working size, exactly, from
/// RGB8 and RGBA8 buffers in several layouts.
#[test]
fn preprocess_matches_diffusers() {
    let g = golden_tensors();
    let rgb = u8s(&g["pre_u8"]); // [T, H, W, 3]
    let want = &g["pre_video"]; // [1, 3, T, H, W]
    let (_, _, t, h, w) = want.dims5().unwrap();
    let rgba: Vec<u8> = rgb
        .chunks_exact(3)
        .enumerate()
        .flat_map(|(i, p)| [p[0], p[1], p[2], (i * 7) as u8])
        .collect();
    for (format, pixels) in [(PixelFormat::Rgb8, &rgb), (PixelFormat::Rgba8, &rgba)] {
        for rows in ROWS {
            let l = layout(w, h, format, rows);
            let bufs: Vec<_> = pixels
                .chunks_exact(w * h * format.bytes_per_pixel())
                .map(|p| buffer(p, l))
                .collect();
            let frames: Vec<FrameRef> = bufs
                .iter()
                .map(|(b, top)| FrameRef::new(b, *top, l).unwrap())
                .collect();
            assert_eq!(frames.len(), t);
            for mode in MODES {
                let got = frames_to_video(&frames, h, w, mode, &Device::Cpu).unwrap();
                assert_eq!(got.dims(), want.dims());
                assert_eq!(got.dtype(), DType::F32);
                let (got, want) = (f32s(&got), f32s(want));
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{format:?} {rows:?} {mode:?} #{i}"
                    );
                }
            }
        }
    }
}

/// `preprocess(image, h, w, resize_mode)` with Pillow LANCZOS ("default" is
/// Stretch, "crop" is Crop): Pillow rounds to 8 bits after each pass, the
/// resampler here stays in f32, so they agree to within about a level.
#[test]
fn resizing_matches_diffusers_to_8_bit_rounding() {
    let g = golden_tensors();
    let json = golden_json();
    let src = &g["resize_u8"]; // [H, W, 3]
    let (sh, sw, _) = src.dims3().unwrap();
    let pixels = u8s(src);
    let frame = FrameRef::packed(&pixels, sw, sh, PixelFormat::Rgb8).unwrap();
    let cases = json["resize_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let key = case["key"].as_str().unwrap();
        let mode = match case["resize_mode"].as_str().unwrap() {
            "default" => ResizeMode::Stretch,
            "crop" => ResizeMode::Crop,
            other => panic!("{other}"),
        };
        let (h, w) = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let got = f32s(&frames_to_video(&[frame], h, w, mode, &Device::Cpu).unwrap());
        let want = f32s(&g[key]); // [1, 3, h, w]: the same order as [1, 3, 1, h, w]
        assert_eq!(got.len(), want.len());
        let levels = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() * 127.5)
            .fold(0.0, f32::max);
        let mean = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() * 127.5)
            .sum::<f32>()
            / got.len() as f32;
        println!("{key}: max {levels:.3} mean {mean:.3} 8-bit levels");
        // Worst case: half a level from the intermediate rounding, amplified
        // by the second pass's sum of |weights|, plus half a level at the end.
        assert!(
            levels <= 1.5 && mean <= 0.5,
            "{key}: max {levels}, mean {mean} 8-bit levels"
        );
    }
}

#[test]
fn frame_counts_match_the_ddim_inversion_script() {
    let json = golden_json();
    let counts = json["frame_counts"].as_array().unwrap();
    assert_eq!(counts.len(), 100);
    for pair in counts {
        let n = pair[0].as_u64().unwrap() as usize;
        let used = pair[1].as_u64().unwrap() as usize;
        assert_eq!(usable_frame_count(n).unwrap(), used, "n = {n}");
        assert_eq!(latent_frame_count(used).unwrap(), (used - 1) / 4 + 1);
    }
    assert_eq!(usable_frame_count(81).unwrap(), 81);
    assert_eq!(usable_frame_count(80).unwrap(), 77);
    assert_eq!(latent_frame_count(49).unwrap(), 13);
    is_invalid(usable_frame_count(0));
    is_invalid(latent_frame_count(0));
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

/// Frames → tensor → frames at the same size is exact for 8 and 16 bits
/// (floats within an ulp of the clamped input), in every combination of
/// input and output layout, with stride padding left untouched.
#[test]
fn round_trip_every_format_and_layout() {
    for (w, h) in [(1, 1), (5, 3), (3, 7), (16, 2)] {
        for format in FORMATS {
            for (k, rows_in) in ROWS.into_iter().enumerate() {
                let rows_out = ROWS[(k + 2) % ROWS.len()];
                let (li, lo) = (
                    layout(w, h, format, rows_in),
                    layout(w, h, format, rows_out),
                );
                let t = 3;
                let inputs: Vec<Vec<u8>> = (0..t)
                    .map(|f| random_pixels(w, h, format, (w * 100 + h * 10 + f) as u64))
                    .collect();
                let bufs: Vec<_> = inputs.iter().map(|p| buffer(p, li)).collect();
                let frames: Vec<FrameRef> = bufs
                    .iter()
                    .map(|(b, top)| FrameRef::new(b, *top, li).unwrap())
                    .collect();
                for mode in MODES {
                    let video = frames_to_video(&frames, h, w, mode, &Device::Cpu).unwrap();
                    assert_eq!(video.dims(), &[1, 3, t, h, w]);
                    let mut outs: Vec<_> = (0..t)
                        .map(|_| buffer(&vec![0; lo.row_bytes() * h], lo))
                        .collect();
                    let mut views: Vec<FrameMut> = outs
                        .iter_mut()
                        .map(|(b, top)| FrameMut::new(b, *top, lo).unwrap())
                        .collect();
                    video_to_frames(&video, &mut views, mode).unwrap();
                    let what = format!("{w}x{h} {format:?} {rows_in:?}->{rows_out:?} {mode:?}");
                    for (f, out) in views.iter().enumerate() {
                        let got = pixels_of(out);
                        for i in 0..w * h {
                            for c in 0..3 {
                                let a = sample(&got, format, i, c);
                                let b = sample(&inputs[f], format, i, c);
                                if format == PixelFormat::Rgba32F {
                                    let b = b.clamp(0.0, 1.0);
                                    assert!((a - b).abs() <= 1e-7, "{what}: {a} vs {b}");
                                } else {
                                    assert_eq!(a, b, "{what} t{f} px{i} c{c}");
                                }
                            }
                            if format.channels() == 4 {
                                assert_eq!(sample(&got, format, i, 3), opaque(format), "{what}");
                            }
                        }
                    }
                    drop(views);
                    for (buf, top) in &outs {
                        assert_padding_intact(buf, *top, lo, &what);
                    }
                }
            }
        }
    }
}

/// Every 16-bit code survives the trip through model space.
#[test]
fn sixteen_bit_codes_round_trip() {
    let pixels: Vec<u8> = (0..=u16::MAX)
        .flat_map(|v| [v, u16::MAX - v, v ^ 0x5555, 0])
        .flat_map(u16::to_ne_bytes)
        .collect();
    let (w, h) = (256, 256);
    let input = FrameRef::packed(&pixels, w, h, PixelFormat::Rgba16).unwrap();
    let video = frames_to_video(&[input], h, w, ResizeMode::Stretch, &Device::Cpu).unwrap();
    let mut out = vec![0u8; pixels.len()];
    let mut view = FrameMut::packed(&mut out, w, h, PixelFormat::Rgba16).unwrap();
    video_to_frames(&video, std::slice::from_mut(&mut view), ResizeMode::Stretch).unwrap();
    for (i, (a, b)) in out.chunks_exact(8).zip(pixels.chunks_exact(8)).enumerate() {
        assert_eq!(&a[..6], &b[..6], "pixel {i}");
    }
}

/// The values in the tensor are exactly `x / 255 * 2 - 1`, `x / 65535 * 2 - 1`
/// and `clamp(x, 0, 1) * 2 - 1` in f32.
#[test]
fn input_value_mapping() {
    let px8 = [0u8, 1, 254, 255, 128, 7];
    let px16: Vec<u8> = [0u16, 1, 65534, 65535, 32768, 300, 9, 9]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let pxf: Vec<u8> = [-0.25f32, 1.5, 0.3, 7.0, f32::NAN, f32::INFINITY, 0.0, 0.0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let cases: [(&[u8], PixelFormat, [f32; 6]); 3] = [
        (
            &px8,
            PixelFormat::Rgb8,
            [0.0, 1.0, 254.0, 255.0, 128.0, 7.0].map(|x: f32| x / 255.0),
        ),
        (
            &px16,
            PixelFormat::Rgba16,
            [0.0, 1.0, 65534.0, 32768.0, 300.0, 9.0].map(|x: f32| x / 65535.0),
        ),
        (&pxf, PixelFormat::Rgba32F, [0.0, 1.0, 0.3, 0.0, 1.0, 0.0]),
    ];
    for (bytes, format, want) in cases {
        let f = FrameRef::packed(bytes, 2, 1, format).unwrap();
        let v = f32s(&frames_to_video(&[f], 1, 2, ResizeMode::Fit, &Device::Cpu).unwrap());
        // v is [c][x]; want is [x][c].
        for x in 0..2 {
            for c in 0..3 {
                assert_eq!(
                    v[c * 2 + x],
                    want[x * 3 + c] * 2.0 - 1.0,
                    "{format:?} x{x} c{c}"
                );
            }
        }
    }
}

/// Enough frames to run on several threads: frame order is preserved.
#[test]
fn long_clip_keeps_frame_order() {
    let (w, h, t) = (6, 4, 33);
    let inputs: Vec<Vec<u8>> = (0..t).map(|f| vec![f as u8 * 7; w * h * 3]).collect();
    let frames: Vec<FrameRef> = inputs
        .iter()
        .map(|p| FrameRef::packed(p, w, h, PixelFormat::Rgb8).unwrap())
        .collect();
    let video = frames_to_video(&frames, 8, 12, ResizeMode::Stretch, &Device::Cpu).unwrap();
    let mut outs: Vec<Vec<u8>> = vec![vec![0; w * h * 3]; t];
    let mut views: Vec<FrameMut> = outs
        .iter_mut()
        .map(|b| FrameMut::packed(b, w, h, PixelFormat::Rgb8).unwrap())
        .collect();
    video_to_frames(&video, &mut views, ResizeMode::Stretch).unwrap();
    drop(views);
    for (f, out) in outs.iter().enumerate() {
        assert!(out.iter().all(|&b| b == f as u8 * 7), "frame {f}");
    }
}

// ---------------------------------------------------------------------------
// Resize modes
// ---------------------------------------------------------------------------

/// A 6x2 image whose columns are distinct grey levels.
fn columns(levels: &[u8], h: usize) -> Vec<u8> {
    (0..h)
        .flat_map(|_| levels.iter().flat_map(|&v| [v, v, v]))
        .collect()
}

#[test]
fn crop_and_fit_in_both_directions() {
    let levels = [10u8, 50, 90, 130, 170, 210];
    let pixels = columns(&levels, 2);
    let frame = FrameRef::packed(&pixels, 6, 2, PixelFormat::Rgb8).unwrap();
    let to_model = |x: u8| x as f32 / 255.0 * 2.0 - 1.0;

    // Crop 6x2 -> 2x2 at unit scale: the middle two columns, exactly.
    let v = f32s(&frames_to_video(&[frame], 2, 2, ResizeMode::Crop, &Device::Cpu).unwrap());
    for c in 0..3 {
        assert_eq!(&v[c * 4..c * 4 + 4], &[90, 130, 90, 130].map(to_model));
    }

    // Fit 6x2 -> 6x4: image in rows 1..3, black (-1) rows 0 and 3.
    let v = f32s(&frames_to_video(&[frame], 4, 6, ResizeMode::Fit, &Device::Cpu).unwrap());
    let red = &v[..24];
    assert_eq!(&red[..6], &[-1.0; 6]);
    assert_eq!(&red[6..12], &levels.map(to_model));
    assert_eq!(&red[12..18], &levels.map(to_model));
    assert_eq!(&red[18..], &[-1.0; 6]);

    // Output side: a 6x2 model frame into a 2x2 buffer by Crop (middle
    // columns) and into a 6x4 RGBA buffer by Fit (black bars, opaque alpha).
    let model = frames_to_video(&[frame], 2, 6, ResizeMode::Stretch, &Device::Cpu).unwrap();
    let mut out = vec![0u8; 2 * 2 * 3];
    let mut view = FrameMut::packed(&mut out, 2, 2, PixelFormat::Rgb8).unwrap();
    HostVideo::from_tensor(&model)
        .unwrap()
        .write_frame(0, &mut view, ResizeMode::Crop)
        .unwrap();
    assert_eq!(out, columns(&[90, 130], 2));

    let mut out = vec![7u8; 6 * 4 * 4];
    let mut view = FrameMut::packed(&mut out, 6, 4, PixelFormat::Rgba8).unwrap();
    HostVideo::from_tensor(&model)
        .unwrap()
        .write_frame(0, &mut view, ResizeMode::Fit)
        .unwrap();
    let rgba = |levels: &[u8]| -> Vec<u8> { levels.iter().flat_map(|&v| [v, v, v, 255]).collect() };
    assert_eq!(&out[..24], &rgba(&[0; 6])[..]);
    assert_eq!(&out[24..48], &rgba(&levels)[..]);
    assert_eq!(&out[48..72], &rgba(&levels)[..]);
    assert_eq!(&out[72..], &rgba(&[0; 6])[..]);
}

/// Scaled sizes: flat colours stay flat in every mode (up and down, odd
/// ratios), and letterbox bars appear only where the aspect ratio differs.
#[test]
fn resized_flat_frames_stay_flat() {
    let (w, h) = (37, 23);
    let pixels: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 100, 30]).collect();
    let frame = FrameRef::packed(&pixels, w, h, PixelFormat::Rgb8).unwrap();
    for (mh, mw) in [(8, 16), (48, 72), (23, 5), (60, 96)] {
        for mode in MODES {
            let video = frames_to_video(&[frame], mh, mw, mode, &Device::Cpu).unwrap();
            let v = f32s(&video);
            let mut black = 0;
            for c in 0..3 {
                let want = [200.0f32, 100.0, 30.0][c] / 255.0 * 2.0 - 1.0;
                for &x in &v[c * mh * mw..][..mh * mw] {
                    if x == -1.0 && mode == ResizeMode::Fit {
                        black += 1;
                    } else {
                        assert!(
                            (x - want).abs() < 1e-5,
                            "{mh}x{mw} {mode:?} c{c}: {x} vs {want}"
                        );
                    }
                }
            }
            if mode != ResizeMode::Fit {
                assert_eq!(black, 0);
            }
            // Back out to a different size and format.
            for (ow, oh) in [(w, h), (19, 41)] {
                let mut out = vec![0u8; ow * oh * 16];
                let mut view = FrameMut::packed(&mut out, ow, oh, PixelFormat::Rgba32F).unwrap();
                video_to_frames(&video, std::slice::from_mut(&mut view), ResizeMode::Crop).unwrap();
                for (i, p) in out.chunks_exact(16).enumerate() {
                    let s: Vec<f32> = p
                        .chunks_exact(4)
                        .map(|b| f32::from_ne_bytes(b.try_into().unwrap()))
                        .collect();
                    assert_eq!(s[3], 1.0);
                    if mode != ResizeMode::Fit {
                        for (c, want) in [200.0f32, 100.0, 30.0].into_iter().enumerate() {
                            assert!(
                                (s[c] - want / 255.0).abs() < 1e-5,
                                "{mode:?} {ow}x{oh} px{i}: {s:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn bad_views_are_rejected() {
    let l = FrameLayout::packed(4, 2, PixelFormat::Rgb8).unwrap();
    is_invalid(FrameRef::new(&[], 0, l));
    let mut empty: [u8; 0] = [];
    is_invalid(FrameMut::new(&mut empty, 0, l));
    is_invalid(FrameRef::new(&[0; 23], 0, l)); // one byte short
    FrameRef::new(&[0; 24], 0, l).unwrap();
    is_invalid(FrameRef::new(&[0; 24], 1, l)); // offset pushes the end out
    is_invalid(FrameRef::packed(&[0; 24], 4, 3, PixelFormat::Rgb8));

    // Zero and absurd sizes, before anything is allocated.
    is_invalid(FrameLayout::packed(0, 2, PixelFormat::Rgb8));
    is_invalid(FrameLayout::packed(2, 0, PixelFormat::Rgba8));
    is_invalid(FrameLayout::packed(1 << 20, 1 << 20, PixelFormat::Rgba32F));
    is_invalid(FrameLayout::packed(MAX_DIMENSION + 1, 1, PixelFormat::Rgb8));
    FrameLayout::packed(MAX_DIMENSION, 1, PixelFormat::Rgb8).unwrap();

    // Stride smaller than a row, either sign, and zero.
    for stride in [0, 11, -11, 1, -1] {
        let msg = is_invalid(FrameLayout::new(4, 2, PixelFormat::Rgb8, stride));
        assert!(msg.contains("stride"), "{msg}");
    }
    FrameLayout::new(4, 2, PixelFormat::Rgb8, -12).unwrap();
    // Odd strides are fine for wide samples.
    FrameLayout::new(1, 2, PixelFormat::Rgba16, 9).unwrap();
    FrameLayout::new(1, 2, PixelFormat::Rgba32F, -17).unwrap();

    // Bottom-up: the top row offset must leave room for the rows below.
    let l = FrameLayout::new(4, 2, PixelFormat::Rgb8, -12).unwrap();
    is_invalid(FrameRef::new(&[0; 24], 11, l));
    FrameRef::new(&[0; 24], 12, l).unwrap();
    is_invalid(FrameRef::new(&[0; 24], 13, l));
}

#[test]
fn bad_clips_are_rejected() {
    let a = vec![0u8; 4 * 2 * 4];
    let b = vec![0u8; 4 * 3 * 4];
    let fa = FrameRef::packed(&a, 4, 2, PixelFormat::Rgba8).unwrap();
    let fb = FrameRef::packed(&b, 4, 3, PixelFormat::Rgba8).unwrap();
    let fc = FrameRef::packed(&a, 8, 1, PixelFormat::Rgba8).unwrap();
    let fd = FrameRef::packed(&a, 4, 2, PixelFormat::Rgba8).unwrap();
    let dev = &Device::Cpu;

    is_invalid(frames_to_video(&[], 8, 8, ResizeMode::Stretch, dev));
    let msg = is_invalid(frames_to_video(&[fa, fb], 8, 8, ResizeMode::Stretch, dev));
    assert!(msg.contains("frame 1"), "{msg}");
    is_invalid(frames_to_video(
        &[fa, fd, fc],
        8,
        8,
        ResizeMode::Stretch,
        dev,
    ));
    // Same size, different format.
    let e = vec![0u8; 4 * 2 * 8];
    let fe = FrameRef::packed(&e, 4, 2, PixelFormat::Rgba16).unwrap();
    is_invalid(frames_to_video(&[fa, fe], 8, 8, ResizeMode::Stretch, dev));
    // Different strides are fine.
    let padded = vec![0u8; 2 * 20];
    let ff = FrameRef::new(
        &padded,
        0,
        FrameLayout::new(4, 2, PixelFormat::Rgba8, 20).unwrap(),
    )
    .unwrap();
    frames_to_video(&[fa, ff], 8, 8, ResizeMode::Stretch, dev).unwrap();

    // Working sizes: zero and absurd, rejected before allocating.
    is_invalid(frames_to_video(&[fa], 0, 8, ResizeMode::Stretch, dev));
    is_invalid(frames_to_video(&[fa], 8, 0, ResizeMode::Stretch, dev));
    is_invalid(frames_to_video(
        &[fa],
        1 << 20,
        1 << 20,
        ResizeMode::Fit,
        dev,
    ));
}

#[test]
fn bad_tensors_and_outputs_are_rejected() {
    let dev = &Device::Cpu;
    let mut buf = vec![0u8; 4 * 4 * 3];
    let mut out = [FrameMut::packed(&mut buf, 4, 4, PixelFormat::Rgb8).unwrap()];
    for shape in [
        vec![3, 4, 4],
        vec![2, 3, 1, 4, 4],
        vec![1, 4, 1, 4, 4],
        vec![1, 1, 3, 1, 4, 4],
    ] {
        let t = Tensor::zeros(shape.as_slice(), DType::F32, dev).unwrap();
        is_invalid(video_to_frames(&t, &mut out, ResizeMode::Stretch));
    }
    let ints = Tensor::zeros((1, 3, 1, 4, 4), DType::I64, dev).unwrap();
    is_invalid(video_to_frames(&ints, &mut out, ResizeMode::Stretch));
    let empty = Tensor::zeros((1, 3, 0, 4, 4), DType::F32, dev).unwrap();
    is_invalid(video_to_frames(&empty, &mut out, ResizeMode::Stretch));

    // Output count must match the frame count.
    let two = Tensor::zeros((1, 3, 2, 4, 4), DType::F32, dev).unwrap();
    is_invalid(video_to_frames(&two, &mut out, ResizeMode::Stretch));
    let host = HostVideo::from_tensor(&two).unwrap();
    host.write_frame(1, &mut out[0], ResizeMode::Stretch)
        .unwrap();
    is_invalid(host.write_frame(2, &mut out[0], ResizeMode::Stretch));
}
