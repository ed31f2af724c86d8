//! Thin safe-ish wrappers over the host's OpenFX suites.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::{Mutex, RwLock};

pub use openfx::sys::generic::core::*;
pub use openfx::sys::generic::property::*;
pub use openfx::sys::image_effect_v1::image_effect::*;
pub use openfx::sys::image_effect_v1::message::*;
pub use openfx::sys::image_effect_v1::param::*;
pub use openfx::sys::image_effect_v1::progress::*;

/// The suites fetched at load; host-owned tables valid while the binary is
/// loaded.
#[derive(Clone, Copy)]
pub struct Suites {
    pub prop: &'static OfxPropertySuiteV1,
    pub effect: &'static OfxImageEffectSuiteV1,
    pub param: &'static OfxParameterSuiteV1,
    pub message: Option<&'static OfxMessageSuiteV2>,
    pub progress: Option<&'static OfxProgressSuiteV1>,
    /// Whether the host can give source images at other times than the
    /// one rendered (MLT says it cannot, and returns the current image).
    pub temporal: bool,
    /// Natron (`NatronOfxHostIsNatron`): it caches every frame a render
    /// returns with `kOfxStatOK`, interactive ones included.
    pub natron: bool,
}

// SAFETY: the suites are immutable tables of functions the host lets any
// thread call.
unsafe impl Send for Suites {}
// SAFETY: as above.
unsafe impl Sync for Suites {}

static HOST: RwLock<usize> = RwLock::new(0);
static SUITES: RwLock<Option<Suites>> = RwLock::new(None);

pub fn set_host(host: *const OfxHost) {
    *HOST.write().unwrap_or_else(|e| e.into_inner()) = host as usize;
}

/// Fetches the suites from the host given to `setHost`. Idempotent: hosts
/// call Load many times per process.
pub fn load() -> Result<(), String> {
    let host = *HOST.read().unwrap_or_else(|e| e.into_inner()) as *const OfxHost;
    if host.is_null() {
        return Err("the host called Load before setHost".into());
    }
    // SAFETY: the host pointer stays valid while the binary is loaded.
    let h = unsafe { &*host };
    let fetch = h.fetchSuite.ok_or("the host has no fetchSuite")?;
    let get = |name: &CStr, v: c_int| {
        // SAFETY: a plain host call with a valid name.
        unsafe { fetch(h.host, name.as_ptr(), v) }
    };
    macro_rules! suite {
        ($name:expr, $v:expr, $ty:ty) => {{
            let p = get($name, $v) as *const $ty;
            // SAFETY: the host returns a table of this layout, or NULL.
            unsafe { p.as_ref() }
        }};
    }
    let prop = suite!(kOfxPropertySuite, 1, OfxPropertySuiteV1).ok_or("no property suite")?;
    let mut temporal = 0;
    if let Some(get) = prop.propGetInt {
        // SAFETY: the host's own property set; an absent property leaves 0.
        unsafe {
            get(
                h.host,
                kOfxImageEffectPropTemporalClipAccess.as_ptr(),
                0,
                &mut temporal,
            )
        };
    }
    let mut natron = 0;
    if let Some(get) = prop.propGetInt {
        // SAFETY: as above.
        unsafe { get(h.host, c"NatronOfxHostIsNatron".as_ptr(), 0, &mut natron) };
    }
    // Natron's own name, for a build without its extension property (it
    // may also give a plugin another name, but then sets the property:
    // openfx-misc `README-hosts.txt`).
    let mut name: *mut c_char = std::ptr::null_mut();
    if let Some(get) = prop.propGetString {
        // SAFETY: as above; the host owns the string.
        unsafe { get(h.host, kOfxPropName.as_ptr(), 0, &mut name) };
    }
    if !name.is_null() {
        // SAFETY: a NUL-terminated host string, read at once.
        let name = unsafe { CStr::from_ptr(name) };
        if name.to_bytes().starts_with(b"fr.inria.Natron") {
            natron = 1;
        }
    }
    let suites = Suites {
        prop,
        effect: suite!(kOfxImageEffectSuite, 1, OfxImageEffectSuiteV1)
            .ok_or("no image effect suite")?,
        param: suite!(kOfxParameterSuite, 1, OfxParameterSuiteV1).ok_or("no parameter suite")?,
        message: suite!(kOfxMessageSuite, 2, OfxMessageSuiteV2),
        progress: suite!(kOfxProgressSuite, 1, OfxProgressSuiteV1),
        temporal: temporal != 0,
        natron: natron != 0,
    };
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        crate::log::line(if suites.temporal {
            "the host has temporal access: source frames are fetched"
        } else {
            "the host has no temporal access: source frames are collected as rendered"
        })
    });
    *SUITES.write().unwrap_or_else(|e| e.into_inner()) = Some(suites);
    Ok(())
}

pub fn suites() -> Result<Suites, String> {
    SUITES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .ok_or_else(|| "an action arrived before Load".to_string())
}

/// Turns a host status into a `Result`, naming what failed.
pub fn check(st: OfxStatus, what: &str) -> Result<(), String> {
    if st == kOfxStatOK {
        Ok(())
    } else {
        Err(format!("{what} failed with {}", status_name(st)))
    }
}

/// A property call's status, naming the property on failure.
fn prop_check(st: OfxStatus, (api, name, i): (&str, &CStr, c_int)) -> Result<(), String> {
    if st == kOfxStatOK {
        return Ok(());
    }
    check(st, &format!("{api}({}[{i}])", name.to_string_lossy()))
}

/// A status's name in the standard (`kOfxStatErrUnknown`), with its number.
pub fn status_name(st: OfxStatus) -> String {
    const NAMES: [(OfxStatus, &str); 15] = [
        (kOfxStatOK, "kOfxStatOK"),
        (kOfxStatFailed, "kOfxStatFailed"),
        (kOfxStatErrFatal, "kOfxStatErrFatal"),
        (kOfxStatErrUnknown, "kOfxStatErrUnknown"),
        (
            kOfxStatErrMissingHostFeature,
            "kOfxStatErrMissingHostFeature",
        ),
        (kOfxStatErrUnsupported, "kOfxStatErrUnsupported"),
        (kOfxStatErrExists, "kOfxStatErrExists"),
        (kOfxStatErrFormat, "kOfxStatErrFormat"),
        (kOfxStatErrMemory, "kOfxStatErrMemory"),
        (kOfxStatErrBadHandle, "kOfxStatErrBadHandle"),
        (kOfxStatErrBadIndex, "kOfxStatErrBadIndex"),
        (kOfxStatErrValue, "kOfxStatErrValue"),
        (kOfxStatReplyYes, "kOfxStatReplyYes"),
        (kOfxStatReplyNo, "kOfxStatReplyNo"),
        (kOfxStatReplyDefault, "kOfxStatReplyDefault"),
    ];
    let name = NAMES
        .iter()
        .find(|(s, _)| *s == st)
        .map_or("an unknown status", |(_, n)| n);
    format!("{name} ({st})")
}

/// A describe-time property the plugin can do without: a host that does
/// not define it on this object (HostSupport refuses any property outside
/// its spec, `ofxhPropertySuite.cpp` `propSet`: `kOfxStatErrUnknown`) gets
/// a warning in the log naming it, and the describe goes on.
pub fn optional(what: &str, r: Result<(), String>) {
    if let Err(e) = r {
        crate::log::line(&format!(
            "warning: {what}: {e} (optional, left to the host)"
        ));
    }
}

/// A property set handle with typed accessors.
#[derive(Clone, Copy)]
pub struct Props {
    pub s: Suites,
    pub h: OfxPropertySetHandle,
}

macro_rules! call {
    ($table:expr, $f:ident) => {
        $table
            .$f
            .ok_or_else(|| format!("the host lacks {}", stringify!($f)))?
    };
}
pub(crate) use call;

impl Props {
    pub fn set_str(&self, name: &CStr, i: c_int, v: &CStr) -> Result<(), String> {
        let f = call!(self.s.prop, propSetString);
        // SAFETY: valid handle and strings; the host copies the value.
        prop_check(
            unsafe { f(self.h, name.as_ptr(), i, v.as_ptr()) },
            ("propSetString", name, i),
        )
    }

    pub fn set_int(&self, name: &CStr, i: c_int, v: c_int) -> Result<(), String> {
        let f = call!(self.s.prop, propSetInt);
        // SAFETY: valid handle and name.
        prop_check(
            unsafe { f(self.h, name.as_ptr(), i, v) },
            ("propSetInt", name, i),
        )
    }

    pub fn set_double(&self, name: &CStr, i: c_int, v: f64) -> Result<(), String> {
        let f = call!(self.s.prop, propSetDouble);
        // SAFETY: valid handle and name.
        prop_check(
            unsafe { f(self.h, name.as_ptr(), i, v) },
            ("propSetDouble", name, i),
        )
    }

    pub fn get_str(&self, name: &CStr, i: c_int) -> Result<String, String> {
        let f = call!(self.s.prop, propGetString);
        let mut v: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid handle, name and out pointer.
        prop_check(
            unsafe { f(self.h, name.as_ptr(), i, &mut v) },
            ("propGetString", name, i),
        )?;
        if v.is_null() {
            return Ok(String::new());
        }
        // SAFETY: the host returns a NUL-terminated string it owns.
        Ok(unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
    }

    pub fn get_int(&self, name: &CStr, i: c_int) -> Result<c_int, String> {
        let f = call!(self.s.prop, propGetInt);
        let mut v = 0;
        // SAFETY: valid handle, name and out pointer.
        prop_check(
            unsafe { f(self.h, name.as_ptr(), i, &mut v) },
            ("propGetInt", name, i),
        )?;
        Ok(v)
    }

    pub fn get_double(&self, name: &CStr, i: c_int) -> Result<f64, String> {
        let f = call!(self.s.prop, propGetDouble);
        let mut v = 0.0;
        // SAFETY: valid handle, name and out pointer.
        prop_check(
            unsafe { f(self.h, name.as_ptr(), i, &mut v) },
            ("propGetDouble", name, i),
        )?;
        Ok(v)
    }

    pub fn get_ptr(&self, name: &CStr, i: c_int) -> Result<*mut c_void, String> {
        let f = call!(self.s.prop, propGetPointer);
        let mut v = std::ptr::null_mut();
        // SAFETY: valid handle, name and out pointer.
        check(
            unsafe { f(self.h, name.as_ptr(), i, &mut v) },
            "propGetPointer",
        )?;
        Ok(v)
    }

    pub fn get_ints<const N: usize>(&self, name: &CStr) -> Result<[c_int; N], String> {
        let f = call!(self.s.prop, propGetIntN);
        let mut v = [0; N];
        // SAFETY: valid handle, name and room for N values.
        check(
            unsafe { f(self.h, name.as_ptr(), N as c_int, v.as_mut_ptr()) },
            "propGetIntN",
        )?;
        Ok(v)
    }
}

/// Posts `text` on the effect (the host shows or logs it). `kind` is one of
/// the `kOfxMessage*` types; an empty text clears the message.
pub fn persistent_message(s: &Suites, effect: OfxImageEffectHandle, kind: &CStr, text: &str) {
    let Some(m) = s.message else { return };
    let text = CString::new(text.replace('\0', " ")).unwrap_or_default();
    // SAFETY: valid effect handle; user text is passed as an argument of a
    // literal "%s" format, never as the format.
    unsafe {
        if text.is_empty() {
            if let Some(clear) = m.clearPersistentMessage {
                clear(effect.cast());
            }
        } else if let Some(set) = m.setPersistentMessage {
            set(
                effect.cast(),
                kind.as_ptr(),
                c"cogvideox".as_ptr(),
                c"%s".as_ptr(),
                text.as_ptr(),
            );
        }
    }
}

/// What each instance shows now (its handle's address): kind and text.
static SHOWN: Mutex<Vec<(usize, CString, String)>> = Mutex::new(Vec::new());

/// Posts `text` as the instance's persistent message (empty: cleared) and
/// its status, only when they change: Natron turns every message posted
/// from a render thread into an Error Log entry (`OfxImageEffectInstance.cpp`,
/// `setPersistentMessage`), so one per render would flood it.
pub fn show_state(s: &Suites, effect: OfxImageEffectHandle, kind: &CStr, text: &str, status: &str) {
    {
        let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
        let me = effect as usize;
        let now = (kind.to_owned(), format!("{text}\u{0}{status}"));
        match shown.iter_mut().find(|(h, ..)| *h == me) {
            Some((_, k, t)) if *k == now.0 && *t == now.1 => return,
            Some(entry) => *entry = (me, now.0, now.1),
            None => shown.push((me, now.0, now.1)),
        }
    }
    persistent_message(s, effect, kind, text);
    set_status(s, effect, status);
}

/// Forgets what a destroyed instance showed (a new one may get its address).
pub fn forget_shown(effect: OfxImageEffectHandle) {
    SHOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(h, ..)| *h != effect as usize);
}

/// Sets an integer, boolean or choice parameter (InstanceChanged only).
pub fn set_param_int(
    s: &Suites,
    effect: OfxImageEffectHandle,
    name: &CStr,
    v: c_int,
) -> Result<(), String> {
    let get_set = call!(s.effect, getParamSet);
    let get = call!(s.param, paramGetHandle);
    let set = call!(s.param, paramSetValue);
    let mut params: OfxParamSetHandle = std::ptr::null_mut();
    let mut h: OfxParamHandle = std::ptr::null_mut();
    // SAFETY: valid instance handle and out pointers; an integer parameter
    // takes one int.
    unsafe {
        check(get_set(effect, &mut params), "getParamSet")?;
        check(
            get(params, name.as_ptr(), &mut h, std::ptr::null_mut()),
            &format!("parameter {}", name.to_string_lossy()),
        )?;
        check(set(h, v), "paramSetValue")
    }
}

/// Shows `text` in the effect's read-only `status` parameter. The standard
/// allows setting values only outside renders, but the status must follow
/// the render that finds it out; hosts that refuse keep the last value (the
/// persistent message and the log say the same), so failures are ignored.
pub fn set_status(s: &Suites, effect: OfxImageEffectHandle, text: &str) {
    let (Some(get_set), Some(get), Some(set)) = (
        s.effect.getParamSet,
        s.param.paramGetHandle,
        s.param.paramSetValue,
    ) else {
        return;
    };
    let text = CString::new(text.replace('\0', " ")).unwrap_or_default();
    let mut params: OfxParamSetHandle = std::ptr::null_mut();
    let mut h: OfxParamHandle = std::ptr::null_mut();
    // SAFETY: valid instance handle and out pointers; a string parameter
    // takes one `const char *`, which the host copies.
    unsafe {
        if get_set(effect, &mut params) == kOfxStatOK
            && get(params, c"status".as_ptr(), &mut h, std::ptr::null_mut()) == kOfxStatOK
        {
            set(h, text.as_ptr());
        }
    }
}
