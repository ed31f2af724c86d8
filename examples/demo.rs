//! The quick-start demo: edits a clip by prompt (DDIM inversion, then
//! reconstruction) and animates an image, writing PNG frames.
//!
//! Usage: `demo [<text-to-video checkpoint> [<image-to-video checkpoint>]] [--steps N]`.
//! Without checkpoints it uses the tiny random ones under tests/data/tiny
//! (the pictures are noise: the weights are random), which shows the whole
//! path from frames in memory to frames out in a few seconds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cogvideo::frames::{
    FrameMut, FrameRef, PixelFormat, ResizeMode, frames_to_video, video_to_frames,
};
use cogvideo::pipelines::{
    AnimateOptions, EditOptions, InvertOptions, LoadOptions, Pipeline, Progress, SamplingOptions,
    Stage, VideoOutput,
};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A moving colour gradient, the demo's input clip (RGB8, packed).
fn synthetic_clip(frames: usize, height: usize, width: usize) -> Vec<Vec<u8>> {
    (0..frames)
        .map(|t| {
            let mut img = Vec::with_capacity(height * width * 3);
            for y in 0..height {
                for x in 0..width {
                    let shift = (t * width) / frames.max(1);
                    img.push((((x + shift) * 255) / width.max(1)) as u8);
                    img.push(((y * 255) / height.max(1)) as u8);
                    img.push((((x + y + 3 * t) * 7) % 256) as u8);
                }
            }
            img
        })
        .collect()
}

fn write_pngs(out: &VideoOutput, dir: &Path) -> AnyResult<usize> {
    std::fs::create_dir_all(dir)?;
    let (_, _, t, h, w) = out.video.dims5()?;
    let mut buffers = vec![vec![0u8; h * w * 3]; t];
    {
        let mut frames = buffers
            .iter_mut()
            .map(|b| FrameMut::packed(b, w, h, PixelFormat::Rgb8))
            .collect::<Result<Vec<_>, _>>()?;
        video_to_frames(&out.video, &mut frames, ResizeMode::Stretch)?;
    }
    for (i, buf) in buffers.iter().enumerate() {
        let file = std::fs::File::create(dir.join(format!("frame_{i:04}.png")))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(buf)?;
    }
    Ok(t)
}

fn progress_printer() -> impl FnMut(Stage, usize, usize) -> bool {
    move |stage, done, total| {
        if done == total {
            println!("  {stage:?}: done");
        }
        true
    }
}

fn main() -> AnyResult<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut steps = 50;
    if let Some(i) = args.iter().position(|a| a == "--steps") {
        steps = args.get(i + 1).ok_or("--steps needs a number")?.parse()?;
        args.drain(i..i + 2);
    }
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny");
    let t2v = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| tiny.join("cogvideox-5b"));
    let i2v = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| tiny.join("cogvideox-5b-i2v"));
    let out_dir = PathBuf::from("demo_output");

    println!("loading {}", t2v.display());
    let start = Instant::now();
    let editor = Pipeline::load(&t2v, &LoadOptions::default())?;
    let (height, width, default_frames) = editor.default_video_size();
    let frames = default_frames.min(9);
    let clip = synthetic_clip(frames, height, width);
    let views = clip
        .iter()
        .map(|b| FrameRef::packed(b, width, height, PixelFormat::Rgb8))
        .collect::<Result<Vec<_>, _>>()?;
    let video = frames_to_video(&views, height, width, ResizeMode::Stretch, editor.device())?;

    println!(
        "editing a {frames}-frame {width}x{height} clip ({} steps)",
        steps
    );
    let mut cb = progress_printer();
    let inversion = editor.invert_video(
        &video,
        &InvertOptions {
            steps,
            ..Default::default()
        },
        &mut Progress::new(&mut cb),
    )?;
    let edit = EditOptions {
        prompt: "a white wolf running through a snowy forest".into(),
        ..Default::default()
    };
    let edited = editor.edit_with_prompt(&inversion, &edit, &mut Progress::new(&mut cb))?;
    let n = write_pngs(&edited, &out_dir.join("edit"))?;
    println!(
        "wrote {n} edited frames to {}",
        out_dir.join("edit").display()
    );

    println!("loading {}", i2v.display());
    let animator = Pipeline::load(&i2v, &LoadOptions::default())?;
    let (h, w, _) = animator.default_video_size();
    let image =
        frames_to_video(&views[..1], h, w, ResizeMode::Crop, animator.device())?.squeeze(2)?;
    let anim = AnimateOptions {
        sampling: SamplingOptions {
            prompt: "the gradient starts to swirl".into(),
            steps,
            ..Default::default()
        },
        num_frames: frames,
    };
    let animated = animator.animate_image(&image, &anim, &mut Progress::new(&mut cb))?;
    let n = write_pngs(&animated, &out_dir.join("animate"))?;
    println!(
        "wrote {n} animated frames to {}",
        out_dir.join("animate").display()
    );
    println!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
