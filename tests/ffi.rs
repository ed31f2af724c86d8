//! The C API under misuse and concurrency: bad arguments of every kind give
//! a status and a one-line message (never a crash), cancelled calls leave
//! handles usable, and calls from many threads on one pipeline serialise
//! and give the same frames as the same calls made one after another.
//!
//! And what C API 1.1 added or tightened: latents out and decoding,
//! video-to-video and edit strength, noise plans and exact noise lengths,
//! queries that never wait for a running call, refusals of sizes that
//! cannot fit (instead of an abort), and callers built against the 1.0
//! header.

mod common;

use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr::{null, null_mut};
use std::sync::mpsc;
use std::time::Duration;

use cogvideo::ffi::cogvideo_status::*;
use cogvideo::ffi::*;
use common::tiny;

const W: usize = 96;
const H: usize = 64;

fn path(variant: &str) -> CString {
    CString::new(tiny(variant).to_str().unwrap()).unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(cogvideo_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts a status, and that failures leave a message naming `needle`.
#[track_caller]
fn expect(status: cogvideo_status, want: cogvideo_status, needle: &str) {
    let msg = last_error();
    assert_eq!(status, want, "message: {msg}");
    assert!(!msg.contains('\n'), "messages are one line: {msg:?}");
    if want == COGVIDEO_OK {
        assert!(
            msg.is_empty(),
            "a successful call clears the message: {msg}"
        );
    } else {
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "message {msg:?} should mention {needle:?}"
        );
    }
}

struct Handle(*mut cogvideo_pipeline);
// SAFETY: the C API documents pipelines as shareable across threads (the
// library checks Send + Sync at compile time); this only carries the pointer.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Handle {
    fn load(variant: &str) -> Self {
        let mut p = null_mut();
        let st = unsafe { cogvideo_load_pipeline(path(variant).as_ptr(), null(), &mut p) };
        expect(st, COGVIDEO_OK, "");
        assert!(!p.is_null());
        Self(p)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        unsafe { cogvideo_pipeline_free(self.0) }
    }
}

struct Inv(*mut cogvideo_inversion);
// SAFETY: as for Handle.
unsafe impl Send for Inv {}
unsafe impl Sync for Inv {}

impl Drop for Inv {
    fn drop(&mut self) {
        unsafe { cogvideo_inversion_free(self.0) }
    }
}

/// Packed frames owned by the test, with their C descriptors.
struct Frames {
    buffers: Vec<Vec<u8>>,
    descs: Vec<cogvideo_frame>,
}

impl Frames {
    fn new(count: usize, width: usize, height: usize, format: u32) -> Self {
        let bpp = match format {
            COGVIDEO_FORMAT_RGB8 => 3,
            COGVIDEO_FORMAT_RGBA8 => 4,
            COGVIDEO_FORMAT_RGBA16 => 8,
            _ => 16,
        };
        let mut buffers: Vec<Vec<u8>> = (0..count)
            .map(|t| {
                (0..width * height * bpp)
                    .map(|i| ((i * 7 + t * 13) % 251) as u8)
                    .collect()
            })
            .collect();
        if format == COGVIDEO_FORMAT_RGBA32F {
            for b in &mut buffers {
                for px in b.chunks_exact_mut(4) {
                    px.copy_from_slice(&(px[0] as f32 / 255.0).to_ne_bytes());
                }
            }
        }
        let descs = buffers
            .iter_mut()
            .map(|b| cogvideo_frame {
                data: b.as_mut_ptr() as *mut c_void,
                width: width as i32,
                height: height as i32,
                stride_bytes: (width * bpp) as i64,
                format,
            })
            .collect();
        Self { buffers, descs }
    }

    fn rgb8(count: usize) -> Self {
        Self::new(count, W, H, COGVIDEO_FORMAT_RGB8)
    }
}

fn gen_opts(steps: i32, seed: u64) -> cogvideo_generate_options {
    let mut o = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_generate_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
    o.prompt = c"a red fox".as_ptr();
    o.steps = steps;
    o.seed = seed;
    o
}

fn generate(p: &Handle, o: &cogvideo_generate_options, out: &mut Frames) -> cogvideo_status {
    unsafe { cogvideo_generate_video(p.0, o, out.descs.as_ptr(), out.descs.len()) }
}

fn invert(p: &Handle, input: &Frames, o: *const cogvideo_invert_options) -> (cogvideo_status, Inv) {
    let mut inv = null_mut();
    let st =
        unsafe { cogvideo_invert_video(p.0, input.descs.as_ptr(), input.descs.len(), o, &mut inv) };
    (st, Inv(inv))
}

fn invert_opts(steps: i32) -> cogvideo_invert_options {
    let mut o = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_invert_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
    o.steps = steps;
    o
}

fn edit_opts(prompt: &CStr) -> cogvideo_edit_options {
    let mut o = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_edit_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
    o.prompt = prompt.as_ptr();
    o
}

#[test]
fn version_is_the_crate_version() {
    let v = unsafe { CStr::from_ptr(cogvideo_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn bad_load_arguments_are_errors() {
    let mut p: *mut cogvideo_pipeline = std::ptr::dangling_mut();
    let st = unsafe { cogvideo_load_pipeline(null(), null(), &mut p) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "path is NULL");
    assert!(p.is_null(), "out is cleared on failure");

    let st = unsafe { cogvideo_load_pipeline(path("cogvideox-5b").as_ptr(), null(), null_mut()) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "out is NULL");

    let missing = c"/nonexistent/CogVideoX-5b";
    let st = unsafe { cogvideo_load_pipeline(missing.as_ptr(), null(), &mut p) };
    expect(st, COGVIDEO_ERR_IO, "/nonexistent/CogVideoX-5b");

    let not_utf8 = [0xff_u8, 0xfe, b'x', 0];
    let st = unsafe { cogvideo_load_pipeline(not_utf8.as_ptr() as *const c_char, null(), &mut p) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "UTF-8");

    let mut o = unsafe { std::mem::zeroed::<cogvideo_load_options>() };
    let ckpt = path("cogvideox-5b");
    let st = unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "struct_size");
    for (field, value, needle) in [(0, 99, "device"), (1, 99, "dtype")] {
        unsafe { cogvideo_load_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
        if field == 0 {
            o.device = value;
        } else {
            o.dtype = value;
        }
        let st = unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) };
        expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, needle);
    }
    unsafe { cogvideo_load_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
    o.device = COGVIDEO_DEVICE_CUDA;
    o.device_index = 3;
    let st = unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) };
    if cfg!(feature = "cuda") {
        assert_ne!(st, COGVIDEO_OK, "no CUDA device 3 in CI");
    } else {
        expect(st, COGVIDEO_ERR_DEVICE, "cuda");
    }

    let broken = common::ScratchCheckpoint::copy_of("cogvideox-5b", "ffi-truncated");
    let vae = broken.root.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&vae).unwrap();
    std::fs::write(&vae, &bytes[..bytes.len() / 2]).unwrap();
    let broken_path = CString::new(broken.root.to_str().unwrap()).unwrap();
    let st = unsafe { cogvideo_load_pipeline(broken_path.as_ptr(), null(), &mut p) };
    expect(
        st,
        COGVIDEO_ERR_BAD_CHECKPOINT,
        "diffusion_pytorch_model.safetensors",
    );
    assert!(p.is_null());

    // NULL is accepted where the header says so.
    unsafe {
        cogvideo_pipeline_free(null_mut());
        cogvideo_inversion_free(null_mut());
        cogvideo_load_options_init(null_mut());
        cogvideo_generate_options_init(null_mut());
        cogvideo_animate_options_init(null_mut());
        cogvideo_invert_options_init(null_mut());
        cogvideo_edit_options_init(null_mut());
        cogvideo_decode_options_init(null_mut());
        cogvideo_video_to_video_options_init(null_mut());
        cogvideo_memory_info_init(null_mut());
    }
}

#[test]
fn bad_call_arguments_are_errors() {
    let p = Handle::load("cogvideox-5b");
    let mut n = 0;
    expect(
        unsafe { cogvideo_output_frame_count(p.0, 0, &mut n) },
        COGVIDEO_OK,
        "",
    );
    assert_eq!(n, 9);
    expect(
        unsafe { cogvideo_output_frame_count(p.0, 10, &mut n) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "4k+1",
    );
    expect(
        unsafe { cogvideo_output_frame_count(null(), 9, &mut n) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "pipeline is NULL",
    );
    expect(
        unsafe { cogvideo_pipeline_fps(p.0, null_mut()) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "fps is NULL",
    );

    let mut out = Frames::rgb8(9);
    let ok = gen_opts(1, 0);
    let mut bad_generate = |what: &str, o: cogvideo_generate_options, needle: &str| {
        let st = generate(&p, &o, &mut out);
        assert_eq!(
            st,
            COGVIDEO_ERR_INVALID_ARGUMENT,
            "{what}: {}",
            last_error()
        );
        assert!(last_error().contains(needle), "{what}: {}", last_error());
    };
    bad_generate(
        "odd frames",
        cogvideo_generate_options {
            num_frames: 10,
            ..ok
        },
        "4k+1",
    );
    bad_generate(
        "width",
        cogvideo_generate_options { width: 100, ..ok },
        "multiples of 16",
    );
    bad_generate(
        "absurd size",
        cogvideo_generate_options {
            width: i32::MAX,
            height: i32::MAX,
            ..ok
        },
        "outside",
    );
    bad_generate(
        "huge but in range",
        cogvideo_generate_options {
            width: 9984,
            height: 9984,
            ..ok
        },
        "outside",
    );
    bad_generate(
        "steps",
        cogvideo_generate_options { steps: 0, ..ok },
        "steps",
    );
    bad_generate(
        "negative steps",
        cogvideo_generate_options { steps: -3, ..ok },
        "steps",
    );
    bad_generate(
        "guidance",
        cogvideo_generate_options {
            guidance_scale: f32::NAN,
            ..ok
        },
        "guidance_scale",
    );
    bad_generate(
        "scheduler",
        cogvideo_generate_options { scheduler: 7, ..ok },
        "scheduler",
    );
    bad_generate(
        "resize",
        cogvideo_generate_options {
            resize_mode: 7,
            ..ok
        },
        "resize mode",
    );
    bad_generate(
        "noise",
        cogvideo_generate_options { noise_len: 5, ..ok },
        "noise is NULL",
    );
    let not_utf8 = [b'a', 0xc3, 0x28, 0];
    bad_generate(
        "prompt",
        cogvideo_generate_options {
            prompt: not_utf8.as_ptr() as *const c_char,
            ..ok
        },
        "UTF-8",
    );
    bad_generate(
        "struct_size",
        cogvideo_generate_options {
            struct_size: 4,
            ..ok
        },
        "struct_size",
    );

    // Output buffers are checked before any work starts: a bad buffer
    // costs nothing (the progress callback is never reached).
    extern "C" fn count(user: *mut c_void, _: i32, _: i32, _: i32) -> bool {
        unsafe { *(user as *mut i32) += 1 };
        true
    }
    let mut progress_calls = 0_i32;
    let counted = cogvideo_generate_options {
        progress: Some(count),
        progress_user: &mut progress_calls as *mut i32 as *mut c_void,
        ..ok
    };
    let run = |descs: &[cogvideo_frame]| unsafe {
        cogvideo_generate_video(p.0, &counted, descs.as_ptr(), descs.len())
    };
    expect(
        unsafe { cogvideo_generate_video(null(), &ok, out.descs.as_ptr(), 9) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "pipeline is NULL",
    );
    expect(
        unsafe { cogvideo_generate_video(p.0, &ok, null(), 9) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "NULL",
    );
    expect(
        run(&out.descs[..3]),
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "3 output frames",
    );
    type Mutation = (&'static str, fn(&mut cogvideo_frame));
    let mutations: [Mutation; 5] = [
        ("data is NULL", |f| f.data = null_mut()),
        ("not positive", |f| f.width = 0),
        ("not positive", |f| f.height = -4),
        ("stride", |f| f.stride_bytes = 5),
        ("pixel format", |f| f.format = 42),
    ];
    for (needle, mutate) in mutations {
        let mut descs = out.descs.clone();
        mutate(&mut descs[4]);
        expect(run(&descs), COGVIDEO_ERR_INVALID_ARGUMENT, needle);
        assert!(last_error().contains("output frame 4"), "{}", last_error());
    }
    assert_eq!(progress_calls, 0, "no work was done for bad output buffers");

    // Image-to-video on a text-to-video model.
    let image = Frames::rgb8(1);
    let mut a = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_animate_options_init_sized(&mut a, std::mem::size_of_val(&a)) };
    let st = unsafe {
        cogvideo_animate_image(
            p.0,
            &image.descs[0],
            &a,
            out.descs.as_ptr(),
            out.descs.len(),
        )
    };
    expect(
        st,
        COGVIDEO_ERR_UNSUPPORTED_VARIANT,
        "text-to-video checkpoint",
    );
    let st = unsafe { cogvideo_animate_image(p.0, null(), &a, out.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "image is NULL");

    // Inversion inputs.
    let clip = Frames::rgb8(9);
    let io = invert_opts(1);
    let mut inv = null_mut();
    let st = unsafe { cogvideo_invert_video(p.0, clip.descs.as_ptr(), 0, &io, &mut inv) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "frame count 0");
    let st = unsafe { cogvideo_invert_video(p.0, null(), 9, &io, &mut inv) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "NULL");
    let st = unsafe { cogvideo_invert_video(p.0, clip.descs.as_ptr(), 9, &io, null_mut()) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "out is NULL");
    let small = Frames::new(1, 32, 32, COGVIDEO_FORMAT_RGB8);
    let mut mixed = clip.descs.clone();
    mixed[3] = small.descs[0];
    let st = unsafe { cogvideo_invert_video(p.0, mixed.as_ptr(), 9, &io, &mut inv) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "share size");
    let absurd = cogvideo_invert_options {
        width: 10_000,
        height: 10_000,
        ..io
    };
    let (st, _) = invert(&p, &clip, &absurd);
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "10000");
    // Clips are cut to the longest usable length: 4k+1 frames on 1.0
    // models, 8k+5 on 1.5 models (whose latent frames come in pairs).
    let (st, short) = invert(&p, &Frames::rgb8(4), &io);
    expect(st, COGVIDEO_OK, "");
    let mut n = 0;
    expect(
        unsafe { cogvideo_inversion_frame_count(short.0, &mut n) },
        COGVIDEO_OK,
        "",
    );
    assert_eq!(n, 1);
    let (st, _) = invert(&Handle::load("cogvideox1.5-5b"), &Frames::rgb8(4), &io);
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "at least 5 frames");

    // Editing on the wrong handles.
    let (st, inversion) = invert(&p, &clip, &io);
    expect(st, COGVIDEO_OK, "");
    let eo = edit_opts(c"a white wolf");
    let st =
        unsafe { cogvideo_edit_with_prompt(p.0, null(), &eo, out.descs.as_ptr(), out.descs.len()) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "inversion is NULL");
    let other = Handle::load("cogvideox-5b");
    let st = unsafe {
        cogvideo_edit_with_prompt(
            other.0,
            inversion.0,
            &eo,
            out.descs.as_ptr(),
            out.descs.len(),
        )
    };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "different pipeline");
    let st = unsafe {
        cogvideo_edit_with_prompt(p.0, inversion.0, &eo, out.descs.as_ptr(), out.descs.len())
    };
    expect(st, COGVIDEO_OK, "");

    // Inversion needs rotary embeddings: CogVideoX-2b refuses it.
    let sincos = Handle::load("cogvideox-2b");
    let (st, inv2) = invert(&sincos, &clip, &io);
    expect(st, COGVIDEO_ERR_UNSUPPORTED_VARIANT, "rotary");
    assert!(inv2.0.is_null());
}

#[test]
fn cancelled_calls_return_cancelled_and_handles_stay_usable() {
    extern "C" fn cancel_at_second_step(user: *mut c_void, stage: i32, done: i32, _: i32) -> bool {
        let calls = unsafe { &mut *(user as *mut Vec<(i32, i32)>) };
        calls.push((stage, done));
        !((stage == COGVIDEO_STAGE_DENOISE || stage == COGVIDEO_STAGE_INVERT) && done == 1)
    }
    let p = Handle::load("cogvideox-5b");
    let mut calls: Vec<(i32, i32)> = Vec::new();
    let mut out = Frames::rgb8(9);

    let mut o = gen_opts(3, 5);
    o.progress = Some(cancel_at_second_step);
    o.progress_user = &mut calls as *mut _ as *mut c_void;
    expect(generate(&p, &o, &mut out), COGVIDEO_ERR_CANCELLED, "cancel");
    assert!(calls.contains(&(COGVIDEO_STAGE_DENOISE, 1)), "{calls:?}");
    let untouched = out.buffers.clone();
    expect(generate(&p, &gen_opts(3, 5), &mut out), COGVIDEO_OK, "");
    assert_ne!(untouched, out.buffers, "the retried call wrote frames");

    let clip = Frames::rgb8(9);
    let mut io = invert_opts(3);
    io.progress = Some(cancel_at_second_step);
    io.progress_user = &mut calls as *mut _ as *mut c_void;
    let (st, inv) = invert(&p, &clip, &io);
    expect(st, COGVIDEO_ERR_CANCELLED, "cancel");
    assert!(inv.0.is_null());
    let (st, inv) = invert(&p, &clip, &invert_opts(3));
    expect(st, COGVIDEO_OK, "");

    let mut eo = edit_opts(c"snow");
    eo.progress = Some(cancel_at_second_step);
    eo.progress_user = &mut calls as *mut _ as *mut c_void;
    let edit = |eo: &cogvideo_edit_options, out: &mut Frames| unsafe {
        cogvideo_edit_with_prompt(p.0, inv.0, eo, out.descs.as_ptr(), out.descs.len())
    };
    expect(edit(&eo, &mut out), COGVIDEO_ERR_CANCELLED, "cancel");
    expect(edit(&edit_opts(c"snow"), &mut out), COGVIDEO_OK, "");
}

#[test]
fn output_formats_and_bottom_up_strides_agree() {
    let p = Handle::load("cogvideox-5b");
    let o = gen_opts(2, 11);
    let mut rgb8 = Frames::rgb8(9);
    expect(generate(&p, &o, &mut rgb8), COGVIDEO_OK, "");

    // Float RGBA, bottom-up: data points at the top row, which is the last
    // row in memory, and the stride is negative.
    let mut f32_frames = Frames::new(9, W, H, COGVIDEO_FORMAT_RGBA32F);
    for d in &mut f32_frames.descs {
        let row = (W * 16) as i64;
        d.data = unsafe { (d.data as *mut u8).add((H - 1) * row as usize) } as *mut c_void;
        d.stride_bytes = -row;
    }
    expect(generate(&p, &o, &mut f32_frames), COGVIDEO_OK, "");
    for (t, (a, b)) in rgb8.buffers.iter().zip(&f32_frames.buffers).enumerate() {
        for y in 0..H {
            for x in 0..W {
                let memory_row = H - 1 - y;
                for c in 0..3 {
                    let byte = a[(y * W + x) * 3 + c];
                    let at = (memory_row * W + x) * 16 + c * 4;
                    let v = f32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
                    assert!(
                        (v * 255.0 - byte as f32).abs() <= 0.5 + 1e-3,
                        "frame {t} ({x},{y}) channel {c}: {v} vs {byte}"
                    );
                }
                let alpha = (memory_row * W + x) * 16 + 12;
                assert_eq!(
                    f32::from_ne_bytes(b[alpha..alpha + 4].try_into().unwrap()),
                    1.0
                );
            }
        }
    }
}

#[test]
fn concurrent_calls_serialise_and_match_sequential_results() {
    let p = Handle::load("cogvideox-5b");
    let seeds = [1_u64, 2, 3, 4];
    let sequential: Vec<Vec<Vec<u8>>> = seeds
        .iter()
        .map(|&s| {
            let mut out = Frames::rgb8(9);
            expect(generate(&p, &gen_opts(2, s), &mut out), COGVIDEO_OK, "");
            out.buffers
        })
        .collect();
    assert_ne!(sequential[0], sequential[1], "seeds differ");

    let clip = Frames::rgb8(9);
    let (st, inv) = invert(&p, &clip, &invert_opts(2));
    expect(st, COGVIDEO_OK, "");
    let edited = Frames::rgb8(9);
    let eo = edit_opts(c"a white wolf");
    let st = unsafe {
        cogvideo_edit_with_prompt(p.0, inv.0, &eo, edited.descs.as_ptr(), edited.descs.len())
    };
    expect(st, COGVIDEO_OK, "");

    std::thread::scope(|scope| {
        let generators: Vec<_> = seeds
            .iter()
            .map(|&s| {
                let p = &p;
                scope.spawn(move || {
                    let mut out = Frames::rgb8(9);
                    expect(generate(p, &gen_opts(2, s), &mut out), COGVIDEO_OK, "");
                    out.buffers
                })
            })
            .collect();
        let editors: Vec<_> = (0..2)
            .map(|_| {
                let (p, inv) = (&p, &inv);
                scope.spawn(move || {
                    let out = Frames::rgb8(9);
                    let eo = edit_opts(c"a white wolf");
                    let st = unsafe {
                        cogvideo_edit_with_prompt(p.0, inv.0, &eo, out.descs.as_ptr(), 9)
                    };
                    expect(st, COGVIDEO_OK, "");
                    out.buffers
                })
            })
            .collect();
        // Meanwhile other threads fail; each thread keeps its own message.
        let failing: Vec<_> = (0..4)
            .map(|i| {
                let p = &p;
                scope.spawn(move || {
                    for _ in 0..20 {
                        let o = cogvideo_generate_options {
                            num_frames: 4 * i + 2,
                            ..gen_opts(1, 0)
                        };
                        let mut out = Frames::rgb8(1);
                        assert_eq!(generate(p, &o, &mut out), COGVIDEO_ERR_INVALID_ARGUMENT);
                        let msg = last_error();
                        assert!(msg.contains(&format!("got {}", 4 * i + 2)), "{msg}");
                    }
                })
            })
            .collect();
        for (h, want) in generators.into_iter().zip(&sequential) {
            assert!(h.join().unwrap() == *want, "concurrent result differs");
        }
        for h in editors {
            assert!(
                h.join().unwrap() == edited.buffers,
                "concurrent edit differs"
            );
        }
        for h in failing {
            h.join().unwrap();
        }
    });
}

fn latent_shape(p: &Handle) -> [i64; 5] {
    let mut shape = [0i64; 5];
    let st = unsafe { cogvideo_latent_shape(p.0, 0, 0, 0, shape.as_mut_ptr()) };
    expect(st, COGVIDEO_OK, "");
    shape
}

#[test]
fn abi_version_is_1_5() {
    assert_eq!(cogvideo_abi_version(), COGVIDEO_ABI_VERSION);
    assert_eq!(cogvideo_abi_version() >> 16, 1);
    assert_eq!(cogvideo_abi_version() & 0xffff, 5);
}

fn lora_path(file: &str) -> CString {
    let p = common::data_dir().join("lora").join(file);
    CString::new(p.to_str().unwrap()).unwrap()
}

fn lora_state(p: &Handle) -> (u64, usize, i32) {
    let (mut hash, mut active, mut fused) = (0u64, 0usize, 0i32);
    let st = unsafe { cogvideo_pipeline_lora_state(p.0, &mut hash, &mut active, &mut fused) };
    expect(st, COGVIDEO_OK, "");
    (hash, active, fused)
}

/// LoRA through C (1.4): load, mix, fuse, remove, the setting's hash, and
/// bad arguments and hostile files as statuses that change nothing.
/// tests/lora.rs checks the numbers against diffusers.
#[test]
fn lora_through_the_c_api() {
    let p = Handle::load("cogvideox-5b");
    let o = gen_opts(2, 7);
    let mut base = Frames::rgb8(9);
    expect(generate(&p, &o, &mut base), COGVIDEO_OK, "");
    assert_eq!(lora_state(&p), (0, 0, 0));

    let (a, b) = (c"a", c"b");
    let st = unsafe {
        cogvideo_pipeline_load_lora(p.0, lora_path("a_rank2.safetensors").as_ptr(), a.as_ptr())
    };
    expect(st, COGVIDEO_OK, "");
    let (hash_a, active, _) = lora_state(&p);
    assert_eq!(active, 1, "the loaded adapter is active");
    assert_ne!(hash_a, 0);
    let st = unsafe {
        cogvideo_pipeline_load_lora(p.0, lora_path("b_rank4.safetensors").as_ptr(), b.as_ptr())
    };
    expect(st, COGVIDEO_OK, "");
    let names = [a.as_ptr(), b.as_ptr()];
    let weights = [0.7, 0.4];
    let st = unsafe { cogvideo_pipeline_set_adapters(p.0, names.as_ptr(), weights.as_ptr(), 2) };
    expect(st, COGVIDEO_OK, "");
    let (hash_mix, active, fused) = lora_state(&p);
    assert_eq!((active, fused), (2, 0));
    assert_ne!(hash_mix, hash_a);
    let mut mixed = Frames::rgb8(9);
    expect(generate(&p, &o, &mut mixed), COGVIDEO_OK, "");
    assert_ne!(
        mixed.buffers, base.buffers,
        "the adapters change the frames"
    );

    expect(
        unsafe { cogvideo_pipeline_fuse_lora(p.0, 1) },
        COGVIDEO_OK,
        "",
    );
    let (hash_fused, _, fused) = lora_state(&p);
    assert_eq!(fused, 1);
    assert_ne!(hash_fused, hash_mix);
    let mut fused_frames = Frames::rgb8(9);
    expect(generate(&p, &o, &mut fused_frames), COGVIDEO_OK, "");

    // the call's report names the setting it ran with (1.5): the weights
    // and as many whole names as fit the caller's buffers
    let (mut got_weights, mut got_names) = ([0f64; 3], [0xaau8; 8]);
    for (names_size, want_names, capacity) in [(8, &b"a\0b\0"[..], 3), (3, &b"a\0"[..], 1)] {
        got_weights.fill(-1.0);
        got_names.fill(0xaa);
        let mut report_box: Box<cogvideo_cache_report> = Box::new(unsafe { std::mem::zeroed() });
        let report: *mut cogvideo_cache_report = &mut *report_box;
        let size = std::mem::size_of::<cogvideo_cache_report>();
        expect(
            unsafe { cogvideo_cache_report_init_sized(report, size) },
            COGVIDEO_OK,
            "",
        );
        unsafe {
            (*report).lora_weights = got_weights.as_mut_ptr();
            (*report).lora_capacity = capacity;
            (*report).lora_names = got_names.as_mut_ptr() as *mut c_char;
            (*report).lora_names_size = names_size;
        }
        let mut ro = o;
        ro.cache_report = report;
        let mut frames = Frames::rgb8(9);
        expect(generate(&p, &ro, &mut frames), COGVIDEO_OK, "");
        assert_eq!(frames.buffers, fused_frames.buffers);
        let r = unsafe { *report };
        assert_eq!(
            (r.lora_hash, r.lora_fused, r.lora_count),
            (hash_fused, 1, 2)
        );
        assert_eq!(r.lora_names_needed, 4);
        assert_eq!(&got_names[..want_names.len()], want_names);
        assert!(got_names[want_names.len()..].iter().all(|&b| b == 0xaa));
        assert_eq!(&got_weights[..capacity], &[0.7, 0.4, -1.0][..capacity]);
        assert!(got_weights[capacity..].iter().all(|&w| w == -1.0));
        assert_eq!(r.block_evaluations, 0, "no cache");
    }
    // a report in the 1.4 layout gets the 1.4 fields only
    let mut old: [u64; 12] = [0x5555_5555_5555_5555; 12];
    let old_report = old.as_mut_ptr() as *mut cogvideo_cache_report;
    let old_size = std::mem::offset_of!(cogvideo_cache_report, lora_hash);
    expect(
        unsafe { cogvideo_cache_report_init_sized(old_report, old_size) },
        COGVIDEO_OK,
        "",
    );
    let mut ro = o;
    ro.cache_report = old_report;
    let mut frames = Frames::rgb8(9);
    expect(generate(&p, &ro, &mut frames), COGVIDEO_OK, "");
    assert!(
        old[old_size / 8..]
            .iter()
            .all(|&w| w == 0x5555_5555_5555_5555)
    );
    expect(
        unsafe { cogvideo_pipeline_fuse_lora(p.0, 0) },
        COGVIDEO_OK,
        "",
    );
    assert_eq!(lora_state(&p).0, hash_mix, "the hash names the setting");

    // bad arguments: a status and a message, and the setting stays
    let unknown = [c"nope".as_ptr()];
    let st = unsafe { cogvideo_pipeline_set_adapters(p.0, unknown.as_ptr(), weights.as_ptr(), 1) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "nope");
    let st = unsafe { cogvideo_pipeline_set_adapters(p.0, null(), null(), 1) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "NULL");
    let with_null = [a.as_ptr(), null()];
    let st =
        unsafe { cogvideo_pipeline_set_adapters(p.0, with_null.as_ptr(), weights.as_ptr(), 2) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "names[1]");
    let nan = [f64::NAN];
    let st = unsafe { cogvideo_pipeline_set_adapters(p.0, names.as_ptr(), nan.as_ptr(), 1) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "finite");
    let st = unsafe {
        cogvideo_pipeline_load_lora(p.0, lora_path("a_rank2.safetensors").as_ptr(), a.as_ptr())
    };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "already loaded");
    let st = unsafe { cogvideo_pipeline_load_lora(p.0, null(), c"x".as_ptr()) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "path");
    let st = unsafe {
        cogvideo_pipeline_load_lora(
            null(),
            lora_path("a_rank2.safetensors").as_ptr(),
            c"x".as_ptr(),
        )
    };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "pipeline");
    let st = unsafe { cogvideo_pipeline_remove_lora(p.0, c"nope".as_ptr()) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "nope");
    let st = unsafe { cogvideo_pipeline_lora_state(p.0, null_mut(), null_mut(), null_mut()) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "hash");
    // hostile files: a truncated copy and a file that is not safetensors
    let dir = std::env::temp_dir().join(format!("cogvideo-ffi-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(common::data_dir().join("lora/b_rank4.safetensors")).unwrap();
    for (file, bytes, needle) in [
        (
            "truncated.safetensors",
            good[..good.len() - 100].to_vec(),
            "lora_B.weight",
        ),
        (
            "text.safetensors",
            b"not a safetensors file at all".to_vec(),
            "safetensors",
        ),
    ] {
        let f = dir.join(file);
        std::fs::write(&f, bytes).unwrap();
        let f = CString::new(f.to_str().unwrap()).unwrap();
        let st = unsafe { cogvideo_pipeline_load_lora(p.0, f.as_ptr(), c"hostile".as_ptr()) };
        expect(st, COGVIDEO_ERR_BAD_CHECKPOINT, needle);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        lora_state(&p),
        (hash_mix, 2, 0),
        "failed calls change nothing"
    );

    // removing both adapters gives the base frames back, bit for bit
    expect(
        unsafe { cogvideo_pipeline_remove_lora(p.0, a.as_ptr()) },
        COGVIDEO_OK,
        "",
    );
    expect(
        unsafe { cogvideo_pipeline_remove_lora(p.0, b.as_ptr()) },
        COGVIDEO_OK,
        "",
    );
    assert_eq!(lora_state(&p), (0, 0, 0));
    let mut after = Frames::rgb8(9);
    expect(generate(&p, &o, &mut after), COGVIDEO_OK, "");
    assert_eq!(after.buffers, base.buffers);
    expect(
        unsafe { cogvideo_pipeline_set_adapters(p.0, null(), null(), 0) },
        COGVIDEO_OK,
        "",
    );
}

/// The compatibility rule of the header, as a caller built against a later
/// header meets it: a larger struct is read as far as this library knows it
/// when the rest is zero, and refused when a field it does not know is set;
/// a size that no version of the struct has is refused without reading the
/// struct, and so are NULL structs in the sized inits. tests/abi.rs covers
/// callers built against earlier headers.
#[test]
fn structs_from_newer_headers_and_bad_sizes() {
    #[repr(C)]
    struct Newer {
        o: cogvideo_generate_options,
        added: u64,
    }
    let p = Handle::load("cogvideox-5b");
    let mut newer = Newer {
        o: gen_opts(1, 3),
        added: 0xffff,
    };
    let size = std::mem::size_of::<Newer>();
    let st = unsafe { cogvideo_generate_options_init_sized(&mut newer.o, size) };
    expect(st, COGVIDEO_OK, "");
    assert_eq!(newer.o.struct_size as usize, size);
    assert_eq!(newer.added, 0, "init zeroes the fields it does not know");
    newer.o.prompt = c"a red fox".as_ptr();
    newer.o.steps = 1;
    newer.o.seed = 3;
    let want = Frames::rgb8(9);
    let got = Frames::rgb8(9);
    let ours = gen_opts(1, 3);
    expect(
        unsafe { cogvideo_generate_video(p.0, &ours, want.descs.as_ptr(), 9) },
        COGVIDEO_OK,
        "",
    );
    expect(
        unsafe { cogvideo_generate_video(p.0, &newer.o, got.descs.as_ptr(), 9) },
        COGVIDEO_OK,
        "",
    );
    assert!(got.buffers == want.buffers);
    newer.added = 1;
    expect(
        unsafe { cogvideo_generate_video(p.0, &newer.o, got.descs.as_ptr(), 9) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "newer header",
    );

    // Garbage where struct_size belongs (an uninitialised struct), a size
    // between two versions, NULL.
    let mut o = gen_opts(1, 3);
    for bad in [0x5a5a_5a5a_u32, 4096 * 2, ours.struct_size - 8] {
        o.struct_size = bad;
        expect(
            unsafe { cogvideo_generate_video(p.0, &o, got.descs.as_ptr(), 9) },
            COGVIDEO_ERR_INVALID_ARGUMENT,
            "is not the size of any version",
        );
        expect(
            unsafe { cogvideo_generate_options_init_sized(&mut o, bad as usize) },
            COGVIDEO_ERR_INVALID_ARGUMENT,
            "cogvideo_generate_options_init",
        );
    }
    expect(
        unsafe { cogvideo_load_options_init_sized(null_mut(), 32) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "NULL",
    );
}

#[test]
fn latents_come_out_before_decoding_and_decode_to_the_same_frames() {
    let p = Handle::load("cogvideox-5b");
    let shape = latent_shape(&p);
    assert_eq!(shape, [1, 3, 16, 8, 12]);
    let n = shape.iter().product::<i64>() as usize;
    let mut latents = vec![0f32; n];
    let frames = Frames::rgb8(9);
    let mut o = gen_opts(2, 0);
    o.latents_out = latents.as_mut_ptr();
    o.latents_out_len = n;
    let st = unsafe { cogvideo_generate_video(p.0, &o, frames.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_OK, "");
    assert!(latents.iter().any(|&v| v != 0.0));

    // Latents only: no frames, same latents.
    let mut only = vec![0f32; n];
    o.latents_out = only.as_mut_ptr();
    let st = unsafe { cogvideo_generate_video(p.0, &o, null(), 0) };
    expect(st, COGVIDEO_OK, "");
    assert_eq!(only, latents);

    // Decoding them again, tiled or not, gives the call's frames.
    let mut count = 0;
    expect(
        unsafe { cogvideo_decoded_frame_count(3, &mut count) },
        COGVIDEO_OK,
        "",
    );
    assert_eq!(count, 9);
    let again = Frames::rgb8(9);
    let st = unsafe {
        cogvideo_decode_latents(
            p.0,
            latents.as_ptr(),
            shape.as_ptr(),
            null(),
            again.descs.as_ptr(),
            9,
        )
    };
    expect(st, COGVIDEO_OK, "");
    assert!(
        again.buffers == frames.buffers,
        "decode_latents reproduces the frames"
    );
    let mut d = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_decode_options_init_sized(&mut d, std::mem::size_of_val(&d)) };
    d.tiling = COGVIDEO_TILING_OFF;
    let st = unsafe {
        cogvideo_decode_latents(
            p.0,
            latents.as_ptr(),
            shape.as_ptr(),
            &d,
            again.descs.as_ptr(),
            9,
        )
    };
    expect(st, COGVIDEO_OK, "");
    assert!(again.buffers == frames.buffers);

    // Wrong buffers are refused before any work.
    o.latents_out_len = n - 1;
    let st = unsafe { cogvideo_generate_video(p.0, &o, null(), 0) };
    expect(
        st,
        COGVIDEO_ERR_INVALID_ARGUMENT,
        &format!("take {n} values"),
    );
    o.latents_out = null_mut();
    o.latents_out_len = 0;
    let st = unsafe { cogvideo_generate_video(p.0, &o, null(), 0) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "nothing to return");
    let bad_shape = [1i64, 3, 16, -8, 12];
    let st = unsafe {
        cogvideo_decode_latents(
            p.0,
            latents.as_ptr(),
            bad_shape.as_ptr(),
            null(),
            again.descs.as_ptr(),
            9,
        )
    };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "latent shape");
    // A shape the model cannot decode is refused before a value is read.
    for bad_shape in [
        [1i64, 3, 7, 8, 12],
        [1, 3, 16, 8, 1 << 19],
        [1, 1 << 19, 16, 8, 12],
    ] {
        let st = unsafe {
            cogvideo_decode_latents(
                p.0,
                latents.as_ptr(),
                bad_shape.as_ptr(),
                null(),
                again.descs.as_ptr(),
                9,
            )
        };
        expect(
            st,
            COGVIDEO_ERR_INVALID_ARGUMENT,
            "latents must be [1, F, 16, h, w]",
        );
    }
    d.tiling = 9;
    let st = unsafe {
        cogvideo_decode_latents(
            p.0,
            latents.as_ptr(),
            shape.as_ptr(),
            &d,
            again.descs.as_ptr(),
            9,
        )
    };
    expect(
        st,
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "COGVIDEO_TILING_AS_LOADED",
    );
}

#[test]
fn noise_plans_describe_the_draws_and_wrong_lengths_are_refused() {
    let p = Handle::load("cogvideox-5b");
    let o = gen_opts(4, 0);
    let mut count = 0usize;
    let st = unsafe { cogvideo_generate_noise_plan(p.0, &o, null_mut(), 0, &mut count) };
    expect(st, COGVIDEO_OK, "");
    assert_eq!(count, 4, "initial latents and 3 DPM re-noising steps");
    let mut draws = vec![unsafe { std::mem::zeroed::<cogvideo_noise_draw>() }; count];
    let st =
        unsafe { cogvideo_generate_noise_plan(p.0, &o, draws.as_mut_ptr(), count, &mut count) };
    expect(st, COGVIDEO_OK, "");
    let purpose = |d: &cogvideo_noise_draw| {
        unsafe { CStr::from_ptr(d.purpose.as_ptr()) }
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(purpose(&draws[0]), "initial latents");
    assert_eq!(purpose(&draws[1]), "DPM step 0");
    assert_eq!(draws[0].ndim, 5);
    assert_eq!(draws[0].shape, [1, 3, 16, 8, 12]);
    assert_eq!(draws[3].offset, 3 * 4608);
    let total = (draws[3].offset + draws[3].count) as usize;

    // The exact length, or a prefix of whole draws, is accepted; the rest is an error naming the total.
    let noise = vec![0.25f32; total + 1];
    let out = Frames::rgb8(9);
    for (len, ok) in [
        (total, true),
        (4608, true),
        (total + 1, false),
        (4608 + 1, false),
    ] {
        let mut g = o;
        g.steps = 4;
        g.noise = noise.as_ptr();
        g.noise_len = len;
        let st = unsafe { cogvideo_generate_video(p.0, &g, out.descs.as_ptr(), 9) };
        if ok {
            expect(st, COGVIDEO_OK, "");
        } else {
            expect(
                st,
                COGVIDEO_ERR_INVALID_ARGUMENT,
                &format!("{total} values"),
            );
        }
    }
    // 4 GiB of noise for a call that takes 4 draws: refused without reading a value.
    let mut g = o;
    g.noise = noise.as_ptr();
    g.noise_len = 1 << 30;
    let st = unsafe { cogvideo_generate_video(p.0, &g, out.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "noise_len 1073741824");

    // Image-to-video and inversion plans start with the posterior sample.
    let i2v = Handle::load("cogvideox-5b-i2v");
    let mut a = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_animate_options_init_sized(&mut a, std::mem::size_of_val(&a)) };
    a.num_frames = 9;
    a.steps = 2;
    let st = unsafe { cogvideo_animate_noise_plan(i2v.0, &a, draws.as_mut_ptr(), 4, &mut count) };
    expect(st, COGVIDEO_OK, "");
    assert_eq!(purpose(&draws[0]), "VAE posterior sample");
    assert_eq!(draws[0].shape, [1, 16, 1, 8, 12]);
    let mut io = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_invert_options_init_sized(&mut io, std::mem::size_of_val(&io)) };
    let st = unsafe { cogvideo_invert_noise_plan(p.0, 11, &io, draws.as_mut_ptr(), 4, &mut count) };
    expect(st, COGVIDEO_OK, "");
    assert_eq!((count, draws[0].shape), (1, [1, 16, 3, 8, 12]));
    io.posterior_mean = true;
    let st = unsafe { cogvideo_invert_noise_plan(p.0, 11, &io, draws.as_mut_ptr(), 4, &mut count) };
    expect(st, COGVIDEO_OK, "");
    assert_eq!(count, 0, "the posterior mean draws nothing");
}

#[test]
fn frame_counts_are_checked_in_one_range() {
    let p = Handle::load("cogvideox-5b");
    let mut n = 0;
    for bad in [2147483645, 1025, 10, -3] {
        let st = unsafe { cogvideo_output_frame_count(p.0, bad, &mut n) };
        assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT, "{bad}: {}", last_error());
    }
    let st = unsafe { cogvideo_output_frame_count(p.0, 2147483645, &mut n) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "between 1 and 1021");
    let mut o = gen_opts(1, 0);
    o.num_frames = 2147483645;
    let st = unsafe { cogvideo_generate_video(p.0, &o, null(), 0) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "between 1 and 1021");
    o = gen_opts(1001, 0);
    let out = Frames::rgb8(9);
    let st = unsafe { cogvideo_generate_video(p.0, &o, out.descs.as_ptr(), 9) };
    expect(
        st,
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "steps must be between 1 and 1000, got 1001",
    );
}

#[test]
fn sizes_that_cannot_fit_are_refused_before_allocating() {
    let p = Handle::load("cogvideox-5b");
    let mut o = gen_opts(1, 0);
    o.width = 4096;
    o.height = 4096;
    o.num_frames = 1021;
    let mut shape = [0i64; 5];
    let st = unsafe { cogvideo_latent_shape(p.0, 4096, 4096, 1021, shape.as_mut_ptr()) };
    expect(st, COGVIDEO_OK, "");
    let n = shape.iter().product::<i64>() as usize;
    let st = unsafe { cogvideo_generate_video(p.0, &o, null(), 0) };
    assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT, "{}", last_error());
    let mut fake = [0f32; 1];
    o.latents_out = fake.as_mut_ptr();
    o.latents_out_len = n;
    let st = unsafe { cogvideo_generate_video(p.0, &o, null(), 0) };
    expect(st, COGVIDEO_ERR_OUT_OF_MEMORY, "available");

    // Small input frames: the working size is what counts.
    let clip = Frames::rgb8(1021);
    let mut io = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_invert_options_init_sized(&mut io, std::mem::size_of_val(&io)) };
    io.width = 4096;
    io.height = 4096;
    io.steps = 1;
    let mut inv = null_mut();
    let st = unsafe { cogvideo_invert_video(p.0, clip.descs.as_ptr(), 1021, &io, &mut inv) };
    expect(st, COGVIDEO_ERR_OUT_OF_MEMORY, "4096x4096");
    assert!(inv.is_null());
}

extern "C" fn query_own_pipeline(user: *mut c_void, _stage: i32, _done: i32, _total: i32) -> bool {
    let p = user as *const cogvideo_pipeline;
    let mut fps = 0;
    let mut n = 0;
    let mut memory = unsafe { std::mem::zeroed::<cogvideo_memory_info>() };
    unsafe { cogvideo_memory_info_init_sized(&mut memory, std::mem::size_of_val(&memory)) };
    let ok = unsafe { cogvideo_pipeline_fps(p, &mut fps) } == COGVIDEO_OK
        && unsafe { cogvideo_output_frame_count(p, 9, &mut n) } == COGVIDEO_OK
        && unsafe { cogvideo_pipeline_memory_info(p, &mut memory) } == COGVIDEO_OK;
    // The running call's estimate is there for a plugin to show.
    ok && fps == 8 && n == 9 && memory.estimated_peak_bytes > memory.weight_bytes
}

#[test]
fn queries_never_wait_for_a_running_call() {
    let p = Handle::load("cogvideox-5b");
    // From the running call's own progress callback.
    let mut o = gen_opts(2, 0);
    o.progress = Some(query_own_pipeline);
    o.progress_user = p.0 as *mut c_void;
    let out = Frames::rgb8(9);
    let st = unsafe { cogvideo_generate_video(p.0, &o, out.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_OK, "");

    // From another thread while a call holds the pipeline.
    struct Chan {
        started: mpsc::Sender<()>,
        answered: mpsc::Receiver<()>,
        held: std::sync::atomic::AtomicBool,
    }
    extern "C" fn hold(user: *mut c_void, stage: i32, done: i32, _t: i32) -> bool {
        let chan = unsafe { &*(user as *const Chan) };
        // Only the first report: the encoder polls again with the same counts.
        if stage == COGVIDEO_STAGE_ENCODE_TEXT
            && done == 0
            && !chan.held.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            let _ = chan.started.send(());
            return chan.answered.recv_timeout(Duration::from_secs(30)).is_ok();
        }
        true
    }
    let (started_tx, started_rx) = mpsc::channel();
    let (answered_tx, answered_rx) = mpsc::channel();
    let chan = Chan {
        started: started_tx,
        answered: answered_rx,
        held: std::sync::atomic::AtomicBool::new(false),
    };
    let handle = &p;
    std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let mut o = gen_opts(1, 0);
            o.progress = Some(hold);
            o.progress_user = &chan as *const Chan as *mut c_void;
            let out = Frames::rgb8(9);
            unsafe { cogvideo_generate_video(handle.0, &o, out.descs.as_ptr(), 9) }
        });
        started_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let mut fps = 0;
        let mut shape = [0i64; 5];
        assert_eq!(unsafe { cogvideo_pipeline_fps(p.0, &mut fps) }, COGVIDEO_OK);
        assert_eq!(
            unsafe { cogvideo_latent_shape(p.0, 0, 0, 0, shape.as_mut_ptr()) },
            COGVIDEO_OK
        );
        answered_tx.send(()).unwrap();
        assert_eq!(
            worker.join().unwrap(),
            COGVIDEO_OK,
            "the held call was not cancelled by a timeout"
        );
    });
}

#[test]
fn edit_strength_and_inversion_decode_through_the_c_api() {
    let p = Handle::load("cogvideox-5b");
    let clip = Frames::rgb8(9);
    let mut io = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_invert_options_init_sized(&mut io, std::mem::size_of_val(&io)) };
    io.steps = 4;
    io.posterior_mean = true;
    let mut inv = null_mut();
    let st = unsafe { cogvideo_invert_video(p.0, clip.descs.as_ptr(), 9, &io, &mut inv) };
    expect(st, COGVIDEO_OK, "");
    let source = Frames::rgb8(9);
    let st = unsafe { cogvideo_inversion_decode(p.0, inv, null(), source.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_OK, "");

    let mut eo = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_edit_options_init_sized(&mut eo, std::mem::size_of_val(&eo)) };
    eo.prompt = c"snow".as_ptr();
    eo.strength = 0.1;
    let out = Frames::rgb8(9);
    let st = unsafe { cogvideo_edit_with_prompt(p.0, inv, &eo, out.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_OK, "");
    assert!(
        out.buffers == source.buffers,
        "strength near 0 gives the inversion's decode"
    );

    // A caller built against the 1.0 header (no strength field) gets strength 1.
    let mut old = eo;
    old.struct_size = std::mem::offset_of!(cogvideo_edit_options, strength) as u32;
    old.strength = 0.1;
    let full = Frames::rgb8(9);
    let st = unsafe { cogvideo_edit_with_prompt(p.0, inv, &old, full.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_OK, "");
    let mut one = eo;
    one.strength = 1.0;
    let want = Frames::rgb8(9);
    let st = unsafe { cogvideo_edit_with_prompt(p.0, inv, &one, want.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_OK, "");
    assert!(full.buffers == want.buffers);
    old.struct_size -= 8;
    let st = unsafe { cogvideo_edit_with_prompt(p.0, inv, &old, full.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "struct_size");
    eo.strength = 1.5;
    let st = unsafe { cogvideo_edit_with_prompt(p.0, inv, &eo, out.descs.as_ptr(), 9) };
    expect(
        st,
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "strength must be in (0, 1], got 1.5",
    );
    unsafe { cogvideo_inversion_free(inv) };
}

#[test]
fn video_to_video_through_the_c_api() {
    let p = Handle::load("cogvideox-5b");
    let clip = Frames::rgb8(11);
    let mut o = unsafe { std::mem::zeroed() };
    unsafe { cogvideo_video_to_video_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
    assert_eq!(o.strength, 0.8);
    o.prompt = c"watercolor".as_ptr();
    o.steps = 4;
    let out = Frames::rgb8(9);
    let st =
        unsafe { cogvideo_video_to_video(p.0, clip.descs.as_ptr(), 11, &o, out.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_OK, "");
    let again = Frames::rgb8(9);
    let st = unsafe {
        cogvideo_video_to_video(p.0, clip.descs.as_ptr(), 9, &o, again.descs.as_ptr(), 9)
    };
    expect(st, COGVIDEO_OK, "");
    assert!(
        out.buffers == again.buffers,
        "the clip is cut to 9 frames, same seed"
    );
    o.strength = 0.1;
    let st =
        unsafe { cogvideo_video_to_video(p.0, clip.descs.as_ptr(), 9, &o, out.descs.as_ptr(), 9) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "runs no step");
    let i2v = Handle::load("cogvideox-5b-i2v");
    o.strength = 0.8;
    let st = unsafe {
        cogvideo_video_to_video(i2v.0, clip.descs.as_ptr(), 9, &o, out.descs.as_ptr(), 9)
    };
    expect(st, COGVIDEO_ERR_UNSUPPORTED_VARIANT, "text-to-video");
}

#[test]
fn messages_blame_the_right_party_once() {
    let p = Handle::load("cogvideox-5b-i2v");
    let clip = Frames::rgb8(9);
    let mut inv = null_mut();
    let st = unsafe { cogvideo_invert_video(p.0, clip.descs.as_ptr(), 9, null(), &mut inv) };
    expect(st, COGVIDEO_ERR_UNSUPPORTED_VARIANT, "cannot edit clips");
    assert!(
        !last_error().contains("needs an input image"),
        "{}",
        last_error()
    );

    let p = Handle::load("cogvideox-5b");
    let mut bad = Frames::rgb8(9);
    bad.descs[3].stride_bytes = 5;
    let st = unsafe { cogvideo_invert_video(p.0, bad.descs.as_ptr(), 9, null(), &mut inv) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "input frame 3");
    assert_eq!(
        last_error().matches("invalid argument").count(),
        1,
        "{}",
        last_error()
    );
    bad.descs[3].stride_bytes = (W * 3) as i64;
    bad.descs[3].format = 9;
    let st = unsafe { cogvideo_invert_video(p.0, bad.descs.as_ptr(), 9, null(), &mut inv) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "COGVIDEO_FORMAT_RGB8");
}

extern "C" fn cancel_in_decode(user: *mut c_void, stage: i32, done: i32, total: i32) -> bool {
    let seen = unsafe { &mut *(user as *mut Vec<(i32, i32, i32)>) };
    seen.push((stage, done, total));
    !(stage == COGVIDEO_STAGE_DECODE_VIDEO && done == 1)
}

#[test]
fn a_cancelled_decode_keeps_the_latents() {
    let p = Handle::load("cogvideox-5b");
    // 17 frames: 5 latent frames, decoded in more than one frame batch.
    let mut shape = [0i64; 5];
    let st = unsafe { cogvideo_latent_shape(p.0, 0, 0, 17, shape.as_mut_ptr()) };
    expect(st, COGVIDEO_OK, "");
    let n = shape.iter().product::<i64>() as usize;
    let mut latents = vec![0f32; n];
    let mut seen: Vec<(i32, i32, i32)> = Vec::new();
    let mut o = gen_opts(2, 0);
    o.num_frames = 17;
    o.latents_out = latents.as_mut_ptr();
    o.latents_out_len = n;
    o.progress = Some(cancel_in_decode);
    o.progress_user = &mut seen as *mut _ as *mut c_void;
    let out = Frames::rgb8(17);
    let st = unsafe { cogvideo_generate_video(p.0, &o, out.descs.as_ptr(), 17) };
    expect(st, COGVIDEO_ERR_CANCELLED, "cancel");
    let decode: Vec<_> = seen
        .iter()
        .filter(|s| s.0 == COGVIDEO_STAGE_DECODE_VIDEO)
        .collect();
    // 3 latent frames decode in 2 batches; the call stops after the first.
    assert_eq!(
        decode,
        [
            &(COGVIDEO_STAGE_DECODE_VIDEO, 0, 2),
            &(COGVIDEO_STAGE_DECODE_VIDEO, 1, 2)
        ]
    );
    assert!(
        latents.iter().any(|&v| v != 0.0),
        "the latents were delivered"
    );

    let want = Frames::rgb8(17);
    o.latents_out = null_mut();
    o.latents_out_len = 0;
    o.progress = None;
    let st = unsafe { cogvideo_generate_video(p.0, &o, want.descs.as_ptr(), 17) };
    expect(st, COGVIDEO_OK, "");
    let again = Frames::rgb8(17);
    let st = unsafe {
        cogvideo_decode_latents(
            p.0,
            latents.as_ptr(),
            shape.as_ptr(),
            null(),
            again.descs.as_ptr(),
            17,
        )
    };
    expect(st, COGVIDEO_OK, "");
    assert!(
        again.buffers == want.buffers,
        "decoding the kept latents finishes the call's work"
    );
}

#[test]
fn residency_is_chosen_at_load_and_reported() {
    let path = path("cogvideox-5b");
    let mut o = unsafe { std::mem::zeroed::<cogvideo_load_options>() };
    unsafe { cogvideo_load_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
    assert_eq!(o.residency, COGVIDEO_RESIDENCY_AUTO);
    o.residency = COGVIDEO_RESIDENCY_PER_COMPONENT;
    let mut p = null_mut();
    expect(
        unsafe { cogvideo_load_pipeline(path.as_ptr(), &o, &mut p) },
        COGVIDEO_OK,
        "",
    );
    let per_component = Handle(p);
    let info = |h: &Handle| {
        let mut info = unsafe { std::mem::zeroed::<cogvideo_memory_info>() };
        unsafe { cogvideo_memory_info_init_sized(&mut info, std::mem::size_of_val(&info)) };
        expect(
            unsafe { cogvideo_pipeline_memory_info(h.0, &mut info) },
            COGVIDEO_OK,
            "",
        );
        info
    };
    let i = info(&per_component);
    assert_eq!(i.residency, COGVIDEO_RESIDENCY_PER_COMPONENT);
    assert!(
        i.weight_bytes > i.kept_weight_bytes && i.kept_weight_bytes > 0,
        "{i:?}"
    );
    assert!(i.peak_rss_bytes >= i.current_rss_bytes && i.current_rss_bytes > 0);
    assert_eq!(i.estimated_peak_bytes, 0, "no call yet");
    // The 1.1 query reports the same, and takes NULL for what it skips.
    let (mut mode, mut weights) = (0u32, 0u64);
    expect(
        unsafe { cogvideo_pipeline_memory(per_component.0, &mut mode, &mut weights, null_mut()) },
        COGVIDEO_OK,
        "",
    );
    assert_eq!((mode, weights), (i.residency, i.weight_bytes));

    // A budget of one byte: Auto takes the leanest mode.
    o.residency = COGVIDEO_RESIDENCY_AUTO;
    o.memory_budget = 1;
    expect(
        unsafe { cogvideo_load_pipeline(path.as_ptr(), &o, &mut p) },
        COGVIDEO_OK,
        "",
    );
    let auto = Handle(p);
    assert_eq!(info(&auto).residency, COGVIDEO_RESIDENCY_STREAMED);

    // Too small a struct is refused, naming the init function.
    let mut small = unsafe { std::mem::zeroed::<cogvideo_memory_info>() };
    small.struct_size = 8;
    let st = unsafe { cogvideo_pipeline_memory_info(auto.0, &mut small) };
    expect(
        st,
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "cogvideo_memory_info_init",
    );

    // Both give the frames a resident pipeline gives; in a budget the
    // untiled decode does not fit, decoding is tiled as `vae_tiling` does.
    let resident = Handle::load("cogvideox-5b");
    o.residency = COGVIDEO_RESIDENCY_RESIDENT;
    o.memory_budget = 0;
    o.vae_tiling = true;
    expect(
        unsafe { cogvideo_load_pipeline(path.as_ptr(), &o, &mut p) },
        COGVIDEO_OK,
        "",
    );
    let tiled = Handle(p);
    let frames = |h: &Handle| {
        let out = Frames::rgb8(9);
        let st = unsafe { cogvideo_generate_video(h.0, &gen_opts(2, 5), out.descs.as_ptr(), 9) };
        expect(st, COGVIDEO_OK, "");
        out.buffers
    };
    let want = frames(&resident);
    assert!(frames(&per_component) == want);
    let want_tiled = frames(&tiled);
    assert!(want_tiled != want);
    assert!(frames(&auto) == want_tiled);
    let i = info(&auto);
    assert!(i.estimated_peak_bytes > i.kept_weight_bytes, "{i:?}");

    o.residency = 7;
    let st = unsafe { cogvideo_load_pipeline(path.as_ptr(), &o, &mut p) };
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "COGVIDEO_RESIDENCY_AUTO");
}

#[test]
fn default_frames_per_operation_and_checkpoint_identity() {
    let t2v = Handle::load("cogvideox-5b");
    let i2v = Handle::load("cogvideox-5b-i2v");
    let v15 = Handle::load("cogvideox1.5-5b");
    let frames = |h: &Handle, op: u32| {
        let mut n = 0;
        expect(
            unsafe { cogvideo_pipeline_default_frames(h.0, op, &mut n) },
            COGVIDEO_OK,
            "",
        );
        n
    };
    // The tiny text models' sample_frames (9, and 13 for 1.5, which edits
    // 8k+5 frames), and 49 for image-to-video.
    assert_eq!(frames(&t2v, COGVIDEO_OPERATION_GENERATE), 9);
    assert_eq!(frames(&t2v, COGVIDEO_OPERATION_EDIT), 9);
    assert_eq!(frames(&t2v, COGVIDEO_OPERATION_VIDEO_TO_VIDEO), 9);
    assert_eq!(frames(&i2v, COGVIDEO_OPERATION_ANIMATE), 49);
    assert_eq!(frames(&v15, COGVIDEO_OPERATION_GENERATE), 13);
    assert_eq!(frames(&v15, COGVIDEO_OPERATION_EDIT), 13);
    let mut n = 0;
    expect(
        unsafe { cogvideo_pipeline_default_frames(t2v.0, 9, &mut n) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "operation 9",
    );

    let identity = |h: &Handle| {
        let mut id = 0u64;
        expect(
            unsafe { cogvideo_pipeline_identity(h.0, &mut id) },
            COGVIDEO_OK,
            "",
        );
        id
    };
    let again = Handle::load("cogvideox-5b");
    assert_eq!(identity(&t2v), identity(&again));
    assert_ne!(identity(&t2v), identity(&i2v));
    assert_ne!(identity(&t2v), identity(&v15));
    assert_eq!(
        identity(&t2v),
        cogvideo::pipelines::identity::checkpoint_identity(&tiny("cogvideox-5b")).unwrap()
    );
    expect(
        unsafe { cogvideo_pipeline_identity(t2v.0, null_mut()) },
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "identity is NULL",
    );

    // A changed config changes the identity; the weights' values do not
    // enter it (only their headers).
    let dir = std::env::temp_dir().join(format!("cogvideo-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&tiny("cogvideox-5b"), &dir);
    let base = cogvideo::pipelines::identity::checkpoint_identity(&dir).unwrap();
    assert_eq!(base, identity(&t2v));
    let sched = dir.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&sched).unwrap();
    std::fs::write(
        &sched,
        text.replace("\"snr_shift_scale\": 1.0", "\"snr_shift_scale\": 2.0"),
    )
    .unwrap();
    assert_ne!(
        cogvideo::pipelines::identity::checkpoint_identity(&dir).unwrap(),
        base
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn saved_inversions_load_into_a_new_pipeline_and_bad_files_are_refused() {
    let p = Handle::load("cogvideox-5b");
    let clip = Frames::rgb8(9);
    let (st, inv) = invert(&p, &clip, &invert_opts(2));
    expect(st, COGVIDEO_OK, "");
    let dir = std::env::temp_dir().join(format!("cogvideo-inv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clip.inv");
    let cpath = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
    expect(
        unsafe { cogvideo_inversion_save(p.0, inv.0, cpath(&file).as_ptr()) },
        COGVIDEO_OK,
        "",
    );
    assert!(!dir.join("clip.inv.partial").exists());

    // Another pipeline of the same checkpoint edits the loaded inversion to
    // the frames the original gives.
    let q = Handle::load("cogvideox-5b");
    let load = |h: &Handle, f: &std::path::Path| {
        let mut out = null_mut();
        let st = unsafe { cogvideo_inversion_load(h.0, cpath(f).as_ptr(), &mut out) };
        (st, Inv(out))
    };
    let (st, loaded) = load(&q, &file);
    expect(st, COGVIDEO_OK, "");
    let edit = |h: &Handle, inv: &Inv| {
        let out = Frames::rgb8(9);
        let st = unsafe {
            cogvideo_edit_with_prompt(h.0, inv.0, &edit_opts(c"snow"), out.descs.as_ptr(), 9)
        };
        expect(st, COGVIDEO_OK, "");
        out.buffers
    };
    assert!(edit(&p, &inv) == edit(&q, &loaded));

    // Truncated, foreign, from another checkpoint, missing.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.inv");
    std::fs::write(&cut, &bytes[..bytes.len() - 4]).unwrap();
    let (st, none) = load(&q, &cut);
    expect(st, COGVIDEO_ERR_INVALID_ARGUMENT, "truncated");
    assert!(none.0.is_null());
    std::fs::write(&cut, &bytes[..30]).unwrap();
    expect(load(&q, &cut).0, COGVIDEO_ERR_INVALID_ARGUMENT, "too short");
    let foreign = dir.join("foreign.inv");
    std::fs::write(&foreign, vec![7u8; 4096]).unwrap();
    expect(
        load(&q, &foreign).0,
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "not a libcogvideo inversion file",
    );
    let v15 = Handle::load("cogvideox1.5-5b");
    expect(
        load(&v15, &file).0,
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "another checkpoint",
    );
    expect(
        load(&q, &dir.join("missing.inv")).0,
        COGVIDEO_ERR_IO,
        "missing.inv",
    );
    let mut newer = bytes.clone();
    newer[8] = 2;
    std::fs::write(&foreign, &newer).unwrap();
    expect(
        load(&q, &foreign).0,
        COGVIDEO_ERR_INVALID_ARGUMENT,
        "format 2",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loading_reports_progress_and_can_be_cancelled() {
    extern "C" fn record(user: *mut c_void, stage: i32, done: i32, total: i32) -> bool {
        let calls = unsafe { &mut *(user as *mut Vec<(i32, i32, i32)>) };
        calls.push((stage, done, total));
        true
    }
    extern "C" fn cancel_at_half(user: *mut c_void, stage: i32, done: i32, total: i32) -> bool {
        record(user, stage, done, total);
        2 * done < total
    }
    let mut o = unsafe { std::mem::zeroed::<cogvideo_load_options>() };
    unsafe { cogvideo_load_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
    let mut calls: Vec<(i32, i32, i32)> = Vec::new();
    o.progress = Some(record);
    o.progress_user = &mut calls as *mut _ as *mut c_void;
    let ckpt = path("cogvideox-5b");
    let mut p = null_mut();
    expect(
        unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) },
        COGVIDEO_OK,
        "",
    );
    let _loaded = Handle(p);
    let total = calls[0].2;
    assert!(
        total > 0 && calls[0] == (COGVIDEO_STAGE_LOAD, 0, total),
        "{calls:?}"
    );
    assert_eq!(calls.last(), Some(&(COGVIDEO_STAGE_LOAD, total, total)));
    assert!(calls.windows(2).all(|w| w[0].1 <= w[1].1), "{calls:?}");

    calls.clear();
    o.progress = Some(cancel_at_half);
    let mut p = std::ptr::dangling_mut::<cogvideo_pipeline>();
    expect(
        unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) },
        COGVIDEO_ERR_CANCELLED,
        "cancel",
    );
    assert!(p.is_null());
    // Nothing was reported after the callback said stop.
    let (last, before) = calls.split_last().unwrap();
    assert!(
        2 * last.1 >= total && before.iter().all(|c| 2 * c.1 < total),
        "{calls:?}"
    );
}

#[test]
fn a_cancel_lands_between_text_encoder_blocks() {
    // The text encoder polls the callback before each of its blocks with
    // the stage's counts unchanged: a stop at the first of those polls ends
    // the call before the prompt is encoded.
    extern "C" fn cancel_in_encoder(user: *mut c_void, stage: i32, done: i32, _: i32) -> bool {
        let calls = unsafe { &mut *(user as *mut Vec<(i32, i32)>) };
        calls.push((stage, done));
        calls.len() < 2
    }
    let p = Handle::load("cogvideox-5b");
    let mut out = Frames::rgb8(9);
    let mut calls: Vec<(i32, i32)> = Vec::new();
    let mut o = gen_opts(2, 5);
    o.progress = Some(cancel_in_encoder);
    o.progress_user = &mut calls as *mut _ as *mut c_void;
    expect(generate(&p, &o, &mut out), COGVIDEO_ERR_CANCELLED, "cancel");
    assert_eq!(
        calls,
        [(COGVIDEO_STAGE_ENCODE_TEXT, 0); 2],
        "stopped inside the encoder"
    );
}

#[test]
fn a_cancel_lands_between_transformer_blocks() {
    // The tiny models have two blocks: each step polls the callback before
    // each of them with the step's counts unchanged (and may within them).
    extern "C" fn cancel_at_second_block(user: *mut c_void, stage: i32, done: i32, _: i32) -> bool {
        let calls = unsafe { &mut *(user as *mut Vec<(i32, i32)>) };
        calls.push((stage, done));
        let polls = calls
            .iter()
            .filter(|&&c| c == (COGVIDEO_STAGE_DENOISE, 0))
            .count();
        polls < 3
    }
    extern "C" fn record(user: *mut c_void, stage: i32, done: i32, _: i32) -> bool {
        let calls = unsafe { &mut *(user as *mut Vec<(i32, i32)>) };
        calls.push((stage, done));
        true
    }
    let p = Handle::load("cogvideox-5b");
    let mut out = Frames::rgb8(9);
    let mut calls: Vec<(i32, i32)> = Vec::new();
    let mut o = gen_opts(2, 5);
    o.progress = Some(record);
    o.progress_user = &mut calls as *mut _ as *mut c_void;
    expect(generate(&p, &o, &mut out), COGVIDEO_OK, "");
    let mut denoise: Vec<i32> = calls
        .iter()
        .filter(|c| c.0 == COGVIDEO_STAGE_DENOISE)
        .map(|c| c.1)
        .collect();
    // Polls inside a block (every 20 ms at most) may add repeats.
    let repeats = |d: &[i32], n: i32| d.iter().filter(|&&c| c == n).count();
    assert!(
        repeats(&denoise, 0) >= 3 && repeats(&denoise, 1) >= 3,
        "start, 2 blocks, step end, ...: {denoise:?}"
    );
    denoise.dedup();
    assert_eq!(denoise, [0, 1, 2], "counts never go back");

    calls.clear();
    o.progress = Some(cancel_at_second_block);
    expect(generate(&p, &o, &mut out), COGVIDEO_ERR_CANCELLED, "cancel");
    assert!(
        !calls.contains(&(COGVIDEO_STAGE_DENOISE, 1)),
        "the first step did not finish: {calls:?}"
    );
}
