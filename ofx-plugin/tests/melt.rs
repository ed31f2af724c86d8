//! The bundle in a real host: MLT's `melt` with its OpenFX module (MLT 7.38
//! or newer). MLT has no temporal access and creates an instance per frame,
//! so CogVideoX Edit collects the segment on a first pass and serves results
//! on the next; the clip is played twice in one process, the filter attached
//! to each copy. The results must equal what the C API returns for the same
//! frames and options.
//!
//! Cases: 8-bit, 16-bit (`mlt_image_format=rgba64`), render scale 0.5 and
//! two render threads.
//!
//! melt is `$COGVIDEO_MELT`, else `melt` on the PATH. Without it the tests
//! say so and pass, except in CI (`CI=true`), where they fail.

mod common;
#[path = "../../tests/common/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cogvideox_ofx::capi;

const W: usize = 96;
const H: usize = 64;
const FRAMES: usize = 9;
const FILTER: &str = "openfx.org.cogvideo.CogVideoXEdit";
const PROMPT: &str = "a red car on a road";
const SEED: u64 = 7;
const GUIDANCE: f32 = 4.5;
const STEPS: i32 = 2;
/// Tries per melt run.
const TRIES: usize = 6;

fn find_melt() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COGVIDEO_MELT") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("melt"))
        .find(|p| p.is_file())
}

/// Runs `cmd` with a time limit, its output going to `out_file`; `None` when
/// it timed out or hung (killed).
///
/// melt hangs in about one run in twenty on a loaded machine, with or
/// without any OpenFX plugin: MLT's avformat consumer starts its thread
/// before it sets `running`, so a thread that reaches its loop first sees
/// it unset, closes the (empty) output and ends, and melt's main thread
/// then waits for `running` to clear again, forever (MLT's
/// `consumer_avformat.c`, `consumer_start`; seen as a lone thread sleeping
/// in melt's `transport`). `video` is the consumer's output: while it exists
/// empty and melt is down to one thread for two seconds, the run has hung.
fn run_limited(
    mut cmd: Command,
    out_file: &Path,
    video: Option<&Path>,
    limit: Duration,
) -> Option<std::process::Output> {
    let log = std::fs::File::create(out_file).unwrap();
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    let mut child = cmd.spawn().expect("start melt");
    let start = Instant::now();
    let tasks = format!("/proc/{}/task", child.id());
    let mut alone_since: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read(out_file).unwrap_or_default();
            return Some(std::process::Output {
                status,
                stdout: text,
                stderr: Vec::new(),
            });
        }
        let empty = video.is_some_and(|v| std::fs::metadata(v).is_ok_and(|m| m.len() == 0));
        let alone = empty && std::fs::read_dir(&tasks).is_ok_and(|d| d.count() == 1);
        alone_since = if alone {
            alone_since.or(Some(Instant::now()))
        } else {
            None
        };
        let hung = alone_since.is_some_and(|t| t.elapsed() > Duration::from_secs(2));
        if hung || start.elapsed() > limit {
            if hung {
                eprintln!("melt hung (MLT's avformat consumer start race): killed");
            }
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tempfile(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cogvideox-ofx-melt-{}", std::process::id()));
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    dir.join(name)
}

/// A 96x64 8 fps clip of moving gradients, 4:4:4 YUV (read exactly by
/// FFmpeg).
fn write_clip(path: &Path, frames: usize) {
    let mut v = b"YUV4MPEG2 W96 H64 F8:1 Ip A1:1 C444\n".to_vec();
    for k in 0..frames {
        v.extend_from_slice(b"FRAME\n");
        for plane in 0..3 {
            for y in 0..H {
                for x in 0..W {
                    v.push(match plane {
                        0 => ((x * 2 + y + k * 10) % 220 + 16) as u8,
                        1 => ((x + k * 5) % 200 + 28) as u8,
                        _ => ((y * 3 + k * 7) % 200 + 28) as u8,
                    });
                }
            }
        }
    }
    std::fs::write(path, v).unwrap();
}

fn write_profile(path: &Path) {
    std::fs::write(
        path,
        "description=96x64 8 fps\nframe_rate_num=8\nframe_rate_den=1\nwidth=96\nheight=64\n\
         progressive=1\nsample_aspect_num=1\nsample_aspect_den=1\ndisplay_aspect_num=3\n\
         display_aspect_den=2\ncolorspace=601\n",
    )
    .unwrap();
}

/// One way of running the plugin in melt.
struct Case {
    name: &'static str,
    /// FFmpeg's pixel format for the raw output and MLT's image format.
    pix_fmt: &'static str,
    image_format: &'static str,
    /// The C API format of the same pixels and its bytes per pixel.
    format: u32,
    pixel_bytes: usize,
    /// Render scale (consumer `scale`) and melt's `real_time` (-N: N threads).
    scale: f64,
    real_time: &'static str,
}

impl Case {
    /// 8-bit RGBA at full size on one render thread, as most tests run.
    fn rgba8(name: &'static str) -> Self {
        Case {
            name,
            pix_fmt: "rgba",
            image_format: "rgba",
            format: capi::FORMAT_RGBA8,
            pixel_bytes: 4,
            scale: 1.0,
            real_time: "-1",
        }
    }

    /// A file in this case's own temporary folder.
    fn path(&self, file: &str) -> PathBuf {
        tempfile(&format!("{}/{file}", self.name))
    }

    /// Removes this case's folder, and the run's when no other case still
    /// uses it (the second removal fails harmlessly otherwise).
    fn remove_files(&self) {
        let case_dir = self.path("");
        let _ = std::fs::remove_dir_all(&case_dir);
        let _ = std::fs::remove_dir(case_dir.parent().unwrap());
    }

    fn size(&self) -> (usize, usize) {
        (
            (W as f64 * self.scale) as usize,
            (H as f64 * self.scale) as usize,
        )
    }

    fn frame_bytes(&self) -> usize {
        let (w, h) = self.size();
        w * h * self.pixel_bytes
    }
}

/// The case's frames, back to back in `buf`, as the C API helpers take
/// them.
fn frames_of(case: &Case, buf: &[u8]) -> Vec<Vec<u8>> {
    buf.chunks(case.frame_bytes()).map(<[u8]>::to_vec).collect()
}

/// What the C API returns for the same frames and options, back to back.
fn c_api_edit(case: &Case, checkpoint: &Path, source: &[u8]) -> Vec<u8> {
    let (width, height) = case.size();
    let frames = frames_of(case, source);
    let inputs = common::EditInputs {
        checkpoint,
        steps: STEPS,
        seed: SEED,
        guidance: GUIDANCE,
    };
    let source = common::Frames {
        width,
        height,
        format: case.format,
        frames: &frames,
    };
    common::c_api_edit(&inputs, &source, &[PROMPT])
        .remove(0)
        .concat()
}

/// What the C API's image-to-video returns for `image` and the options the
/// test gives the Animate effect, back to back.
fn c_api_animate(case: &Case, checkpoint: &Path, image: &[u8]) -> Vec<u8> {
    let (width, height) = case.size();
    let inputs = common::AnimateInputs {
        checkpoint,
        prompt: PROMPT,
        frames: FRAMES,
        steps: STEPS,
        seed: SEED,
        guidance: GUIDANCE,
    };
    let image = common::Frames {
        width,
        height,
        format: case.format,
        frames: &[image.to_vec()],
    };
    common::c_api_animate(&inputs, &image).concat()
}

/// What the C API's text-to-video returns at the case's output size for
/// the options the test gives the Generate effect, back to back.
fn c_api_generate(case: &Case, checkpoint: &Path) -> Vec<u8> {
    let (width, height) = case.size();
    let inputs = common::GenerateInputs {
        checkpoint,
        prompt: PROMPT,
        frames: FRAMES,
        steps: STEPS,
        seed: SEED,
        guidance: GUIDANCE,
    };
    common::c_api_generate(&inputs, width, height, case.format).concat()
}

/// The melt binary and the bundle's folder, once per test process.
fn setup() -> Option<&'static (PathBuf, PathBuf)> {
    static SETUP: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let Some(melt) = find_melt() else {
                tools::available(
                    "the melt tests",
                    &["melt (set COGVIDEO_MELT or put melt on the PATH)"],
                );
                return None;
            };
            Some((melt, common::bundle_dir().to_path_buf()))
        })
        .as_ref()
}

/// Runs melt (retrying its known flaky exits) and returns the raw frames
/// it wrote.
fn melt_frames(case: &Case, out: &Path, log: &Path, args: &[String], frames: usize) -> Vec<u8> {
    let (melt, bundle_dir) = setup().unwrap();
    let want = frames * case.frame_bytes();
    // MLT's start race (see `run_limited`) hits about one run in ten on a
    // loaded machine; a failed try costs seconds.
    for attempt in 1..=TRIES {
        let _ = std::fs::remove_file(out);
        let mut cmd = Command::new(melt);
        cmd.env("OFX_PLUGIN_PATH", bundle_dir)
            .env("COGVIDEOX_OFX_LOG", log)
            // Each case has its own disk cache, which starts empty.
            .env("COGVIDEOX_OFX_CACHE", log.parent().unwrap().join("cache"))
            .args(args)
            .arg("-consumer")
            .arg(format!("avformat:{}", out.display()))
            .arg("f=rawvideo")
            .arg(format!("pix_fmt={}", case.pix_fmt))
            .arg(format!("mlt_image_format={}", case.image_format))
            .arg(format!("real_time={}", case.real_time))
            .arg(format!("scale={}", case.scale));
        match run_limited(
            cmd,
            &out.with_extension("melt-output"),
            Some(out),
            Duration::from_secs(45),
        ) {
            // A run takes seconds; melt sometimes hangs.
            None => eprintln!(
                "{}: melt attempt {attempt} for {} timed out",
                case.name,
                out.display()
            ),
            Some(o) => {
                let bytes = std::fs::read(out).unwrap_or_default();
                if o.status.success() && bytes.len() == want {
                    return bytes;
                }
                eprintln!(
                    "{}: melt attempt {attempt} for {}: {} and {} of {want} bytes; output:\n{}",
                    case.name,
                    out.display(),
                    o.status,
                    bytes.len(),
                    String::from_utf8_lossy(&o.stdout)
                );
            }
        }
    }
    panic!("{}: melt failed {TRIES} times", case.name);
}

/// Sample values of a frame (8- or 16-bit).
fn values(buf: &[u8], pixel_bytes: usize) -> Vec<u32> {
    if pixel_bytes == 8 {
        buf.chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect()
    } else {
        buf.iter().map(|&b| b as u32).collect()
    }
}

/// Equal up to float rounding: two processes (melt's and this one) may sum
/// in different orders, which moves a few 8-bit values by one level (and a
/// few percent of 16-bit values by a level or so); any real difference moves
/// many values by far more.
fn assert_same(case: &Case, got: &[u8], want: &[u8], what: &str) {
    let (got, want) = (
        values(got, case.pixel_bytes),
        values(want, case.pixel_bytes),
    );
    let diffs: Vec<u32> = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).collect();
    let n = diffs.iter().filter(|d| **d > 0).count();
    let max = diffs.iter().max().copied().unwrap_or(0);
    // At 16 bits the bound on the size alone decides: a real difference is
    // hundreds of levels.
    let (max_ok, share) = if case.pixel_bytes == 8 {
        (4, 1)
    } else {
        (1, 1000)
    };
    assert!(
        max <= max_ok && n * share <= got.len(),
        "{}, {what}: {n} of {} values differ from the C API's (max {max})",
        case.name,
        got.len()
    );
}

fn run_case(case: Case) {
    if setup().is_none() {
        return;
    }
    let dir = |f: &str| case.path(f);
    let (clip, profile, log) = (dir("clip.y4m"), dir("profile"), dir("plugin.log"));
    write_clip(&clip, FRAMES);
    write_profile(&profile);
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b");
    let base = vec!["-profile".to_string(), profile.display().to_string()];

    // The source as the filter sees it, from a run without the filter.
    let mut args = base.clone();
    args.push(clip.display().to_string());
    let source = melt_frames(&case, &dir("source.raw"), &log, &args, FRAMES);

    let filter = [
        FILTER.to_string(),
        format!("checkpoint={}", checkpoint.display()),
        format!("prompt={PROMPT}"),
        format!("seed={SEED}"),
        format!("guidance={GUIDANCE}"),
        format!("steps={STEPS}"),
        // MLT reports no frame rate, so the step is given.
        "frame_step=1".to_string(),
    ];
    // With several render threads the next copy's first frames may render
    // while the last frames of the collecting pass are still in flight, and
    // show the source; a third copy is then served entirely from the cache.
    let passes = if case.real_time == "-1" { 2 } else { 3 };
    let mut args = base;
    for _ in 0..passes {
        args.push(clip.display().to_string());
        args.push("-attach-clip".to_string());
        args.extend(filter.iter().cloned());
    }
    let out = melt_frames(&case, &dir("out.raw"), &log, &args, passes * FRAMES);
    let n = case.frame_bytes();
    let frame = |buf: &[u8], k: usize| buf[k * n..(k + 1) * n].to_vec();
    let expected = c_api_edit(&case, &checkpoint, &source);

    // Before the last pass each frame is the source (collected, or rendered
    // before the segment was complete) or the result; with one render thread
    // only the frame that completes the segment, the first pass's last, shows
    // the result.
    let mut passed_through = 0;
    for k in 0..(passes - 1) * FRAMES {
        if frame(&out, k) == frame(&source, k % FRAMES) {
            passed_through += 1;
        } else {
            let what = format!("pass {}, frame {}", k / FRAMES + 1, k % FRAMES);
            assert_same(&case, &frame(&out, k), &frame(&expected, k % FRAMES), &what);
        }
    }
    if case.real_time == "-1" {
        let what = format!("{}: source frames in the first pass", case.name);
        assert_eq!(passed_through, FRAMES - 1, "{what}");
    } else {
        assert!(
            passed_through > 0,
            "{}: no source frame before the last pass",
            case.name
        );
    }
    // The last pass: every frame from the cache, equal to the C API's.
    for k in 0..FRAMES {
        let got = frame(&out, (passes - 1) * FRAMES + k);
        let what = format!("last pass, frame {k}");
        assert!(
            got != frame(&source, k),
            "{}: {what}: still the source",
            case.name
        );
        assert_same(&case, &got, &frame(&expected, k), &what);
    }
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("of 9 frames; results on the next pass"),
        "{log}"
    );
    assert_eq!(log.matches("processing segment").count(), 1, "{log}");
    // MLT's module has no temporal access, and says so.
    assert!(log.contains("the host has no temporal access"), "{log}");
    case.remove_files();
}

#[test]
fn edit_8bit() {
    run_case(Case::rgba8("8bit"));
}

#[test]
fn edit_16bit() {
    run_case(Case {
        name: "16bit",
        pix_fmt: "rgba64le",
        image_format: "rgba64",
        format: capi::FORMAT_RGBA16,
        pixel_bytes: 8,
        scale: 1.0,
        real_time: "-1",
    });
}

#[test]
fn edit_at_render_scale_half() {
    run_case(Case {
        scale: 0.5,
        ..Case::rgba8("scale-half")
    });
}

#[test]
fn edit_with_two_render_threads() {
    run_case(Case {
        real_time: "-2",
        ..Case::rgba8("two-threads")
    });
}

#[test]
fn edit_with_a_broken_checkpoint_passes_the_source_through_and_loads_once() {
    if setup().is_none() {
        return;
    }
    let case = Case::rgba8("broken-checkpoint");
    let dir = |f: &str| case.path(f);
    let (clip, profile, log) = (dir("clip.y4m"), dir("profile"), dir("plugin.log"));
    write_clip(&clip, FRAMES);
    write_profile(&profile);
    // A folder without model_index.json.
    let checkpoint = dir("empty-checkpoint");
    std::fs::create_dir_all(&checkpoint).unwrap();
    let base = vec!["-profile".to_string(), profile.display().to_string()];
    let mut args = base.clone();
    args.push(clip.display().to_string());
    let source = melt_frames(&case, &dir("source.raw"), &log, &args, FRAMES);
    let mut args = base;
    args.push(clip.display().to_string());
    args.push("-attach-clip".to_string());
    args.push(FILTER.to_string());
    args.push(format!("checkpoint={}", checkpoint.display()));
    args.push("frame_step=1".to_string());
    let out = melt_frames(&case, &dir("out.raw"), &log, &args, FRAMES);
    assert!(out == source, "the source must pass through");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("loading LoadKey").count(), 1, "{text}");
    assert!(text.contains("cannot load the checkpoint"), "{text}");
    assert!(
        text.contains(&format!("(log: {})", log.display())),
        "{text}"
    );
    case.remove_files();
}

#[test]
fn edit_results_are_read_back_from_disk_in_a_new_process() {
    if setup().is_none() {
        return;
    }
    let case = Case::rgba8("disk-cache");
    let dir = |f: &str| case.path(f);
    let (clip, profile) = (dir("clip.y4m"), dir("profile"));
    let (log_a, log_b) = (dir("a.log"), dir("b.log"));
    write_clip(&clip, FRAMES);
    write_profile(&profile);
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b");
    let base = vec!["-profile".to_string(), profile.display().to_string()];
    let mut args = base.clone();
    args.push(clip.display().to_string());
    let source = melt_frames(&case, &dir("source.raw"), &log_a, &args, FRAMES);
    let mut args = base;
    args.push(clip.display().to_string());
    args.push("-attach-clip".to_string());
    args.extend([
        FILTER.to_string(),
        format!("checkpoint={}", checkpoint.display()),
        format!("prompt={PROMPT}"),
        format!("seed={SEED}"),
        format!("guidance={GUIDANCE}"),
        format!("steps={STEPS}"),
        "frame_step=1".to_string(),
    ]);
    // Process A collects and processes; process B, after it, finds the
    // result on disk once it has seen the same source frames.
    let out_a = melt_frames(&case, &dir("a.raw"), &log_a, &args, FRAMES);
    let out_b = melt_frames(&case, &dir("b.raw"), &log_b, &args, FRAMES);
    let text_a = std::fs::read_to_string(&log_a).unwrap();
    let text_b = std::fs::read_to_string(&log_b).unwrap();
    assert_eq!(text_a.matches("processing segment").count(), 1, "{text_a}");
    assert_eq!(text_b.matches("processing segment").count(), 0, "{text_b}");
    assert!(text_b.contains("segment read from"), "{text_b}");
    assert!(
        out_a == out_b,
        "the result read back differs from the one computed"
    );
    let n = case.frame_bytes();
    let last = |b: &[u8]| b[(FRAMES - 1) * n..].to_vec();
    assert!(
        last(&out_b) != last(&source),
        "the last frame is still the source"
    );

    // A source differing in one frame is another segment: computed again.
    let mut bytes = std::fs::read(&clip).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x40;
    std::fs::write(&clip, bytes).unwrap();
    let log_c = dir("c.log");
    melt_frames(&case, &dir("c.raw"), &log_c, &args, FRAMES);
    let text_c = std::fs::read_to_string(&log_c).unwrap();
    assert_eq!(text_c.matches("processing segment").count(), 1, "{text_c}");
    assert!(!text_c.contains("segment read from"), "{text_c}");
    case.remove_files();
}

#[test]
fn edit_with_frame_step_two_blends_between_model_frames() {
    if setup().is_none() {
        return;
    }
    let case = Case::rgba8("frame-step");
    // Model frame k is host frame 2k: 17 host frames for 9 model frames.
    let host_frames = 2 * FRAMES - 1;
    let dir = |f: &str| case.path(f);
    let (clip, profile, log) = (dir("clip.y4m"), dir("profile"), dir("plugin.log"));
    write_clip(&clip, host_frames);
    write_profile(&profile);
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b");
    let base = vec!["-profile".to_string(), profile.display().to_string()];
    let mut args = base.clone();
    args.push(clip.display().to_string());
    let source = melt_frames(&case, &dir("source.raw"), &log, &args, host_frames);
    let mut args = base;
    for _ in 0..2 {
        args.push(clip.display().to_string());
        args.push("-attach-clip".to_string());
        args.extend([
            FILTER.to_string(),
            format!("checkpoint={}", checkpoint.display()),
            format!("prompt={PROMPT}"),
            format!("seed={SEED}"),
            format!("guidance={GUIDANCE}"),
            format!("steps={STEPS}"),
            "frame_step=2".to_string(),
        ]);
    }
    let out = melt_frames(&case, &dir("out.raw"), &log, &args, 2 * host_frames);
    let n = case.frame_bytes();
    let frame = |buf: &[u8], k: usize| buf[k * n..(k + 1) * n].to_vec();
    let model_source: Vec<u8> = (0..FRAMES).flat_map(|k| frame(&source, 2 * k)).collect();
    let expected = c_api_edit(&case, &checkpoint, &model_source);
    for j in 0..host_frames - 1 {
        assert!(
            frame(&out, j) == frame(&source, j),
            "first pass, frame {j}: not the source"
        );
    }
    for j in 0..host_frames {
        let got = frame(&out, host_frames + j);
        let want = if j % 2 == 0 {
            frame(&expected, j / 2)
        } else {
            let (a, b) = (frame(&expected, j / 2), frame(&expected, j / 2 + 1));
            a.iter()
                .zip(&b)
                .map(|(&x, &y)| ((x as f32 + y as f32) / 2.0).round() as u8)
                .collect()
        };
        assert_same(&case, &got, &want, &format!("second pass, host frame {j}"));
    }
    case.remove_files();
}

#[test]
fn animate_in_melt_equals_the_c_api() {
    if setup().is_none() {
        return;
    }
    let case = Case::rgba8("animate");
    let dir = |f: &str| case.path(f);
    let (clip, profile, log) = (dir("clip.y4m"), dir("profile"), dir("plugin.log"));
    write_clip(&clip, FRAMES);
    write_profile(&profile);
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b-i2v");
    let base = vec!["-profile".to_string(), profile.display().to_string()];
    let mut args = base.clone();
    args.push(clip.display().to_string());
    let source = melt_frames(&case, &dir("source.raw"), &log, &args, FRAMES);
    let mut args = base;
    args.push(clip.display().to_string());
    args.push("-attach-clip".to_string());
    args.extend([
        "openfx.org.cogvideo.CogVideoXAnimate".to_string(),
        format!("checkpoint={}", checkpoint.display()),
        format!("prompt={PROMPT}"),
        format!("seed={SEED}"),
        format!("guidance={GUIDANCE}"),
        format!("steps={STEPS}"),
        "frame_step=1".to_string(),
        // The image-to-video default is 49 frames.
        format!("segment_length={FRAMES}"),
        "source_frame=0".to_string(),
    ]);
    let out = melt_frames(&case, &dir("out.raw"), &log, &args, FRAMES);
    let n = case.frame_bytes();
    // The first frame is the image: the clip is computed on the first pass.
    let expected = c_api_animate(&case, &checkpoint, &source[..n]);
    for k in 0..FRAMES {
        let got = &out[k * n..(k + 1) * n];
        assert!(
            got != &source[k * n..(k + 1) * n],
            "frame {k}: still the source"
        );
        assert_same(
            &case,
            got,
            &expected[k * n..(k + 1) * n],
            &format!("frame {k}"),
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("animating").count(), 1, "{text}");
    case.remove_files();
}

/// `melt -query` lists the effects MLT can use (filters: Edit, Animate, and
/// Generate in its filter context) with every parameter it exposes.
#[test]
fn melt_lists_the_effects_and_their_parameters() {
    let Some((melt, bundle_dir)) = setup() else {
        return;
    };
    let query = |what: &str| {
        let mut cmd = Command::new(melt);
        cmd.env("OFX_PLUGIN_PATH", bundle_dir)
            .args(["-query", what]);
        let out = tempfile(&format!("query/{what}.txt"));
        let o =
            run_limited(cmd, &out, None, Duration::from_secs(45)).expect("melt -query timed out");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let filters = query("filters");
    for id in ["CogVideoXEdit", "CogVideoXAnimate", "CogVideoXGenerate"] {
        assert!(
            filters.contains(&format!("openfx.org.cogvideo.{id}")),
            "{filters}"
        );
    }
    let common = [
        "checkpoint",
        "device",
        "device_index",
        "dtype",
        "vae_tiling",
        "resize_mode",
        "prompt",
        "negative_prompt",
        "steps",
        "guidance",
        "seed",
        "width",
        "height",
        "segment_start",
        "segment_length",
        "frame_step",
        "cache_version",
        "speed",
        "lora_1",
        "lora_1_weight",
        "lora_3",
        "lora_3_weight",
    ];
    for (id, own) in [
        ("CogVideoXEdit", &["start_from_inverted", "strength"][..]),
        ("CogVideoXAnimate", &["source_frame"][..]),
        ("CogVideoXGenerate", &[][..]),
    ] {
        let text = query(&format!("filter=openfx.org.cogvideo.{id}"));
        for p in common.iter().chain(own) {
            assert!(
                text.contains(&format!("identifier: {p}\n")),
                "{id} lacks {p}:\n{text}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(tempfile("query"));
}

/// Generate as a filter (MLT has no generator context): the clip replaces
/// the source over the segment on the first pass, equal to the C API's; a
/// later process at render scale 0.5 decodes the latents the first one
/// cached instead of sampling again.
#[test]
fn generate_in_melt_equals_the_c_api_and_a_new_size_decodes_cached_latents() {
    if setup().is_none() {
        return;
    }
    let full = Case::rgba8("generate");
    let half = Case { scale: 0.5, ..full };
    let dir = |f: &str| full.path(f);
    let (clip, profile) = (dir("clip.y4m"), dir("profile"));
    let (log_a, log_b) = (dir("a.log"), dir("b.log"));
    write_clip(&clip, FRAMES);
    write_profile(&profile);
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b");
    let mut args = vec!["-profile".to_string(), profile.display().to_string()];
    args.push(clip.display().to_string());
    let source = melt_frames(&full, &dir("source.raw"), &log_a, &args, FRAMES);
    args.push("-attach-clip".to_string());
    args.extend([
        "openfx.org.cogvideo.CogVideoXGenerate".to_string(),
        format!("checkpoint={}", checkpoint.display()),
        format!("prompt={PROMPT}"),
        format!("seed={SEED}"),
        format!("guidance={GUIDANCE}"),
        format!("steps={STEPS}"),
        "frame_step=1".to_string(),
        format!("segment_length={FRAMES}"),
    ]);
    for (case, log) in [(&full, &log_a), (&half, &log_b)] {
        let out = melt_frames(
            case,
            &dir(&format!("{}.raw", case.scale)),
            log,
            &args,
            FRAMES,
        );
        let expected = c_api_generate(case, &checkpoint);
        let n = case.frame_bytes();
        for k in 0..FRAMES {
            let got = &out[k * n..(k + 1) * n];
            let what = format!("scale {}, frame {k}", case.scale);
            if case.scale == 1.0 {
                assert!(
                    got != &source[k * n..(k + 1) * n],
                    "{what}: still the source"
                );
            }
            assert_same(case, got, &expected[k * n..(k + 1) * n], &what);
        }
    }
    let text_a = std::fs::read_to_string(&log_a).unwrap();
    let text_b = std::fs::read_to_string(&log_b).unwrap();
    assert_eq!(text_a.matches("generating").count(), 1, "{text_a}");
    assert_eq!(text_b.matches("generating").count(), 0, "{text_b}");
    assert_eq!(
        text_b.matches("decoding cached latents").count(),
        1,
        "{text_b}"
    );
    assert!(text_b.contains("latents read from"), "{text_b}");
    full.remove_files();
}

/// Edit and Animate keep their latents on disk beside the frames: a later
/// process that finds the latents but not the frames (pruned) decodes them
/// instead of sampling again, and shows the same frames.
#[test]
fn results_are_decoded_again_from_cached_latents_when_their_frames_are_gone() {
    if setup().is_none() {
        return;
    }
    let case = Case::rgba8("latents");
    let dir = |f: &str| case.path(f);
    let (clip, profile) = (dir("clip.y4m"), dir("profile"));
    write_clip(&clip, FRAMES);
    write_profile(&profile);
    let common = [
        format!("prompt={PROMPT}"),
        format!("seed={SEED}"),
        format!("guidance={GUIDANCE}"),
        format!("steps={STEPS}"),
        "frame_step=1".to_string(),
        format!("segment_length={FRAMES}"),
    ];
    let edit = [
        FILTER.to_string(),
        format!(
            "checkpoint={}",
            common::repo()
                .join("tests/data/tiny/cogvideox-5b")
                .display()
        ),
    ];
    let animate = [
        "openfx.org.cogvideo.CogVideoXAnimate".to_string(),
        format!(
            "checkpoint={}",
            common::repo()
                .join("tests/data/tiny/cogvideox-5b-i2v")
                .display()
        ),
        "source_frame=0".to_string(),
    ];
    for (what, filter, sampled) in [
        ("edit", &edit[..], "processing segment"),
        ("animate", &animate[..], "animating"),
    ] {
        let mut args = vec!["-profile".to_string(), profile.display().to_string()];
        args.push(clip.display().to_string());
        args.push("-attach-clip".to_string());
        args.extend(filter.iter().chain(&common).cloned());
        let (log_a, log_b) = (dir(&format!("{what}-a.log")), dir(&format!("{what}-b.log")));
        let out_a = melt_frames(&case, &dir(&format!("{what}-a.raw")), &log_a, &args, FRAMES);
        // The frames go, the latents stay.
        let cache = log_a.parent().unwrap().join("cache");
        let mut latents = 0;
        for e in std::fs::read_dir(&cache).unwrap() {
            let p = e.unwrap().path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("bin") => std::fs::remove_file(&p).unwrap(),
                Some("lat") => latents += 1,
                _ => {}
            }
        }
        assert!(latents > 0, "{what}: no latents in {}", cache.display());
        let out_b = melt_frames(&case, &dir(&format!("{what}-b.raw")), &log_b, &args, FRAMES);
        let text_a = std::fs::read_to_string(&log_a).unwrap();
        let text_b = std::fs::read_to_string(&log_b).unwrap();
        assert_eq!(text_a.matches(sampled).count(), 1, "{text_a}");
        assert_eq!(text_b.matches(sampled).count(), 0, "{text_b}");
        assert_eq!(
            text_b.matches("decoding cached latents").count(),
            1,
            "{text_b}"
        );
        // The same decoder on the same latents: the same bytes.
        assert!(out_a == out_b, "{what}: the decoded frames differ");
    }
    case.remove_files();
}

/// Generate with `speed=Preview` in melt: half the steps with the
/// library's step cache at the model's smallest working size, scaled to the
/// frame; not the exact clip, and the log reports the skipped work.
#[test]
fn generate_preview_in_melt_runs_with_the_step_cache() {
    if setup().is_none() {
        return;
    }
    let case = Case::rgba8("preview");
    let dir = |f: &str| case.path(f);
    let (clip, profile, log) = (dir("clip.y4m"), dir("profile"), dir("preview.log"));
    write_clip(&clip, FRAMES);
    write_profile(&profile);
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b");
    const STEPS_CACHED: i32 = 10;
    let mut args = vec!["-profile".to_string(), profile.display().to_string()];
    args.push(clip.display().to_string());
    let source = melt_frames(&case, &dir("source.raw"), &log, &args, FRAMES);
    args.push("-attach-clip".to_string());
    args.extend([
        "openfx.org.cogvideo.CogVideoXGenerate".to_string(),
        format!("checkpoint={}", checkpoint.display()),
        format!("prompt={PROMPT}"),
        format!("seed={SEED}"),
        format!("guidance={GUIDANCE}"),
        format!("steps={STEPS_CACHED}"),
        // MLT sets a choice by its option's label.
        "speed=Preview".to_string(),
        "frame_step=1".to_string(),
        format!("segment_length={FRAMES}"),
    ]);
    let out = melt_frames(&case, &dir("preview.raw"), &log, &args, FRAMES);
    let exact = common::c_api_generate(
        &common::GenerateInputs {
            checkpoint: &checkpoint,
            prompt: PROMPT,
            frames: FRAMES,
            steps: STEPS_CACHED,
            seed: SEED,
            guidance: GUIDANCE,
        },
        W,
        H,
        case.format,
    )
    .concat();
    let n = case.frame_bytes();
    for k in 0..FRAMES {
        let got = &out[k * n..(k + 1) * n];
        assert!(got != &source[k * n..(k + 1) * n], "frame {k}: the source");
        let max = got
            .iter()
            .zip(&exact[k * n..(k + 1) * n])
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(max > 4, "frame {k}: the exact frame (max difference {max})");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("generating").count(), 1, "{text}");
    let report = text
        .lines()
        .find_map(|l| l.split_once("step cache: ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no step cache report:\n{text}"));
    let skipped: u64 = report.split(' ').next().unwrap().parse().unwrap();
    assert!(skipped > 0, "{report}");
    case.remove_files();
}
