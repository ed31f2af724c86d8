//! Parameter sets, parameters and the parameter suite. Values do not
//! animate: `AtTime` reads and writes the one value (the CogVideoX effects
//! declare every parameter non-animating). The variadic get/set functions
//! are the C shim's, which calls `layout`, `get` and `set` here.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ofx::*;
use super::props::{PropSet, Value, s, string};
use super::registry::{self, Kind};

pub struct ParamSet {
    pub props: Box<PropSet>,
    // Boxed: a parameter's address is its handle and must not move.
    #[allow(clippy::vec_box)]
    pub params: Mutex<Vec<Box<Param>>>,
    /// Descriptors may define parameters; instances may not.
    pub descriptor: bool,
    /// Parameters are defined with HostSupport's properties and no others
    /// ([`hostsupport_props`]).
    pub hostsupport: AtomicBool,
    /// Properties this host does not know on any parameter (refused as
    /// HostSupport refuses those outside its spec).
    pub refused: Mutex<Vec<&'static CStr>>,
}

impl ParamSet {
    pub fn new(descriptor: bool) -> Box<ParamSet> {
        let p = Box::new(ParamSet {
            props: PropSet::new("parameter set"),
            params: Mutex::new(Vec::new()),
            descriptor,
            hostsupport: AtomicBool::new(false),
            refused: Mutex::new(Vec::new()),
        });
        registry::add(p.handle() as usize, Kind::ParamSet);
        p
    }

    pub fn handle(&self) -> OfxParamSetHandle {
        self as *const ParamSet as OfxParamSetHandle
    }

    /// The parameters' names, in definition order.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().map(|p| p.name.clone()).collect()
    }

    /// Runs `f` on the parameter called `name`.
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&Param) -> R) -> Option<R> {
        self.lock().iter().find(|p| p.name == name).map(|p| f(p))
    }

    /// An instance's parameters, copied from a descriptor's with their
    /// defaults as values.
    pub fn instantiate(&self) -> Box<ParamSet> {
        let set = ParamSet::new(false);
        set.props.copy_from(&self.props);
        let mut params = set.lock();
        for d in self.lock().iter() {
            let p = Param::new(&d.name, &d.ty);
            p.props.copy_from(&d.props);
            let default = p.props.get(kOfxParamPropDefault).unwrap_or_default();
            let (kind, n) = layout_of(&p.ty);
            let value = if default.len() >= n as usize {
                default[..n as usize].to_vec()
            } else {
                (0..n).map(|_| zero(kind)).collect()
            };
            *p.value.lock().unwrap() = value;
            params.push(p);
        }
        drop(params);
        set
    }

    #[allow(clippy::vec_box)]
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<Param>>> {
        self.params.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ParamSet {
    fn drop(&mut self) {
        registry::remove(self.handle() as usize);
    }
}

pub struct Param {
    pub name: String,
    pub ty: String,
    pub props: Box<PropSet>,
    pub value: Mutex<Vec<Value>>,
}

impl Param {
    fn new(name: &str, ty: &str) -> Box<Param> {
        let p = Box::new(Param {
            name: name.to_string(),
            ty: ty.to_string(),
            props: PropSet::new(&format!("parameter {name}")),
            value: Mutex::new(Vec::new()),
        });
        registry::add(p.handle() as usize, Kind::Param);
        p
    }

    pub fn handle(&self) -> OfxParamHandle {
        self as *const Param as OfxParamHandle
    }

    pub fn get(&self) -> Vec<Value> {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the value as the user would (type-checked).
    pub fn set(&self, v: Vec<Value>) -> Result<(), String> {
        let (kind, n) = layout_of(&self.ty);
        let ok = v.len() == n as usize && v.iter().all(|x| is_kind(x, kind));
        if !ok {
            return Err(format!("{} ({}) cannot take {v:?}", self.name, self.ty));
        }
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = v;
        Ok(())
    }
}

impl Drop for Param {
    fn drop(&mut self) {
        registry::remove(self.handle() as usize);
    }
}

const INT: c_int = 0;
const DOUBLE: c_int = 1;
const STRING: c_int = 2;

/// How a parameter type's value travels through the variadic calls: the
/// kind of each component and how many there are.
fn layout_of(ty: &str) -> (c_int, c_int) {
    let is = |c: &CStr| ty.as_bytes() == c.to_bytes();
    if is(kOfxParamTypeInteger) || is(kOfxParamTypeBoolean) || is(kOfxParamTypeChoice) {
        (INT, 1)
    } else if is(kOfxParamTypeInteger2D) {
        (INT, 2)
    } else if is(kOfxParamTypeInteger3D) {
        (INT, 3)
    } else if is(kOfxParamTypeDouble) {
        (DOUBLE, 1)
    } else if is(kOfxParamTypeDouble2D) {
        (DOUBLE, 2)
    } else if is(kOfxParamTypeDouble3D) || is(kOfxParamTypeRGB) {
        (DOUBLE, 3)
    } else if is(kOfxParamTypeRGBA) {
        (DOUBLE, 4)
    } else if is(kOfxParamTypeString) || is(kOfxParamTypeCustom) || is(kOfxParamTypeStrChoice) {
        (STRING, 1)
    } else {
        // Push buttons, groups and pages hold no value.
        (INT, 0)
    }
}

fn zero(kind: c_int) -> Value {
    match kind {
        INT => Value::Int(0),
        DOUBLE => Value::Double(0.0),
        _ => Value::Str(CString::default()),
    }
}

fn is_kind(v: &Value, kind: c_int) -> bool {
    matches!(
        (v, kind),
        (Value::Int(_), INT) | (Value::Double(_), DOUBLE) | (Value::Str(_), STRING)
    )
}

const KNOWN_TYPES: &[&CStr] = &[
    kOfxParamTypeInteger,
    kOfxParamTypeDouble,
    kOfxParamTypeBoolean,
    kOfxParamTypeChoice,
    kOfxParamTypeStrChoice,
    kOfxParamTypeRGBA,
    kOfxParamTypeRGB,
    kOfxParamTypeDouble2D,
    kOfxParamTypeInteger2D,
    kOfxParamTypeDouble3D,
    kOfxParamTypeInteger3D,
    kOfxParamTypeString,
    kOfxParamTypeCustom,
    kOfxParamTypeGroup,
    kOfxParamTypePage,
    kOfxParamTypePushButton,
];

fn param_set<'a>(h: OfxParamSetHandle, what: &str) -> Option<&'a ParamSet> {
    if !registry::is(h as usize, Kind::ParamSet) {
        registry::violation(format!("{what}: bad parameter set handle {h:?}"));
        return None;
    }
    // SAFETY: registered handles point to live, boxed parameter sets.
    Some(unsafe { &*(h as *const ParamSet) })
}

fn param<'a>(h: OfxParamHandle, what: &str) -> Option<&'a Param> {
    if !registry::is(h as usize, Kind::Param) {
        registry::violation(format!("{what}: bad parameter handle {h:?}"));
        return None;
    }
    // SAFETY: registered handles point to live, boxed parameters.
    Some(unsafe { &*(h as *const Param) })
}

unsafe extern "C" fn param_define(
    set: OfxParamSetHandle,
    ty: *const c_char,
    name: *const c_char,
    out: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(set) = param_set(set, "paramDefine") else {
        return kOfxStatErrBadHandle;
    };
    if ty.is_null() || name.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: NUL-terminated strings.
    let (ty, name) = unsafe { (CStr::from_ptr(ty), CStr::from_ptr(name)) };
    if !set.descriptor {
        registry::violation(format!("paramDefine({name:?}) on an instance"));
        return kOfxStatErrBadHandle;
    }
    if !KNOWN_TYPES.contains(&ty) {
        return kOfxStatErrUnknown;
    }
    let name = name.to_string_lossy().into_owned();
    let mut params = set.lock();
    if params.iter().any(|p| p.name == name) {
        return kOfxStatErrExists;
    }
    let p = Param::new(&name, &ty.to_string_lossy());
    p.props.set(kOfxPropType, vec![s(kOfxTypeParameter)]);
    p.props.set(kOfxPropName, vec![string(&name)]);
    p.props.set(kOfxParamPropType, vec![s(ty)]);
    p.props.set(kOfxPropLabel, vec![string(&name)]);
    p.props.set(kOfxParamPropScriptName, vec![string(&name)]);
    let (kind, n) = layout_of(&p.ty);
    if n > 0 {
        p.props
            .set(kOfxParamPropDefault, (0..n).map(|_| zero(kind)).collect());
    }
    if set.hostsupport.load(Ordering::SeqCst) {
        hostsupport_props(&p.props, ty, n);
        for r in set.refused.lock().unwrap().iter() {
            p.props.remove(r);
        }
        p.props.close();
    }
    if !out.is_null() {
        // SAFETY: the plugin's out pointer.
        unsafe { *out = p.props.handle() };
    }
    params.push(p);
    kOfxStatOK
}

/// The properties HostSupport gives a parameter descriptor of type `ty`
/// (with `n` values), as its `Param::Descriptor` constructor and
/// `addStandardParamProps` do (NatronGitHub/openfx
/// `HostSupport/src/ofxhParam.cpp`, lines 240-470; the Natron and Nuke
/// extensions left out): the universal ones, value properties only for
/// types with a value (`if (propType != Property::eNone)
/// addValueParamProps`, line 384: none for push buttons, groups, pages),
/// numeric ranges, string and choice properties.
fn hostsupport_props(p: &PropSet, ty: &CStr, n: c_int) {
    let int = |v| vec![Value::Int(v)];
    let string = |v: &str| vec![super::props::string(v)];
    p.set(kOfxParamPropSecret, int(0));
    p.set(kOfxParamPropHint, string(""));
    p.set(kOfxParamPropParent, string(""));
    p.set(kOfxParamPropEnabled, int(1));
    p.set(kOfxParamPropDataPtr, vec![Value::Ptr(0)]);
    p.set(kOfxPropShortLabel, string(""));
    p.set(kOfxPropLongLabel, string(""));
    p.set(
        kOfxPropIcon,
        vec![string("")[0].clone(), string("")[0].clone()],
    );
    let is = |c: &CStr| ty == c;
    let group_or_page = is(kOfxParamTypeGroup) || is(kOfxParamTypePage);
    if n > 0 {
        p.set(kOfxParamPropIsAnimating, int(0));
        p.set(kOfxParamPropIsAutoKeying, int(0));
        p.set(kOfxParamPropPersistant, int(1));
        p.set(kOfxParamPropEvaluateOnChange, int(1));
        p.set(kOfxParamPropCanUndo, int(1));
        p.set(
            kOfxParamPropCacheInvalidation,
            vec![s(kOfxParamInvalidateValueChange)],
        );
        let animates = !(is(kOfxParamTypeCustom)
            || is(kOfxParamTypeString)
            || is(kOfxParamTypeBoolean)
            || is(kOfxParamTypeChoice));
        p.set(kOfxParamPropAnimates, int(animates as i32));
    }
    if is(kOfxParamTypeString) {
        p.set(
            kOfxParamPropStringMode,
            vec![s(kOfxParamStringIsSingleLine)],
        );
        p.set(kOfxParamPropStringFilePathExists, int(1));
    }
    let ints = [
        kOfxParamTypeInteger,
        kOfxParamTypeInteger2D,
        kOfxParamTypeInteger3D,
    ];
    let doubles = [
        kOfxParamTypeDouble,
        kOfxParamTypeDouble2D,
        kOfxParamTypeDouble3D,
        kOfxParamTypeRGB,
        kOfxParamTypeRGBA,
    ];
    if ints.iter().any(|t| is(t)) {
        for (prop, v) in [
            (kOfxParamPropDisplayMin, i32::MIN),
            (kOfxParamPropDisplayMax, i32::MAX),
            (kOfxParamPropMin, i32::MIN),
            (kOfxParamPropMax, i32::MAX),
        ] {
            p.set(prop, (0..n).map(|_| Value::Int(v)).collect());
        }
    }
    if doubles.iter().any(|t| is(t)) {
        for (prop, v) in [
            (kOfxParamPropDisplayMin, -f64::MAX),
            (kOfxParamPropDisplayMax, f64::MAX),
            (kOfxParamPropMin, -f64::MAX),
            (kOfxParamPropMax, f64::MAX),
        ] {
            p.set(prop, (0..n).map(|_| Value::Double(v)).collect());
        }
        p.set(kOfxParamPropIncrement, vec![Value::Double(1.0)]);
        p.set(kOfxParamPropDigits, int(2));
        p.set(kOfxParamPropDoubleType, vec![s(kOfxParamDoubleTypePlain)]);
        p.set(
            kOfxParamPropDefaultCoordinateSystem,
            vec![s(kOfxParamCoordinatesCanonical)],
        );
    }
    if is(kOfxParamTypeDouble) {
        p.set(kOfxParamPropShowTimeMarker, int(0));
    }
    if !group_or_page {
        p.set(kOfxParamPropInteractV1, vec![Value::Ptr(0)]);
        p.set(
            kOfxParamPropInteractSize,
            vec![Value::Double(0.0), Value::Double(0.0)],
        );
        p.set(kOfxParamPropInteractSizeAspect, vec![Value::Double(1.0)]);
        p.set(
            kOfxParamPropInteractMinimumSize,
            vec![Value::Double(10.0), Value::Double(10.0)],
        );
        p.set(
            kOfxParamPropInteractPreferedSize,
            vec![Value::Int(10), Value::Int(10)],
        );
    }
    if is(kOfxParamTypeChoice) {
        p.set(kOfxParamPropChoiceOption, vec![]);
    }
}

unsafe extern "C" fn param_get_handle(
    set: OfxParamSetHandle,
    name: *const c_char,
    out: *mut OfxParamHandle,
    props: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(set) = param_set(set, "paramGetHandle") else {
        return kOfxStatErrBadHandle;
    };
    if name.is_null() || out.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    let found = set
        .lock()
        .iter()
        .find(|p| p.name == name)
        .map(|p| (p.handle(), p.props.handle()));
    let Some((h, ph)) = found else {
        return kOfxStatErrUnknown;
    };
    // SAFETY: the plugin's out pointers.
    unsafe {
        *out = h;
        if !props.is_null() {
            *props = ph;
        }
    }
    kOfxStatOK
}

unsafe extern "C" fn param_set_get_property_set(
    set: OfxParamSetHandle,
    out: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(set) = param_set(set, "paramSetGetPropertySet") else {
        return kOfxStatErrBadHandle;
    };
    if out.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: the plugin's out pointer.
    unsafe { *out = set.props.handle() };
    kOfxStatOK
}

unsafe extern "C" fn param_get_property_set(
    h: OfxParamHandle,
    out: *mut OfxPropertySetHandle,
) -> OfxStatus {
    let Some(p) = param(h, "paramGetPropertySet") else {
        return kOfxStatErrBadHandle;
    };
    if out.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: the plugin's out pointer.
    unsafe { *out = p.props.handle() };
    kOfxStatOK
}

unsafe extern "C" fn param_get_num_keys(h: OfxParamHandle, n: *mut c_uint) -> OfxStatus {
    if param(h, "paramGetNumKeys").is_none() {
        return kOfxStatErrBadHandle;
    }
    if n.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: the plugin's out pointer.
    unsafe { *n = 0 };
    kOfxStatOK
}

unsafe extern "C" fn param_get_key_time(h: OfxParamHandle, _n: c_uint, _t: *mut f64) -> OfxStatus {
    if param(h, "paramGetKeyTime").is_none() {
        return kOfxStatErrBadHandle;
    }
    kOfxStatErrBadIndex
}

unsafe extern "C" fn param_get_key_index(
    h: OfxParamHandle,
    _t: f64,
    _dir: c_int,
    _i: *mut c_int,
) -> OfxStatus {
    if param(h, "paramGetKeyIndex").is_none() {
        return kOfxStatErrBadHandle;
    }
    kOfxStatFailed
}

unsafe extern "C" fn param_delete_key(h: OfxParamHandle, _t: f64) -> OfxStatus {
    if param(h, "paramDeleteKey").is_none() {
        return kOfxStatErrBadHandle;
    }
    kOfxStatErrBadIndex
}

unsafe extern "C" fn param_delete_all_keys(h: OfxParamHandle) -> OfxStatus {
    if param(h, "paramDeleteAllKeys").is_none() {
        return kOfxStatErrBadHandle;
    }
    kOfxStatOK
}

unsafe extern "C" fn param_copy(
    to: OfxParamHandle,
    from: OfxParamHandle,
    _offset: f64,
    _range: *const OfxRangeD,
) -> OfxStatus {
    let (Some(to), Some(from)) = (param(to, "paramCopy"), param(from, "paramCopy")) else {
        return kOfxStatErrBadHandle;
    };
    if to.ty != from.ty {
        return kOfxStatErrValue;
    }
    *to.value.lock().unwrap() = from.get();
    kOfxStatOK
}

unsafe extern "C" fn param_edit_begin(set: OfxParamSetHandle, _name: *const c_char) -> OfxStatus {
    if param_set(set, "paramEditBegin").is_none() {
        return kOfxStatErrBadHandle;
    }
    kOfxStatOK
}

unsafe extern "C" fn param_edit_end(set: OfxParamSetHandle) -> OfxStatus {
    if param_set(set, "paramEditEnd").is_none() {
        return kOfxStatErrBadHandle;
    }
    kOfxStatOK
}

/// `ShimValue` in shim.c.
#[repr(C)]
#[derive(Clone, Copy)]
pub union ShimValue {
    i: c_int,
    d: f64,
    s: *const c_char,
}

pub unsafe extern "C" fn shim_layout(
    h: OfxParamHandle,
    kind: *mut c_int,
    n: *mut c_int,
) -> OfxStatus {
    let Some(p) = param(h, "paramGet/SetValue") else {
        return kOfxStatErrBadHandle;
    };
    let (k, c) = layout_of(&p.ty);
    // SAFETY: the shim's out pointers.
    unsafe {
        *kind = k;
        *n = c;
    }
    kOfxStatOK
}

pub unsafe extern "C" fn shim_get(
    h: OfxParamHandle,
    _has_time: c_int,
    _time: f64,
    outs: *mut *mut c_void,
    n: c_int,
) -> OfxStatus {
    let Some(p) = param(h, "paramGetValue") else {
        return kOfxStatErrBadHandle;
    };
    let values = p.value.lock().unwrap_or_else(|e| e.into_inner());
    if values.len() != n as usize {
        return kOfxStatErrBadHandle;
    }
    for (i, v) in values.iter().enumerate() {
        // SAFETY: the plugin passed `n` out pointers of the parameter's type.
        unsafe {
            let out = *outs.add(i);
            if out.is_null() {
                return kOfxStatErrValue;
            }
            match v {
                Value::Int(x) => *(out as *mut c_int) = *x,
                Value::Double(x) => *(out as *mut f64) = *x,
                // Valid until the value changes, as the standard allows.
                Value::Str(x) => *(out as *mut *const c_char) = x.as_ptr(),
                Value::Ptr(_) => return kOfxStatErrValue,
            }
        }
    }
    kOfxStatOK
}

pub unsafe extern "C" fn shim_set(
    h: OfxParamHandle,
    _has_time: c_int,
    _time: f64,
    values: *const ShimValue,
    n: c_int,
) -> OfxStatus {
    let Some(p) = param(h, "paramSetValue") else {
        return kOfxStatErrBadHandle;
    };
    let (kind, _) = layout_of(&p.ty);
    let mut v = Vec::new();
    for i in 0..n as usize {
        // SAFETY: the shim read `n` values of this kind.
        let x = unsafe { *values.add(i) };
        // SAFETY: the union member the shim wrote for this kind.
        v.push(unsafe {
            match kind {
                INT => Value::Int(x.i),
                DOUBLE => Value::Double(x.d),
                _ if x.s.is_null() => return kOfxStatErrValue,
                _ => Value::Str(CStr::from_ptr(x.s).to_owned()),
            }
        });
    }
    *p.value.lock().unwrap_or_else(|e| e.into_inner()) = v;
    kOfxStatOK
}

/// The suite, with the shim's variadic functions.
pub fn suite(shim: &super::compile::Shim) -> OfxParameterSuiteV1 {
    OfxParameterSuiteV1 {
        paramDefine: Some(param_define),
        paramGetHandle: Some(param_get_handle),
        paramSetGetPropertySet: Some(param_set_get_property_set),
        paramGetPropertySet: Some(param_get_property_set),
        paramGetValue: Some(shim.param_get_value),
        paramGetValueAtTime: Some(shim.param_get_value_at_time),
        paramGetDerivative: Some(shim.param_get_derivative),
        paramGetIntegral: Some(shim.param_get_integral),
        paramSetValue: Some(shim.param_set_value),
        paramSetValueAtTime: Some(shim.param_set_value_at_time),
        paramGetNumKeys: Some(param_get_num_keys),
        paramGetKeyTime: Some(param_get_key_time),
        paramGetKeyIndex: Some(param_get_key_index),
        paramDeleteKey: Some(param_delete_key),
        paramDeleteAllKeys: Some(param_delete_all_keys),
        paramCopy: Some(param_copy),
        paramEditBegin: Some(param_edit_begin),
        paramEditEnd: Some(param_edit_end),
    }
}
