//! The trace switch: with `COGVIDEOX_OFX_TRACE` set (to anything but `0`
//! or empty) every action is logged with its inputs and its status, and
//! every image the host gives with its bounds, so that a user of a host we
//! cannot run (Resolve, Natron) can send us what their host does.

use std::ffi::{CStr, c_int};
use std::sync::OnceLock;

use crate::ofx::*;

/// Read once: hosts call actions from many threads.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("COGVIDEOX_OFX_TRACE").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

fn thread() -> String {
    let t = std::thread::current();
    match t.name() {
        Some(n) => format!("{:?} {n}", t.id()),
        None => format!("{:?}", t.id()),
    }
}

/// The inputs an action's in-arguments may hold, those present only.
fn inputs(args: &Props) -> String {
    let mut out = Vec::new();
    let doubles = |name: &CStr, n: c_int| -> Option<String> {
        let v: Result<Vec<f64>, _> = (0..n).map(|i| args.get_double(name, i)).collect();
        v.ok().map(|v| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    let ints = |name: &CStr, n: c_int| -> Option<String> {
        let v: Result<Vec<c_int>, _> = (0..n).map(|i| args.get_int(name, i)).collect();
        v.ok().map(|v| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    let fields: [(&str, Option<String>); 12] = [
        ("time", doubles(kOfxPropTime, 1)),
        ("scale", doubles(kOfxImageEffectPropRenderScale, 2)),
        ("window", ints(kOfxImageEffectPropRenderWindow, 4)),
        ("range", doubles(kOfxImageEffectPropFrameRange, 2)),
        (
            "interactive",
            ints(kOfxImageEffectPropInteractiveRenderStatus, 1),
        ),
        ("is_interactive", ints(kOfxPropIsInteractive, 1)),
        (
            "sequential",
            ints(kOfxImageEffectPropSequentialRenderStatus, 1),
        ),
        ("draft", ints(kOfxImageEffectPropRenderQualityDraft, 1)),
        (
            "field",
            args.get_str(kOfxImageEffectPropFieldToRender, 0).ok(),
        ),
        ("context", args.get_str(kOfxImageEffectPropContext, 0).ok()),
        ("name", args.get_str(kOfxPropName, 0).ok()),
        ("reason", args.get_str(kOfxPropChangeReason, 0).ok()),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            out.push(format!("{k}={v}"));
        }
    }
    out.join(" ")
}

/// Logs an action as it arrives. `thumbnail` is the Source clip's
/// `kOfxImageClipPropThumbnail` (Resolve's thumbnail renders), where known.
pub fn action(
    effect: crate::Effect,
    action: &CStr,
    handle: OfxImageEffectHandle,
    args: Option<Props>,
    thumbnail: Option<c_int>,
) {
    let mut line = format!(
        "trace: {effect:?} {} instance {handle:?} thread {}",
        action.to_string_lossy(),
        thread()
    );
    if let Some(args) = args.filter(|a| !a.h.is_null()) {
        let i = inputs(&args);
        if !i.is_empty() {
            line.push(' ');
            line.push_str(&i);
        }
    }
    if let Some(t) = thumbnail {
        line.push_str(&format!(" thumbnail={t}"));
    }
    crate::log::line(&line);
}

/// Logs an action's status.
pub fn status(effect: crate::Effect, action: &CStr, handle: OfxImageEffectHandle, st: OfxStatus) {
    crate::log::line(&format!(
        "trace: {effect:?} {} instance {handle:?} returns {}",
        action.to_string_lossy(),
        status_name(st)
    ));
}

/// Logs an image the host gave.
pub fn image(time: f64, bounds: [i32; 4], row_bytes: isize, depth: &str, components: &str) {
    crate::log::line(&format!(
        "trace: image at time={time} bounds={},{},{},{} row_bytes={row_bytes} {depth} {components} thread {}",
        bounds[0],
        bounds[1],
        bounds[2],
        bounds[3],
        thread()
    ));
}
