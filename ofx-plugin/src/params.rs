//! The effects' parameters: one table defines them (describe) and names
//! them (render).

use std::ffi::{CStr, CString, c_char, c_int};

use crate::ofx::*;

pub enum Kind {
    /// A string; the mode is one of the `kOfxParamString*` constants.
    Str(&'static CStr, &'static str),
    Int(i32, i32, i32),
    Double(f64, f64, f64),
    Bool(bool),
    Choice(&'static [&'static str], i32),
    Button,
}

pub struct Param {
    pub name: &'static CStr,
    pub label: &'static CStr,
    pub hint: &'static CStr,
    pub kind: Kind,
}

const fn p(name: &'static CStr, label: &'static CStr, hint: &'static CStr, kind: Kind) -> Param {
    Param {
        name,
        label,
        hint,
        kind,
    }
}

pub const RESIZE_MODES: &[&str] = &["Stretch", "Crop", "Fit"];
// The option's index is the C API's constant (`COGVIDEO_DEVICE_*`,
// `COGVIDEO_DTYPE_*`), automatic last since the C API added it last.
pub const DEVICES: &[&str] = &["CPU", "CUDA", "Automatic"];
pub const DTYPES: &[&str] = &["f32 (exact)", "bf16", "f16", "Automatic"];

/// The model and device options every effect has.
const MODEL: [Param; 6] = [
    p(
        c"checkpoint",
        c"Checkpoint folder",
        c"A CogVideoX checkpoint in the diffusers layout",
        Kind::Str(kOfxParamStringIsDirectoryPath, ""),
    ),
    p(
        c"device",
        c"Device",
        c"Where the model runs (automatic: the GPU when there is one)",
        Kind::Choice(DEVICES, 2),
    ),
    p(
        c"device_index",
        c"Device index",
        c"Which GPU",
        Kind::Int(0, 0, 63),
    ),
    p(
        c"dtype",
        c"Precision",
        c"Weights and activations (automatic: bf16 on a GPU, f32 on the CPU)",
        Kind::Choice(DTYPES, 3),
    ),
    p(
        c"vae_tiling",
        c"VAE tiling",
        c"Less memory, seams differ slightly",
        Kind::Bool(false),
    ),
    p(
        c"resize_mode",
        c"Resize mode",
        c"How frames map to the model's working size",
        Kind::Choice(RESIZE_MODES, 0),
    ),
];

/// Prompt and sampling options every effect has.
const SAMPLING: [Param; 7] = [
    p(
        c"prompt",
        c"Prompt",
        c"What the result shows",
        Kind::Str(kOfxParamStringIsMultiLine, ""),
    ),
    p(
        c"negative_prompt",
        c"Negative prompt",
        c"What the result avoids",
        Kind::Str(kOfxParamStringIsMultiLine, ""),
    ),
    p(
        c"steps",
        c"Steps",
        c"Sampling (and inversion) steps",
        Kind::Int(50, 1, 1000),
    ),
    p(
        c"guidance",
        c"Guidance",
        c"Classifier-free guidance scale",
        Kind::Double(6.0, 0.0, 50.0),
    ),
    p(c"seed", c"Seed", c"Random seed", Kind::Int(42, 0, i32::MAX)),
    p(
        c"width",
        c"Working width",
        c"Model width in pixels; 0: the model's default",
        Kind::Int(0, 0, 4096),
    ),
    p(
        c"height",
        c"Working height",
        c"Model height in pixels; 0: the model's default",
        Kind::Int(0, 0, 4096),
    ),
];

/// How the host's values are encoded (`colour`). The model is trained on
/// display-referred frames; linear input is converted to them and the
/// result back (`Frame::linear_to_display`).
pub const COLOURS: &[&str] = &["Display-referred (sRGB, Rec.709)", "Linear"];
pub const COLOUR_LINEAR: i32 = 1;

/// The input's colour encoding; its default depends on the host
/// (`choice_default`).
const COLOUR: [Param; 1] = [p(
    c"colour",
    c"Input colour",
    c"How the host's values are encoded. The model sees display-referred (sRGB, Rec.709) values: linear input (values above 1 allowed) is converted to them and the result back to linear. Default: linear in Natron, display-referred elsewhere",
    Kind::Choice(COLOURS, 0),
)];

/// Speed and LoRA adapters every effect has (`model_settings.rs`).
const MODEL_SETTINGS: [Param; 1 + 2 * crate::model_settings::LORAS] = [
    p(
        c"speed",
        c"Speed",
        c"Exact: the full computation (final renders). Fast: the same steps with a step cache (Pyramid Attention Broadcast), close to exact. Preview: half the steps with a step cache at the model's smallest working size, to judge a setting quickly; cached apart from the exact result",
        Kind::Choice(crate::model_settings::SPEEDS, 0),
    ),
    lora(0, c"LoRA 1"),
    lora_weight(0, c"LoRA 1 weight"),
    lora(1, c"LoRA 2"),
    lora_weight(1, c"LoRA 2 weight"),
    lora(2, c"LoRA 3"),
    lora_weight(2, c"LoRA 3 weight"),
];

const fn lora(i: usize, label: &'static CStr) -> Param {
    p(
        crate::model_settings::LORA_PARAMS[i].0,
        label,
        c"A CogVideoX LoRA (.safetensors, diffusers/PEFT layout); empty: none",
        Kind::Str(kOfxParamStringIsFilePath, ""),
    )
}

const fn lora_weight(i: usize, label: &'static CStr) -> Param {
    p(
        crate::model_settings::LORA_PARAMS[i].1,
        label,
        c"How strongly the LoRA applies (0: not at all)",
        Kind::Double(1.0, -4.0, 4.0),
    )
}

/// Which host frames form the processed segment.
const SEGMENT: [Param; 4] = [
    p(
        c"segment_start",
        c"Segment start",
        c"First host frame of the segment (not before the clip's first frame)",
        Kind::Int(0, -1_000_000, 1_000_000),
    ),
    p(
        c"set_start",
        c"Set start here",
        c"The segment starts at the current frame",
        Kind::Button,
    ),
    p(
        c"segment_length",
        c"Segment length",
        c"Model frames in the segment; 0: the model's default",
        Kind::Int(0, 0, 1000),
    ),
    p(
        c"frame_step",
        c"Frame step",
        c"Host frames per model frame; 0: host frame rate / model frame rate",
        Kind::Int(0, 0, 100),
    ),
];

/// Cache control and status, last on every effect.
const CONTROL: [Param; 3] = [
    p(
        c"process",
        c"Process",
        c"Retry a segment that failed",
        Kind::Button,
    ),
    p(
        c"cache_version",
        c"Cache version",
        c"Change to compute again",
        Kind::Int(0, 0, i32::MAX),
    ),
    p(
        c"status",
        c"Status",
        c"What the effect is doing",
        Kind::Str(kOfxParamStringIsLabel, ""),
    ),
];

const EDIT_ONLY: [Param; 2] = [
    p(
        c"start_from_inverted",
        c"Start from inverted latent",
        c"Off: fresh noise (as the reference); on: keeps more of the source",
        Kind::Bool(false),
    ),
    p(
        c"strength",
        c"Strength",
        c"How much of the schedule the edit re-runs",
        Kind::Double(1.0, 0.001, 1.0),
    ),
];

const ANIMATE_ONLY: [Param; 1] = [p(
    c"source_frame",
    c"Source frame",
    c"Host frame whose image is animated",
    Kind::Int(0, -1_000_000, 1_000_000),
)];

/// The parameters of an effect, in display order.
pub fn params(effect: crate::Effect) -> Vec<&'static Param> {
    let mut v: Vec<&'static Param> = MODEL
        .iter()
        .chain(COLOUR.iter())
        .chain(SAMPLING.iter())
        .chain(MODEL_SETTINGS.iter())
        .collect();
    match effect {
        crate::Effect::Edit => v.extend(EDIT_ONLY.iter()),
        crate::Effect::Animate => v.extend(ANIMATE_ONLY.iter()),
        crate::Effect::Generate => {}
    }
    v.extend(SEGMENT.iter().chain(CONTROL.iter()));
    v
}

/// Defines `param` on an effect descriptor's parameter set.
pub fn define(s: &Suites, set: OfxParamSetHandle, param: &Param) -> Result<(), String> {
    let ty = match param.kind {
        Kind::Str(..) => kOfxParamTypeString,
        Kind::Int(..) => kOfxParamTypeInteger,
        Kind::Double(..) => kOfxParamTypeDouble,
        Kind::Bool(_) => kOfxParamTypeBoolean,
        Kind::Choice(..) => kOfxParamTypeChoice,
        Kind::Button => kOfxParamTypePushButton,
    };
    let f = call!(s.param, paramDefine);
    let mut h: OfxPropertySetHandle = std::ptr::null_mut();
    // SAFETY: valid set handle and names.
    check(
        unsafe { f(set, ty.as_ptr(), param.name.as_ptr(), &mut h) },
        "paramDefine",
    )?;
    let props = Props { s: *s, h };
    let what = format!("parameter {}", param.name.to_string_lossy());
    let opt = |r: Result<(), String>| optional(&what, r);
    opt(props.set_str(kOfxPropLabel, 0, param.label));
    opt(props.set_str(kOfxParamPropHint, 0, param.hint));
    // Only value-holding parameters have value properties: HostSupport
    // gives a push button none of them (ofxhParam.cpp,
    // `Descriptor::addStandardParamProps` skips `addValueParamProps` for
    // types without a value), so setting one there fails.
    if !matches!(param.kind, Kind::Button) {
        // A whole segment depends on these values, so they must not
        // animate, and any change affects every frame.
        opt(props.set_int(kOfxParamPropAnimates, 0, 0));
        // The status line shows what happens; changing it invalidates nothing.
        if !matches!(param.kind, Kind::Str(mode, _) if mode == kOfxParamStringIsLabel) {
            opt(props.set_str(kOfxParamPropCacheInvalidation, 0, kOfxParamInvalidateAll));
        }
    }
    match param.kind {
        Kind::Str(mode, default) => {
            opt(props.set_str(kOfxParamPropStringMode, 0, mode));
            let d = CString::new(default).unwrap_or_default();
            opt(props.set_str(kOfxParamPropDefault, 0, &d));
            if mode == kOfxParamStringIsLabel {
                opt(props.set_int(kOfxParamPropEnabled, 0, 0));
                opt(props.set_int(kOfxParamPropEvaluateOnChange, 0, 0));
                opt(props.set_int(kOfxParamPropPersistant, 0, 0));
            }
        }
        Kind::Int(d, lo, hi) => {
            opt(props.set_int(kOfxParamPropDefault, 0, d));
            opt(props.set_int(kOfxParamPropMin, 0, lo));
            opt(props.set_int(kOfxParamPropMax, 0, hi));
            let (dlo, dhi) = display_range(d, lo, hi);
            opt(props.set_int(kOfxParamPropDisplayMin, 0, dlo));
            opt(props.set_int(kOfxParamPropDisplayMax, 0, dhi));
        }
        Kind::Double(d, lo, hi) => {
            opt(props.set_double(kOfxParamPropDefault, 0, d));
            opt(props.set_double(kOfxParamPropMin, 0, lo));
            opt(props.set_double(kOfxParamPropMax, 0, hi));
            opt(props.set_double(kOfxParamPropDisplayMin, 0, lo));
            opt(props.set_double(kOfxParamPropDisplayMax, 0, hi));
        }
        Kind::Bool(d) => opt(props.set_int(kOfxParamPropDefault, 0, d as c_int)),
        Kind::Choice(options, d) => {
            // Without its options a choice cannot be used: required.
            for (i, o) in options.iter().enumerate() {
                let o = CString::new(*o).unwrap_or_default();
                props.set_str(kOfxParamPropChoiceOption, i as c_int, &o)?;
            }
            opt(props.set_int(kOfxParamPropDefault, 0, choice_default(s, param, d)));
        }
        Kind::Button => {}
    }
    Ok(())
}

/// A choice's default on this host: `colour` is linear in Natron, whose
/// working space is linear light ("32 bits floating point linear colour
/// processing pipeline", NatronGitHub/Natron `README.md`; its viewer's
/// `linear_to_srgb` shader encodes for display), and
/// display-referred elsewhere (Resolve's and MLT's frames are the
/// timeline's display-referred values).
fn choice_default(s: &Suites, param: &Param, d: i32) -> i32 {
    if param.name == c"colour" && s.natron {
        COLOUR_LINEAR
    } else {
        d
    }
}

/// An integer parameter's slider range: at most 1000 wide (a slider over
/// millions of frames cannot pick one), from 0 where the hard range allows,
/// holding the default (Resolve needs that), inside the hard range.
fn display_range(d: i32, lo: i32, hi: i32) -> (i32, i32) {
    let dlo = lo.max(d.min(0));
    let dhi = hi.min(dlo.saturating_add(1000)).max(d);
    (dlo, dhi)
}

/// Reads an instance's parameter values at one time.
pub struct Reader {
    pub s: Suites,
    pub set: OfxParamSetHandle,
    pub time: f64,
}

impl Reader {
    fn handle(&self, name: &CStr) -> Result<OfxParamHandle, String> {
        let f = call!(self.s.param, paramGetHandle);
        let mut h: OfxParamHandle = std::ptr::null_mut();
        // SAFETY: valid set handle and name; properties not wanted.
        let st = unsafe { f(self.set, name.as_ptr(), &mut h, std::ptr::null_mut()) };
        check(st, &format!("parameter {}", name.to_string_lossy()))?;
        Ok(h)
    }

    pub fn int(&self, name: &CStr) -> Result<i32, String> {
        let h = self.handle(name)?;
        let f = call!(self.s.param, paramGetValueAtTime);
        let mut v: c_int = 0;
        // SAFETY: integer, boolean and choice parameters return one int.
        check(
            unsafe { f(h, self.time, &mut v as *mut c_int) },
            "paramGetValueAtTime",
        )?;
        Ok(v)
    }

    pub fn bool(&self, name: &CStr) -> Result<bool, String> {
        Ok(self.int(name)? != 0)
    }

    pub fn double(&self, name: &CStr) -> Result<f64, String> {
        let h = self.handle(name)?;
        let f = call!(self.s.param, paramGetValueAtTime);
        let mut v = 0.0f64;
        // SAFETY: a double parameter returns one double.
        check(
            unsafe { f(h, self.time, &mut v as *mut f64) },
            "paramGetValueAtTime",
        )?;
        Ok(v)
    }

    pub fn string(&self, name: &CStr) -> Result<String, String> {
        let h = self.handle(name)?;
        let f = call!(self.s.param, paramGetValueAtTime);
        let mut v: *const c_char = std::ptr::null();
        // SAFETY: a string parameter returns a host-owned string, copied here.
        check(
            unsafe { f(h, self.time, &mut v as *mut *const c_char) },
            "paramGetValueAtTime",
        )?;
        if v.is_null() {
            return Ok(String::new());
        }
        // SAFETY: NUL-terminated, valid until the next call on this param.
        Ok(unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
    }
}
