//! The C examples, built with the system C compiler against
//! `include/cogvideo.h` and the built `libcogvideo.so`, run on the tiny
//! checkpoints: files on disk in, PNG frames and MP4 out. Their frames must
//! equal what the Rust API computes for the same inputs and options, so the
//! C path (header, ABI, strides, FFmpeg I/O) loses nothing.
//!
//! Needs make, a C compiler, pkg-config and FFmpeg's development libraries
//! (Debian: libavformat-dev libavcodec-dev libswscale-dev libavutil-dev),
//! which `.ci/run` installs; without them the test is skipped, saying so,
//! except in CI (see `common::tools`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cogvideo::frames::{
    FrameMut, FrameRef, PixelFormat, ResizeMode, frames_to_video, video_to_frames,
};
use cogvideo::pipelines::{
    AnimateOptions, EditOptions, InvertOptions, LoadOptions, NoiseOptions, Pipeline, Progress,
    SamplingOptions,
};
use common::tiny;
use common::tools;

/// An input size unlike the tiny models' 96x64, so resizing is exercised.
const W: usize = 80;
const H: usize = 60;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cogvideo-c-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The FFmpeg libraries the examples link, as pkg-config names them.
const FFMPEG: [&str; 4] = ["libavformat", "libavcodec", "libswscale", "libavutil"];

/// What building the examples needs and this machine lacks.
fn missing_tools() -> Vec<&'static str> {
    let mut missing = tools::missing_programs(&[
        ("make", &["--version"]),
        ("cc", &["--version"]),
        ("pkg-config", &["--version"]),
    ]);
    let mut exists = vec!["--exists"];
    exists.extend(FFMPEG);
    if !missing.contains(&"pkg-config") && !tools::runs("pkg-config", &exists) {
        missing.push(
            "FFmpeg's development libraries (libavformat-dev libavcodec-dev libswscale-dev libavutil-dev)",
        );
    }
    missing
}

/// Builds the examples with their Makefile; returns the folder of programs.
fn build_examples(out: &Path) -> PathBuf {
    let lib = common::cdylib();
    let bin = out.join("bin");
    let result = Command::new("make")
        .arg("-C")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/c"))
        .arg(format!("LIBDIR={}", lib.parent().unwrap().display()))
        .arg(format!("OUT={}", bin.display()))
        .output()
        .expect("`make` is needed to build the C examples");
    assert!(
        result.status.success(),
        "building the C examples failed (they need a C compiler, pkg-config and FFmpeg's \
         development libraries: libavformat-dev libavcodec-dev libswscale-dev libavutil-dev):\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    bin
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

#[track_caller]
fn assert_ok(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn write_png(path: &Path, rgb: &[u8], w: usize, h: usize) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(rgb).unwrap();
}

fn read_png(path: &Path) -> (Vec<u8>, usize, usize) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (buf, info.width as usize, info.height as usize)
}

/// The `frame_NNNN.png` files of a folder, in order, all `W`x`H`.
fn read_frames(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("frame_") && n.ends_with(".png"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let (rgb, w, h) = read_png(&dir.join(n));
            assert_eq!((w, h), (W, H), "{n} is written at the input's size");
            rgb
        })
        .collect()
}

/// A video from the Rust API, as packed `W`x`H` RGB8 frames.
fn to_rgb8(video: &candle_core::Tensor) -> Vec<Vec<u8>> {
    let t = video.dim(2).unwrap();
    let mut buffers = vec![vec![0u8; W * H * 3]; t];
    let mut frames: Vec<_> = buffers
        .iter_mut()
        .map(|b| FrameMut::packed(b, W, H, PixelFormat::Rgb8).unwrap())
        .collect();
    video_to_frames(video, &mut frames, ResizeMode::Stretch).unwrap();
    drop(frames);
    buffers
}

fn assert_same_frames(what: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    assert_eq!(got.len(), want.len(), "{what}: frame count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w, "{what}: frame {i} differs from the Rust API's");
    }
}

fn is_mp4(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 1000 && &b[4..8] == b"ftyp")
}

#[test]
fn c_examples_animate_and_edit_files_like_the_rust_api() {
    if !tools::available(
        "c_examples_animate_and_edit_files_like_the_rust_api",
        &missing_tools(),
    ) {
        return;
    }
    let scratch = Scratch::new("examples");
    let bin = build_examples(&scratch.0);
    let i2v_ckpt = tiny("cogvideox-5b-i2v");
    let t2v_ckpt = tiny("cogvideox-5b");

    // Animate a PNG image.
    let image: Vec<u8> = (0..W * H * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            let (x, y) = (p % W, p / W);
            [x * 255 / W, y * 255 / H, (x * y) % 256][c] as u8
        })
        .collect();
    let image_path = scratch.0.join("still.png");
    write_png(&image_path, &image, W, H);
    let animated = scratch.0.join("animated");
    let out = run(
        &bin.join("animate_image"),
        &[
            i2v_ckpt.to_str().unwrap(),
            image_path.to_str().unwrap(),
            "a cat in the rain",
            animated.to_str().unwrap(),
            "--steps",
            "2",
            "--seed",
            "7",
            "--frames",
            "9",
        ],
    );
    let log = assert_ok("animate_image", &out);
    assert!(log.contains("denoising 2/2"), "progress is reported: {log}");
    let c_frames = read_frames(&animated);
    assert!(is_mp4(&animated.join("animated.mp4")), "an MP4 is written");

    let i2v = Pipeline::load(&i2v_ckpt, &LoadOptions::default()).unwrap();
    let (h, w, _) = i2v.default_video_size();
    let still = FrameRef::packed(&image, W, H, PixelFormat::Rgb8).unwrap();
    let video = frames_to_video(&[still], h, w, ResizeMode::Stretch, i2v.device()).unwrap();
    let opts = AnimateOptions {
        sampling: SamplingOptions {
            prompt: "a cat in the rain".into(),
            steps: 2,
            noise: NoiseOptions::seed(7),
            ..Default::default()
        },
        num_frames: 9,
    };
    let want = i2v
        .animate_image(&video.squeeze(2).unwrap(), &opts, &mut Progress::none())
        .unwrap();
    assert_same_frames("animate_image", &c_frames, &to_rgb8(&want.video));

    // Edit the animated clip, read back as an image sequence (lossless).
    let pattern = animated.join("frame_%04d.png");
    let edited = scratch.0.join("edited");
    let out = run(
        &bin.join("edit_clip"),
        &[
            t2v_ckpt.to_str().unwrap(),
            pattern.to_str().unwrap(),
            "a dog in the snow",
            edited.to_str().unwrap(),
            "--steps",
            "2",
            "--seed",
            "3",
            "--strength",
            "0.5",
        ],
    );
    let log = assert_ok("edit_clip on PNG frames", &out);
    assert!(log.contains("read 9 frames of 80x60"), "{log}");
    assert!(
        log.contains("denoising 1/1"),
        "strength 0.5 of 2 steps runs 1: {log}"
    );
    let c_frames = read_frames(&edited);
    assert!(is_mp4(&edited.join("edited.mp4")));

    let t2v = Pipeline::load(&t2v_ckpt, &LoadOptions::default()).unwrap();
    let (h, w, _) = t2v.default_video_size();
    let refs: Vec<_> = read_frames(&animated);
    let refs: Vec<_> = refs
        .iter()
        .map(|b| FrameRef::packed(b, W, H, PixelFormat::Rgb8).unwrap())
        .collect();
    let clip = frames_to_video(&refs, h, w, ResizeMode::Stretch, t2v.device()).unwrap();
    let inv_opts = InvertOptions {
        steps: 2,
        noise: NoiseOptions::seed(3),
        ..Default::default()
    };
    let inversion = t2v
        .invert_video(&clip, &inv_opts, &mut Progress::none())
        .unwrap();
    let edit = EditOptions {
        prompt: "a dog in the snow".into(),
        noise: NoiseOptions::seed(3),
        strength: 0.5,
        ..Default::default()
    };
    let want = t2v
        .edit_with_prompt(&inversion, &edit, &mut Progress::none())
        .unwrap();
    assert_same_frames("edit_clip", &c_frames, &to_rgb8(&want.video));

    // A video file as input: the MP4 the first example wrote.
    let from_mp4 = scratch.0.join("edited-from-mp4");
    let out = run(
        &bin.join("edit_clip"),
        &[
            t2v_ckpt.to_str().unwrap(),
            animated.join("animated.mp4").to_str().unwrap(),
            "a dog",
            from_mp4.to_str().unwrap(),
            "--steps",
            "1",
        ],
    );
    let log = assert_ok("edit_clip on an MP4", &out);
    assert!(log.contains("read 9 frames of 80x60"), "{log}");
    assert_eq!(read_frames(&from_mp4).len(), 9);

    // Failures are reported with the library's status and message.
    let out = run(
        &bin.join("animate_image"),
        &[
            t2v_ckpt.to_str().unwrap(),
            image_path.to_str().unwrap(),
            "x",
            scratch.0.join("nope").to_str().unwrap(),
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("status 4") && log.contains("text-to-video checkpoint"),
        "{log}"
    );
    let out = run(
        &bin.join("edit_clip"),
        &["/nonexistent", pattern.to_str().unwrap(), "x", "/tmp/x"],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("status 2") && log.contains("/nonexistent"),
        "{log}"
    );
    let out = run(&bin.join("edit_clip"), &["too", "few"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
}
