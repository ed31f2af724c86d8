//! CogVideoX as OpenFX image effects: Edit (a clip segment re-rendered by
//! prompt through DDIM inversion), Animate (image-to-video) and Generate
//! (text-to-video). The plugin uses libcogvideo only through its C API
//! (`capi`); heavy state (pipelines, segment results) lives per process and
//! is shared by all instances, because hosts such as MLT create an instance
//! per frame.

mod animate;
pub mod capi;
mod disk;
mod edit;
mod generate;
mod image;
pub mod log;
mod memory;
mod model_settings;
mod ofx;
mod params;
mod segment;
mod trace;
mod worker;

use std::borrow::Cow;
use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use ofx::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Edit,
    Animate,
    Generate,
}

/// Assumed where a host reports no frame rate.
const DEFAULT_HOST_FPS: f64 = 24.0;

const VERSION_MAJOR: u32 = 1;
const VERSION_MINOR: u32 = 0;

macro_rules! plugin {
    ($id:literal, $entry:ident) => {
        OfxPlugin {
            pluginApi: kOfxImageEffectPluginApi.as_ptr(),
            apiVersion: 1,
            pluginIdentifier: $id.as_ptr(),
            pluginVersionMajor: VERSION_MAJOR,
            pluginVersionMinor: VERSION_MINOR,
            setHost: Some(set_host),
            mainEntry: Some($entry),
        }
    };
}

static PLUGINS: [OfxPlugin; 3] = [
    plugin!(c"org.cogvideo.CogVideoXEdit", edit_main),
    plugin!(c"org.cogvideo.CogVideoXAnimate", animate_main),
    plugin!(c"org.cogvideo.CogVideoXGenerate", generate_main),
];

/// # Safety
/// Called by OpenFX hosts.
#[unsafe(no_mangle)]
pub extern "C" fn OfxGetNumberOfPlugins() -> c_int {
    PLUGINS.len() as c_int
}

/// # Safety
/// Called by OpenFX hosts.
#[unsafe(no_mangle)]
pub extern "C" fn OfxGetPlugin(nth: c_int) -> *const OfxPlugin {
    usize::try_from(nth)
        .ok()
        .and_then(|i| PLUGINS.get(i))
        .map_or(std::ptr::null(), |p| p as *const OfxPlugin)
}

unsafe extern "C" fn set_host(host: *mut OfxHost) {
    ofx::set_host(host);
}

unsafe extern "C" fn edit_main(
    action: *const c_char,
    handle: *const c_void,
    in_args: OfxPropertySetHandle,
    out_args: OfxPropertySetHandle,
) -> OfxStatus {
    entry(Effect::Edit, action, handle, in_args, out_args)
}

unsafe extern "C" fn animate_main(
    action: *const c_char,
    handle: *const c_void,
    in_args: OfxPropertySetHandle,
    out_args: OfxPropertySetHandle,
) -> OfxStatus {
    entry(Effect::Animate, action, handle, in_args, out_args)
}

unsafe extern "C" fn generate_main(
    action: *const c_char,
    handle: *const c_void,
    in_args: OfxPropertySetHandle,
    out_args: OfxPropertySetHandle,
) -> OfxStatus {
    entry(Effect::Generate, action, handle, in_args, out_args)
}

/// Every action passes here: a panic or an error becomes a status and a log
/// line, never an unwind into the host.
fn entry(
    effect: Effect,
    action: *const c_char,
    handle: *const c_void,
    in_args: OfxPropertySetHandle,
    out_args: OfxPropertySetHandle,
) -> OfxStatus {
    if action.is_null() {
        return kOfxStatErrBadHandle;
    }
    // SAFETY: hosts pass a NUL-terminated action name.
    let action = unsafe { CStr::from_ptr(action) };
    let handle = handle as OfxImageEffectHandle;
    let tracing = trace::enabled();
    let run = AssertUnwindSafe(|| {
        if tracing {
            let s = ofx::suites().ok();
            let thumbnail = s
                .filter(|_| action == kOfxImageEffectActionRender)
                .and_then(|s| source_thumbnail(&s, handle));
            let args = s.map(|s| Props { s, h: in_args });
            trace::action(effect, action, handle, args, thumbnail);
        }
        dispatch(effect, action, handle, in_args, out_args)
    });
    let st = catch_unwind(run);
    let st = answer(effect, action, st);
    if tracing {
        let _ = catch_unwind(|| trace::status(effect, action, handle, st));
    }
    st
}

/// An action's outcome as a status; errors and panics logged.
fn answer(
    effect: Effect,
    action: &CStr,
    outcome: std::thread::Result<Result<OfxStatus, String>>,
) -> OfxStatus {
    match outcome {
        Ok(Ok(st)) => st,
        Ok(Err(msg)) => {
            log::line(&format!("{effect:?} {}: {msg}", action.to_string_lossy()));
            kOfxStatFailed
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::line(&format!(
                "{effect:?} {}: panic: {msg}",
                action.to_string_lossy()
            ));
            kOfxStatFailed
        }
    }
}

fn dispatch(
    effect: Effect,
    action: &CStr,
    handle: OfxImageEffectHandle,
    in_args: OfxPropertySetHandle,
    out_args: OfxPropertySetHandle,
) -> Result<OfxStatus, String> {
    if action == kOfxActionLoad {
        ofx::load()?;
        return Ok(kOfxStatOK);
    }
    if action == kOfxActionUnload {
        // The suites stay: hosts that load many times per process (MLT) may
        // still be rendering other instances on other threads.
        return Ok(kOfxStatOK);
    }
    let s = ofx::suites()?;
    if action == kOfxActionDescribe {
        describe(&s, effect, handle)?;
    } else if action == kOfxImageEffectActionDescribeInContext {
        let context = Props { s, h: in_args }.get_str(kOfxImageEffectPropContext, 0)?;
        describe_in_context(&s, effect, handle, &context)?;
    } else if action == kOfxActionCreateInstance {
        // Resolve needs OK here; all state is per process.
    } else if action == kOfxActionDestroyInstance {
        ofx::forget_shown(handle);
        // The job this instance wanted runs on: MLT makes an instance per
        // frame, and Resolve re-creates instances on timeline edits
        // (gyroflow's notes), so the next instance wants the same result.
        worker::forget(handle as usize);
        model_settings::forget(handle as usize);
    } else if action == kOfxActionInstanceChanged {
        let args = Props { s, h: in_args };
        let name = args.get_str(kOfxPropName, 0)?;
        let is_param = args.get_str(kOfxPropType, 0)?.as_bytes() == kOfxTypeParameter.to_bytes();
        if is_param && name == "process" {
            segment::retry_failed();
            model_settings::retry();
        } else if is_param && name == "set_start" {
            // The frame the user is on, in the host's own time (Natron's
            // start at 1, Resolve's are frames of the source media).
            let time = args.get_double(kOfxPropTime, 0)?;
            ofx::set_param_int(&s, handle, c"segment_start", time.round() as c_int)?;
        } else if is_param && name != "status" {
            // What this instance's queued or running job computes is stale.
            worker::changed(handle as usize);
        }
    } else if action == kOfxActionPurgeCaches {
        edit::purge();
        animate::purge();
        generate::purge();
    } else if action == kOfxImageEffectActionGetRegionOfDefinition {
        // Natron probes render-scale support with this action at scale 0.5
        // and, where it fails, renders at full size and scales the result
        // itself (`Engine/OfxEffectInstance.cpp`, shared/reference/openfx.md
        // section 11): the model's results are computed once, at full size.
        let scale = Props { s, h: in_args }.get_double(kOfxImageEffectPropRenderScale, 0);
        if s.natron && scale.is_ok_and(|v| v != 1.0) {
            return Ok(kOfxStatFailed);
        }
        return Ok(kOfxStatReplyDefault);
    } else if action == kOfxImageEffectActionGetClipPreferences && effect == Effect::Generate {
        // Without this a host may render one frame and reuse it.
        Props { s, h: out_args }.set_int(kOfxImageEffectFrameVarying, 0, 1)?;
    } else if action == kOfxImageEffectActionGetFramesNeeded
        && s.temporal
        && effect != Effect::Generate
    {
        let times = frames_needed(&s, effect, handle, Props { s, h: in_args })?;
        let Some(times) = times else {
            return Ok(kOfxStatReplyDefault);
        };
        let out = Props { s, h: out_args };
        let name = c"OfxImageClipPropFrameRange_Source";
        for (i, (a, b)) in ranges(&times).into_iter().enumerate() {
            out.set_double(name, 2 * i as c_int, a)?;
            out.set_double(name, 2 * i as c_int + 1, b)?;
        }
    } else if action == kOfxImageEffectActionRender {
        // Every failed render says why on the effect, not only in the log.
        return render(&s, effect, handle, Props { s, h: in_args }).inspect_err(|e| {
            let text = format!("CogVideoX failed: {e} (log: {})", log::path().display());
            ofx::show_state(&s, handle, kOfxMessageError, &text, &text);
        });
    } else {
        return Ok(kOfxStatReplyDefault);
    }
    Ok(kOfxStatOK)
}

fn effect_props(s: &Suites, handle: OfxImageEffectHandle) -> Result<Props, String> {
    let f = call!(s.effect, getPropertySet);
    let mut h: OfxPropertySetHandle = std::ptr::null_mut();
    // SAFETY: valid effect handle and out pointer.
    check(unsafe { f(handle, &mut h) }, "getPropertySet")?;
    Ok(Props { s: *s, h })
}

fn describe(s: &Suites, effect: Effect, handle: OfxImageEffectHandle) -> Result<(), String> {
    let p = effect_props(s, handle)?;
    let (label, contexts): (&CStr, &[&CStr]) = match effect {
        Effect::Edit => (
            c"CogVideoX Edit",
            &[kOfxImageEffectContextFilter, kOfxImageEffectContextGeneral],
        ),
        Effect::Animate => (
            c"CogVideoX Animate",
            &[kOfxImageEffectContextFilter, kOfxImageEffectContextGeneral],
        ),
        // Filter and general too, for hosts without generators (MLT): the
        // clip replaces the source over the segment.
        Effect::Generate => (
            c"CogVideoX Generate",
            &[
                kOfxImageEffectContextGenerator,
                kOfxImageEffectContextFilter,
                kOfxImageEffectContextGeneral,
            ],
        ),
    };
    let opt = |r| ofx::optional(&format!("{effect:?} descriptor"), r);
    opt(p.set_str(kOfxPropLabel, 0, label));
    opt(p.set_str(kOfxImageEffectPluginPropGrouping, 0, c"CogVideoX"));
    for (i, c) in contexts.iter().enumerate() {
        p.set_str(kOfxImageEffectPropSupportedContexts, i as c_int, c)?;
    }
    for (i, d) in [kOfxBitDepthByte, kOfxBitDepthShort, kOfxBitDepthFloat]
        .iter()
        .enumerate()
    {
        p.set_str(kOfxImageEffectPropSupportedPixelDepths, i as c_int, d)?;
    }
    // Whole frames of whole segments: no tiles, no host frame threading;
    // the shared state has its own locks.
    opt(p.set_str(
        kOfxImageEffectPluginRenderThreadSafety,
        0,
        kOfxImageEffectRenderFullySafe,
    ));
    opt(p.set_int(kOfxImageEffectPluginPropHostFrameThreading, 0, 0));
    opt(p.set_int(kOfxImageEffectPropSupportsTiles, 0, 0));
    // Other times' source frames are fetched where the host can give them;
    // elsewhere they are collected as the host renders them.
    let temporal = s.temporal && effect != Effect::Generate;
    opt(p.set_int(kOfxImageEffectPropTemporalClipAccess, 0, temporal as c_int));
    Ok(())
}

fn describe_in_context(
    s: &Suites,
    effect: Effect,
    handle: OfxImageEffectHandle,
    context: &str,
) -> Result<(), String> {
    let define = call!(s.effect, clipDefine);
    let mut clips = vec![kOfxImageEffectOutputClipName];
    if context.as_bytes() != kOfxImageEffectContextGenerator.to_bytes() {
        clips.push(kOfxImageEffectSimpleSourceClipName);
    }
    for name in clips {
        let mut h: OfxPropertySetHandle = std::ptr::null_mut();
        // SAFETY: valid descriptor handle, name and out pointer.
        check(
            unsafe { define(handle, name.as_ptr(), &mut h) },
            "clipDefine",
        )?;
        let c = Props { s: *s, h };
        c.set_str(
            kOfxImageEffectPropSupportedComponents,
            0,
            kOfxImageComponentRGBA,
        )?;
        c.set_str(
            kOfxImageEffectPropSupportedComponents,
            1,
            kOfxImageComponentRGB,
        )?;
        let what = format!("{effect:?} clip {}", name.to_string_lossy());
        // Natron chooses the general context over the generator one
        // (`Engine/OfxHost.cpp`, `getContext`): there Generate must work with
        // nothing connected.
        if name == kOfxImageEffectSimpleSourceClipName
            && effect == Effect::Generate
            && context.as_bytes() == kOfxImageEffectContextGeneral.to_bytes()
        {
            ofx::optional(&what, c.set_int(kOfxImageClipPropOptional, 0, 1));
        }
        ofx::optional(&what, c.set_int(kOfxImageEffectPropSupportsTiles, 0, 0));
        // Generate never reads its Source (filter context) at other times.
        if name == kOfxImageEffectSimpleSourceClipName && s.temporal && effect != Effect::Generate {
            ofx::optional(
                &what,
                c.set_int(kOfxImageEffectPropTemporalClipAccess, 0, 1),
            );
        }
    }
    let get_set = call!(s.effect, getParamSet);
    let mut set: OfxParamSetHandle = std::ptr::null_mut();
    // SAFETY: valid descriptor handle and out pointer.
    check(unsafe { get_set(handle, &mut set) }, "getParamSet")?;
    for p in params::params(effect) {
        params::define(s, set, p)?;
    }
    Ok(())
}

/// The segment's first host frame: `segment_start`, but not before the
/// first frame of the Source clip (a generator's Output), so that with the
/// default 0 hosts whose frames start later (Natron's at 1, `Project.cpp`)
/// find the clip, and a value set before (MLT projects) keeps its meaning.
fn segment_start(
    s: &Suites,
    handle: OfxImageEffectHandle,
    r: &params::Reader,
) -> Result<i32, String> {
    Ok(at_or_after_clip(s, handle, r.int(c"segment_start")?))
}

/// Animate's image to animate: host frame `source_frame`, but not before
/// the Source clip's first frame, as `segment_start` (with the default 0
/// it is the clip's first frame: 1 in Natron).
fn source_frame(
    s: &Suites,
    handle: OfxImageEffectHandle,
    r: &params::Reader,
) -> Result<i32, String> {
    Ok(at_or_after_clip(s, handle, r.int(c"source_frame")?))
}

/// `frame`, or the clip's first frame where that comes later.
fn at_or_after_clip(s: &Suites, handle: OfxImageEffectHandle, frame: i32) -> i32 {
    let first = [
        kOfxImageEffectSimpleSourceClipName,
        kOfxImageEffectOutputClipName,
    ]
    .iter()
    .find_map(|name| {
        let c = clip(s, handle, name).ok()?;
        let get = s.effect.clipGetPropertySet?;
        let mut h: OfxPropertySetHandle = std::ptr::null_mut();
        // SAFETY: valid clip handle and out pointer.
        if unsafe { get(c, &mut h) } != kOfxStatOK {
            return None;
        }
        let p = Props { s: *s, h };
        // An unconnected Source has no range of its own.
        if p.get_int(kOfxImageClipPropConnected, 0)
            .is_ok_and(|c| c == 0)
        {
            return None;
        }
        p.get_double(kOfxImageEffectPropFrameRange, 0).ok()
    });
    first
        .filter(|f| f.is_finite())
        .map_or(frame, |f| frame.max(f.round() as i32))
}

/// Resolve's thumbnail flag on the Source clip, where it has one.
fn source_thumbnail(s: &Suites, handle: OfxImageEffectHandle) -> Option<c_int> {
    let c = clip(s, handle, kOfxImageEffectSimpleSourceClipName).ok()?;
    let get = s.effect.clipGetPropertySet?;
    let mut h: OfxPropertySetHandle = std::ptr::null_mut();
    // SAFETY: valid clip handle and out pointer.
    if unsafe { get(c, &mut h) } != kOfxStatOK {
        return None;
    }
    Props { s: *s, h }
        .get_int(c"kOfxImageClipPropThumbnail", 0)
        .ok()
}

fn clip(
    s: &Suites,
    handle: OfxImageEffectHandle,
    name: &CStr,
) -> Result<OfxImageClipHandle, String> {
    let f = call!(s.effect, clipGetHandle);
    let mut c: OfxImageClipHandle = std::ptr::null_mut();
    // SAFETY: valid instance handle, name and out pointer.
    check(
        unsafe { f(handle, name.as_ptr(), &mut c, std::ptr::null_mut()) },
        "clipGetHandle",
    )?;
    Ok(c)
}

fn read_load(r: &params::Reader) -> Result<segment::LoadKey, String> {
    Ok(segment::LoadKey {
        checkpoint: r.string(c"checkpoint")?,
        device: r.int(c"device")? as u32,
        device_index: r.int(c"device_index")?,
        dtype: r.int(c"dtype")? as u32,
        vae_tiling: r.bool(c"vae_tiling")?,
    })
}

fn read_edit(
    r: &params::Reader,
    load: segment::LoadKey,
    segment_start: i32,
    model: model_settings::Resolved,
) -> Result<edit::EditSettings, String> {
    Ok(edit::EditSettings {
        load,
        prompt: r.string(c"prompt")?,
        negative_prompt: r.string(c"negative_prompt")?,
        steps: model.steps,
        guidance: r.double(c"guidance")? as f32,
        seed: r.int(c"seed")? as u64,
        start_from_inverted: r.bool(c"start_from_inverted")?,
        strength: r.double(c"strength")?,
        width: model.width,
        height: model.height,
        resize_mode: r.int(c"resize_mode")? as u32,
        segment_start,
        cache_version: r.int(c"cache_version")?,
        model,
    })
}

fn read_generate(
    r: &params::Reader,
    load: segment::LoadKey,
    segment_start: i32,
    model: model_settings::Resolved,
) -> Result<generate::GenerateSettings, String> {
    Ok(generate::GenerateSettings {
        load,
        prompt: r.string(c"prompt")?,
        negative_prompt: r.string(c"negative_prompt")?,
        steps: model.steps,
        guidance: r.double(c"guidance")? as f32,
        seed: r.int(c"seed")? as u64,
        width: model.width,
        height: model.height,
        resize_mode: r.int(c"resize_mode")? as u32,
        segment_start,
        cache_version: r.int(c"cache_version")?,
        model,
    })
}

fn read_animate(
    r: &params::Reader,
    load: segment::LoadKey,
    segment_start: i32,
    source_frame: i32,
    model: model_settings::Resolved,
) -> Result<animate::AnimateSettings, String> {
    Ok(animate::AnimateSettings {
        load,
        prompt: r.string(c"prompt")?,
        negative_prompt: r.string(c"negative_prompt")?,
        steps: model.steps,
        guidance: r.double(c"guidance")? as f32,
        seed: r.int(c"seed")? as u64,
        width: model.width,
        height: model.height,
        resize_mode: r.int(c"resize_mode")? as u32,
        source_frame,
        segment_start,
        cache_version: r.int(c"cache_version")?,
        model,
    })
}

fn render(
    s: &Suites,
    effect: Effect,
    handle: OfxImageEffectHandle,
    args: Props,
) -> Result<OfxStatus, String> {
    let time = args.get_double(kOfxPropTime, 0)?;
    let window = args.get_ints::<4>(kOfxImageEffectPropRenderWindow)?;
    let out_clip = clip(s, handle, kOfxImageEffectOutputClipName)?;
    let mut out =
        image::HostImage::fetch(*s, out_clip, time)?.ok_or("the host gave no output image")?;
    // A generator has no source: black stands in for it.
    let generator = effect_props(s, handle)?
        .get_str(kOfxImageEffectPropContext, 0)
        .is_ok_and(|c| c.as_bytes() == kOfxImageEffectContextGenerator.to_bytes());
    let black = || image::Frame::new(out.width(), out.height(), out.format);
    let (src_clip, source) = if generator {
        (None, black())
    } else {
        let c = clip(s, handle, kOfxImageEffectSimpleSourceClipName)?;
        match image::HostImage::fetch(*s, c, time)? {
            Some(src) => (Some(c), src.to_frame()),
            // Generate's Source is optional in the general context (Natron
            // prefers it over generator): nothing connected, it generates.
            None if effect == Effect::Generate => (None, black()),
            None => return Err("the host gave no source image".into()),
        }
    };
    // Resolve renders its thumbnails through the effect (184x92;
    // openfx-misc issue 56, the NDI plugin's trace of Resolve 21), and
    // where the host gives every frame it needs (Resolve, Natron) a render
    // below full size is a proxy or a zoomed-out viewer: neither starts a
    // load or a job; they show a full-size result downscaled, or the
    // source. Elsewhere (MLT's preview scale, which never renders at full
    // size meanwhile) a render scale below 1 is a segment of its own.
    let scale = [0, 1].map(|i| {
        args.get_double(kOfxImageEffectPropRenderScale, i)
            .unwrap_or(1.0)
    });
    let thumbnail = src_clip.is_some() && source_thumbnail(s, handle) == Some(1);
    let reduced = if thumbnail {
        Some(segment::Reduced::Thumbnail)
    } else {
        (s.temporal && scale.iter().any(|&v| v < 1.0)).then_some(segment::Reduced::Scale(scale))
    };
    let get_set = call!(s.effect, getParamSet);
    let mut set: OfxParamSetHandle = std::ptr::null_mut();
    // SAFETY: valid instance handle and out pointer.
    check(unsafe { get_set(handle, &mut set) }, "getParamSet")?;
    let reader = params::Reader { s: *s, set, time };
    let load = read_load(&reader)?;
    let seg = segment::SegmentParams {
        start: segment_start(s, handle, &reader)?,
        length: reader.int(c"segment_length")?,
        step: reader.int(c"frame_step")?,
    };
    // The model works on display-referred values: linear input (Natron's)
    // is encoded for it, sources fetched at other times too, and results
    // decoded back (`show`). What passes through is the host's own values.
    let linear = reader.int(c"colour")? == params::COLOUR_LINEAR;
    let to_model = |f: image::Frame| if linear { f.linear_to_display() } else { f };
    let model_source = match effect {
        // Generate reads only the size and format of what the host gave,
        // and a reduced render the size.
        Effect::Edit | Effect::Animate if linear && reduced.is_none() => {
            Cow::Owned(source.linear_to_display())
        }
        _ => Cow::Borrowed(&source),
    };
    let started = Cell::new(false);
    let report = |frac: f64| progress(s, handle, &started, frac);
    let final_render = !interactive(&args);
    let waiter = segment::Waiter {
        instance: handle as usize,
        // Final renders wait for their segment; interactive ones show the
        // source meanwhile.
        wait: final_render,
        progress: &report,
    };
    let out_args = Shown {
        s,
        handle,
        time,
        window,
        source: &source,
        // A thumbnail that cannot show a result shows the source: it is
        // no frame of the timeline.
        fail: fails_without_result(s, final_render) && !thumbnail,
        linear,
        thumbnail,
    };
    let pipe = match reduced {
        // Without a loaded pipeline there is no result to show.
        Some(r) => match segment::loaded(&load) {
            Some(pipe) => Ok(Some(pipe)),
            None => return show(&out_args, &mut out, r.no_result()),
        },
        None => segment::pipeline(&load, Some(&waiter)),
    };
    let pipe = match pipe {
        Ok(Some(pipe)) => pipe,
        Ok(None) => {
            if started.get() {
                end_progress(s, handle);
            }
            let status = if aborted(s, handle) {
                "CogVideoX: aborted"
            } else {
                "CogVideoX: loading the checkpoint"
            };
            return show(&out_args, &mut out, segment::Served::Source(status.into()));
        }
        Err(e) => {
            if started.get() {
                end_progress(s, handle);
            }
            let status = format!(
                "CogVideoX cannot load the checkpoint: {e} (log: {})",
                log::path().display()
            );
            return show(&out_args, &mut out, segment::Served::Source(status));
        }
    };
    let clips: Vec<OfxImageClipHandle> = [Some(out_clip), src_clip].into_iter().flatten().collect();
    let host_fps = host_fps(s, handle, &clips).unwrap_or(DEFAULT_HOST_FPS);
    let place = segment::place(&seg, &pipe, time, host_fps, operation(effect))?;
    // Source frames at other times, released as soon as they are copied.
    let fetch_at = |t: f64| match image::HostImage::fetch(*s, src_clip?, t) {
        Ok(Some(img)) => Some(to_model(img.to_frame())),
        Ok(None) => None,
        Err(e) => {
            log::line(&format!("no source image at {t}: {e}"));
            None
        }
    };
    let fetch: Option<&dyn Fn(f64) -> Option<image::Frame>> = s.temporal.then_some(&fetch_at);
    // The speed and LoRA adapters: a LoRA file that cannot be used fails
    // here, with no job.
    let sampling = (
        reader.int(c"steps")?,
        reader.int(c"width")?,
        reader.int(c"height")?,
    );
    let guidance = reader.double(c"guidance")? as f32;
    let model = model_settings::read(&reader).and_then(|ms| {
        model_settings::resolve(&ms, &pipe, sampling, guidance, effect == Effect::Edit)
    });
    let served = match (effect, model) {
        (_, Err(e)) => place
            .is_some()
            .then(|| segment::Served::Source(segment::failed(&e))),
        (Effect::Animate, Ok(model)) => {
            let first = source_frame(s, handle, &reader)?;
            let settings = read_animate(&reader, load, seg.start, first, model)?;
            animate::render(
                &settings,
                &pipe,
                time,
                place.as_ref(),
                &model_source,
                &waiter,
                fetch,
                reduced,
            )
        }
        (Effect::Edit, Ok(model)) => {
            let settings = read_edit(&reader, load, seg.start, model)?;
            place.map(|place| {
                edit::render(
                    &settings,
                    &pipe,
                    &place,
                    &model_source,
                    &waiter,
                    fetch,
                    reduced,
                )
            })
        }
        (Effect::Generate, Ok(model)) => {
            let settings = read_generate(&reader, load, seg.start, model)?;
            place.map(|place| {
                generate::render(&settings, &pipe, &place, &model_source, &waiter, reduced)
            })
        }
    };
    if started.get() {
        end_progress(s, handle);
    }
    let Some(served) = served else {
        // Outside the segment the effect is the identity: the source is
        // the result there.
        ofx::show_state(s, handle, kOfxMessageMessage, "", "outside the segment");
        out.write(&source, window)?;
        return Ok(kOfxStatOK);
    };
    show(&out_args, &mut out, served)
}

/// Whether a render that cannot serve its result must fail rather than
/// pass the source through: a final render in a host that gives every
/// frame it needs (temporal access: Resolve, Natron), where the source
/// would be kept as the result (Resolve's render and Smart caches), and
/// every render in Natron, which caches interactive ones too, by a hash
/// of the parameters, until one changes (`Engine/Node.cpp`,
/// `EffectInstance.cpp`). Without temporal access (MLT) a first pass
/// collects the segment and shows the source, as documented.
fn fails_without_result(s: &Suites, final_render: bool) -> bool {
    s.natron || (s.temporal && final_render)
}

/// The source frames a render at the time in `args` reads: the current one,
/// and every model frame of its segment (Edit) or the image to animate
/// (Animate) unless the instance holds them already. `None` when the
/// checkpoint cannot be loaded, or while it loads outside Natron (the
/// host's default then applies and the render says what is wrong).
fn frames_needed(
    s: &Suites,
    effect: Effect,
    handle: OfxImageEffectHandle,
    args: Props,
) -> Result<Option<Vec<f64>>, String> {
    let time = args.get_double(kOfxPropTime, 0)?;
    let get_set = call!(s.effect, getParamSet);
    let mut set: OfxParamSetHandle = std::ptr::null_mut();
    // SAFETY: valid instance handle and out pointer.
    check(unsafe { get_set(handle, &mut set) }, "getParamSet")?;
    let reader = params::Reader { s: *s, set, time };
    // Starts loading if need be. Natron caches this answer and renders only
    // the frames it declares (`Engine/EffectInstance.cpp`; shared reference
    // section 11): an answer given while the checkpoint loads would stick,
    // so there it waits for the load (until an abort), as Natron's final
    // renders do; elsewhere it does not wait.
    let abort = |_: f64| aborted(s, handle);
    let waiter = segment::Waiter {
        instance: handle as usize,
        wait: s.natron,
        progress: &abort,
    };
    let Ok(Some(pipe)) = segment::pipeline(&read_load(&reader)?, Some(&waiter)) else {
        return Ok(None);
    };
    let seg = segment::SegmentParams {
        start: segment_start(s, handle, &reader)?,
        length: reader.int(c"segment_length")?,
        step: reader.int(c"frame_step")?,
    };
    let clips = [
        clip(s, handle, kOfxImageEffectOutputClipName)?,
        clip(s, handle, kOfxImageEffectSimpleSourceClipName)?,
    ];
    let host_fps = host_fps(s, handle, &clips).unwrap_or(DEFAULT_HOST_FPS);
    let place = segment::place(&seg, &pipe, time, host_fps, operation(effect))?;
    let mut times = vec![time];
    let model = segment::ModelKey::new(&read_load(&reader)?, &pipe);
    let cache_version = reader.int(c"cache_version")?;
    // Frames already held are not asked for again (hosts such as Natron
    // render every frame a render needs before calling it).
    let owner = handle as usize;
    match effect {
        Effect::Animate => {
            let source_frame = source_frame(s, handle, &reader)?;
            if (place.is_some() || time == source_frame as f64)
                && !animate::image_held(owner, &model, source_frame, cache_version)
            {
                times.push(source_frame as f64);
            }
        }
        _ => {
            if let Some(place) = place {
                let held = segment::SegmentParams {
                    length: place.length as i32,
                    step: place.step,
                    ..seg
                };
                if !edit::segment_held(owner, &model, &held, cache_version) {
                    times.extend(
                        (0..place.length).map(|k| (seg.start + k as i32 * place.step) as f64),
                    );
                }
            }
        }
    }
    Ok(Some(times))
}

/// The library's operation an effect runs, for its default segment length.
fn operation(effect: Effect) -> u32 {
    match effect {
        Effect::Edit => capi::OPERATION_EDIT,
        Effect::Animate => capi::OPERATION_ANIMATE,
        Effect::Generate => capi::OPERATION_GENERATE,
    }
}

/// `times` as sorted inclusive ranges, consecutive whole frames merged.
fn ranges(times: &[f64]) -> Vec<(f64, f64)> {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    t.dedup();
    let mut out: Vec<(f64, f64)> = Vec::new();
    for v in t {
        match out.last_mut() {
            Some((_, b)) if v - *b == 1.0 => *b = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// Where a render's output goes, and how it ends when it has no result.
struct Shown<'a> {
    s: &'a Suites,
    handle: OfxImageEffectHandle,
    time: f64,
    window: [i32; 4],
    source: &'a image::Frame,
    /// No result is a failure (`fails_without_result`).
    fail: bool,
    /// The host's values are linear: results are decoded to it.
    linear: bool,
    /// A thumbnail: the instance's status is left as it is.
    thumbnail: bool,
}

/// Writes what a render serves and posts its state when it changed. Without
/// a result: the source with the status, or `kOfxStatFailed` with the
/// status as an error message where a placeholder would be kept as the
/// result. An aborted render's output is discarded by the host: the source
/// with OK.
fn show(
    o: &Shown,
    out: &mut image::HostImage,
    served: segment::Served,
) -> Result<OfxStatus, String> {
    match served {
        segment::Served::Result(f) => {
            if !o.thumbnail {
                // Which result (exact, fast, preview) and what its step
                // cache saved.
                let status = model_settings::status(o.handle as usize);
                ofx::show_state(o.s, o.handle, kOfxMessageMessage, "", &status);
            }
            // Decoded at the host's depth (float: no 16-bit step between).
            let f = if o.linear {
                f.to_format(out.format).display_to_linear()
            } else {
                f
            };
            out.write(&f, o.window)?;
            Ok(kOfxStatOK)
        }
        segment::Served::Source(status) => {
            let aborted = status.ends_with("aborted");
            let failed = status.contains("failed") || status.contains("cannot");
            let fail = o.fail && !aborted;
            let kind = if failed || fail {
                kOfxMessageError
            } else {
                kOfxMessageMessage
            };
            let text = if fail && !failed {
                format!("{status} (no result yet: this frame is not rendered)")
            } else {
                status.clone()
            };
            if o.thumbnail {
                log::line(&format!("thumbnail at {}: {status}", o.time));
                out.write(o.source, o.window)?;
                return Ok(kOfxStatOK);
            }
            ofx::show_state(o.s, o.handle, kind, &text, &text);
            if fail {
                log::line(&format!("frame {}: failed: {text}", o.time));
                return Ok(kOfxStatFailed);
            }
            log::line(&format!("frame {}: {status}", o.time));
            out.write(o.source, o.window)?;
            Ok(kOfxStatOK)
        }
    }
}

/// The host's frame rate: the effect's (Resolve's Fusion page sets only
/// that one), else a clip's; `None` when the host reports none.
fn host_fps(s: &Suites, handle: OfxImageEffectHandle, clips: &[OfxImageClipHandle]) -> Option<f64> {
    let mut sets = vec![effect_props(s, handle).ok()];
    for &c in clips {
        let mut h: OfxPropertySetHandle = std::ptr::null_mut();
        let get = s.effect.clipGetPropertySet?;
        // SAFETY: valid clip handle and out pointer.
        let ok = unsafe { get(c, &mut h) } == kOfxStatOK;
        sets.push(ok.then_some(Props { s: *s, h }));
    }
    sets.into_iter()
        .flatten()
        .filter_map(|p| p.get_double(kOfxImageEffectPropFrameRate, 0).ok())
        .find(|f| f.is_finite() && *f > 0.0)
}

/// Whether a render answers a user's interaction (scrubbing, playback) rather
/// than a final render: the render's interactive status, or the older
/// instance-wide flag some hosts set instead.
fn interactive(args: &Props) -> bool {
    [
        kOfxImageEffectPropInteractiveRenderStatus,
        kOfxPropIsInteractive,
    ]
    .iter()
    .any(|p| args.get_int(p, 0).unwrap_or(0) != 0)
}

/// Reports progress; true when the host wants the render stopped.
/// The bar is started on the first report, so serving cached results shows
/// none. Only `abort()` stops a render: `progressUpdate`'s `ReplyNo` also
/// means "no bar yet" (Natron's GUI creates it on its main thread a moment
/// after `progressStart` and answers false until then,
/// `Gui/ProgressPanel.cpp`, `ProgressPanel::updateTask`).
fn progress(s: &Suites, handle: OfxImageEffectHandle, started: &Cell<bool>, frac: f64) -> bool {
    if let Some(p) = s.progress {
        // SAFETY: valid instance handle.
        unsafe {
            if !started.replace(true)
                && let Some(start) = p.progressStart
            {
                start(handle.cast(), c"CogVideoX".as_ptr());
            }
            if let Some(update) = p.progressUpdate {
                update(handle.cast(), frac);
            }
        }
    }
    aborted(s, handle)
}

fn aborted(s: &Suites, handle: OfxImageEffectHandle) -> bool {
    // SAFETY: valid instance handle.
    s.effect
        .abort
        .is_some_and(|abort| unsafe { abort(handle) } != 0)
}

fn end_progress(s: &Suites, handle: OfxImageEffectHandle) {
    if let Some(end) = s.progress.and_then(|p| p.progressEnd) {
        // SAFETY: valid instance handle.
        unsafe { end(handle.cast()) };
    }
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn frames_needed_merge_into_ranges_of_consecutive_frames() {
        // Frame step 1 from 10, the current frame inside.
        let t: Vec<f64> = [12.0].into_iter().chain((10..15).map(f64::from)).collect();
        assert_eq!(ranges(&t), vec![(10.0, 14.0)]);
        // Frame step 3, the current frame between model frames.
        assert_eq!(
            ranges(&[4.0, 0.0, 3.0, 6.0]),
            vec![(0.0, 0.0), (3.0, 4.0), (6.0, 6.0)]
        );
        assert_eq!(ranges(&[2.5]), vec![(2.5, 2.5)]);
    }
}
