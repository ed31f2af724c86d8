//! Shared by the plugin's tests: the bundle, built once per test process,
//! and what the C API returns for the inputs a test gives an effect.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cogvideox_ofx::capi::{self, Api, PipelineHandle};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The cargo target directory this test was built into.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary>
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// The folder holding `CogVideoX.ofx.bundle` (a debug build), built once
/// per test process by the same script users run.
pub fn bundle_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = target_dir().join("ofx-test");
        let st = Command::new(repo().join("scripts/build-ofx-bundle.sh"))
            .arg("--debug")
            .arg(&out)
            .env("CARGO_TARGET_DIR", target_dir())
            .status()
            .expect("run scripts/build-ofx-bundle.sh");
        assert!(st.success(), "scripts/build-ofx-bundle.sh failed");
        out
    })
}

pub fn bundle_file(name: &str) -> PathBuf {
    bundle_dir()
        .join("CogVideoX.ofx.bundle/Contents/Linux-x86-64")
        .join(name)
}

/// The bundle's libcogvideo, opened once (the plugin loads the same copy).
pub fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| Api::open(bundle_file("libcogvideo.so").to_str().unwrap()).unwrap())
}

/// Frames of one size and C API format, each top-down and tightly packed.
pub struct Frames<'a> {
    pub width: usize,
    pub height: usize,
    pub format: u32,
    pub frames: &'a [Vec<u8>],
}

impl Frames<'_> {
    fn pixel_bytes(&self) -> usize {
        match self.format {
            capi::FORMAT_RGBA16 => 8,
            capi::FORMAT_RGBA32F => 16,
            _ => 4,
        }
    }

    fn desc(&self, data: *mut u8) -> capi::Frame {
        capi::Frame {
            data: data.cast(),
            width: self.width as i32,
            height: self.height as i32,
            stride_bytes: (self.width * self.pixel_bytes()) as i64,
            format: self.format,
        }
    }
}

/// What the tests give CogVideoX Edit: the inversion's and the edit's
/// options the effect passes on.
pub struct EditInputs<'a> {
    pub checkpoint: &'a Path,
    pub steps: i32,
    pub seed: u64,
    pub guidance: f32,
}

/// `cogvideo_invert_video` once, then `cogvideo_edit_with_prompt` for each
/// prompt: the edited frames per prompt, in the source's size and format.
pub fn c_api_edit(inputs: &EditInputs, source: &Frames, prompts: &[&str]) -> Vec<Vec<Vec<u8>>> {
    let api = api();
    let mut lo = capi::LoadOptions::default();
    // SAFETY: writable options.
    unsafe { api.load_options_init.run(&mut lo) };
    let pipe = PipelineHandle::load(api, inputs.checkpoint.to_str().unwrap(), &lo).unwrap();
    let mut src: Vec<Vec<u8>> = source.frames.to_vec();
    let descs: Vec<capi::Frame> = src
        .iter_mut()
        .map(|f| source.desc(f.as_mut_ptr()))
        .collect();
    let mut io = capi::InvertOptions::default();
    // SAFETY: writable options.
    unsafe { api.invert_options_init.run(&mut io) };
    io.steps = inputs.steps;
    io.seed = inputs.seed;
    let mut inv = std::ptr::null_mut();
    // SAFETY: valid frames, options and out pointer.
    let st = unsafe { (api.invert_video)(pipe.ptr, descs.as_ptr(), descs.len(), &io, &mut inv) };
    api.check(st).unwrap();
    let inv = capi::InversionHandle { api, ptr: inv };
    let n = inv.frame_count().unwrap();
    prompts
        .iter()
        .map(|prompt| {
            let size = source.width * source.height * source.pixel_bytes();
            let mut out: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; size]).collect();
            let outs: Vec<capi::Frame> = out
                .iter_mut()
                .map(|f| source.desc(f.as_mut_ptr()))
                .collect();
            let prompt = CString::new(*prompt).unwrap();
            let mut eo = capi::EditOptions::default();
            // SAFETY: writable options.
            unsafe { api.edit_options_init.run(&mut eo) };
            eo.prompt = prompt.as_ptr();
            eo.guidance_scale = inputs.guidance;
            eo.seed = inputs.seed;
            // SAFETY: live pipeline and inversion; outputs sized as the
            // inversion says.
            let st = unsafe { (api.edit_with_prompt)(pipe.ptr, inv.ptr, &eo, outs.as_ptr(), n) };
            api.check(st).unwrap();
            out
        })
        .collect()
}

/// What the tests give CogVideoX Animate.
pub struct AnimateInputs<'a> {
    pub checkpoint: &'a Path,
    pub prompt: &'a str,
    pub frames: usize,
    pub steps: i32,
    pub seed: u64,
    pub guidance: f32,
}

/// `cogvideo_animate_image` on `image` (the one frame of `image.frames`):
/// the clip's frames in the image's size and format.
pub fn c_api_animate(inputs: &AnimateInputs, image: &Frames) -> Vec<Vec<u8>> {
    let api = api();
    let mut lo = capi::LoadOptions::default();
    // SAFETY: writable options.
    unsafe { api.load_options_init.run(&mut lo) };
    let pipe = PipelineHandle::load(api, inputs.checkpoint.to_str().unwrap(), &lo).unwrap();
    let mut img = image.frames[0].clone();
    let img = image.desc(img.as_mut_ptr());
    let size = image.width * image.height * image.pixel_bytes();
    let mut out: Vec<Vec<u8>> = (0..inputs.frames).map(|_| vec![0u8; size]).collect();
    let outs: Vec<capi::Frame> = out.iter_mut().map(|f| image.desc(f.as_mut_ptr())).collect();
    let prompt = CString::new(inputs.prompt).unwrap();
    let mut o = capi::AnimateOptions::default();
    // SAFETY: writable options.
    unsafe { api.animate_options_init.run(&mut o) };
    o.prompt = prompt.as_ptr();
    o.num_frames = inputs.frames as i32;
    o.steps = inputs.steps;
    o.guidance_scale = inputs.guidance;
    o.seed = inputs.seed;
    // SAFETY: valid image, options and outputs.
    let st = unsafe { (api.animate_image)(pipe.ptr, &img, &o, outs.as_ptr(), outs.len()) };
    api.check(st).unwrap();
    out
}

/// What the tests give CogVideoX Generate.
pub struct GenerateInputs<'a> {
    pub checkpoint: &'a Path,
    pub prompt: &'a str,
    pub frames: usize,
    pub steps: i32,
    pub seed: u64,
    pub guidance: f32,
}

/// `cogvideo_generate_video`: the clip's frames at `width` x `height` in
/// `format` (C API), top-down and tightly packed.
pub fn c_api_generate(
    inputs: &GenerateInputs,
    width: usize,
    height: usize,
    format: u32,
) -> Vec<Vec<u8>> {
    let api = api();
    let mut lo = capi::LoadOptions::default();
    // SAFETY: writable options.
    unsafe { api.load_options_init.run(&mut lo) };
    let pipe = PipelineHandle::load(api, inputs.checkpoint.to_str().unwrap(), &lo).unwrap();
    let shape = Frames {
        width,
        height,
        format,
        frames: &[],
    };
    let size = width * height * shape.pixel_bytes();
    let mut out: Vec<Vec<u8>> = (0..inputs.frames).map(|_| vec![0u8; size]).collect();
    let outs: Vec<capi::Frame> = out.iter_mut().map(|f| shape.desc(f.as_mut_ptr())).collect();
    let prompt = CString::new(inputs.prompt).unwrap();
    let mut o = capi::GenerateOptions::default();
    // SAFETY: writable options.
    unsafe { api.generate_options_init.run(&mut o) };
    o.prompt = prompt.as_ptr();
    o.num_frames = inputs.frames as i32;
    o.steps = inputs.steps;
    o.guidance_scale = inputs.guidance;
    o.seed = inputs.seed;
    // SAFETY: valid options and outputs.
    let st = unsafe { (api.generate_video)(pipe.ptr, &o, outs.as_ptr(), outs.len()) };
    api.check(st).unwrap();
    out
}
