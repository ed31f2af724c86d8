//! Property sets and the property suite, with the type, index and handle
//! checks of a strict host.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ofx::*;
use super::registry::{self, Kind};

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i32),
    Double(f64),
    Str(CString),
    Ptr(usize),
}

impl Value {
    fn same_type(&self, other: &Value) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    fn zero_like(&self) -> Value {
        match self {
            Value::Int(_) => Value::Int(0),
            Value::Double(_) => Value::Double(0.0),
            Value::Str(_) => Value::Str(CString::default()),
            Value::Ptr(_) => Value::Ptr(0),
        }
    }
}

pub fn s(v: &CStr) -> Value {
    Value::Str(v.to_owned())
}

pub fn string(v: &str) -> Value {
    Value::Str(CString::new(v).expect("no NUL"))
}

/// A property set: named arrays of one type each. Boxed and registered so
/// that its address is a handle the suites can check.
pub struct PropSet {
    pub what: String,
    values: Mutex<HashMap<String, Vec<Value>>>,
    /// The `Shared` of the host whose description this is (0 otherwise).
    pub owner: usize,
    /// Closed as HostSupport's sets are: only the properties it holds can
    /// be set; another fails with `kOfxStatErrUnknown` (HostSupport
    /// `ofxhPropertySuite.cpp`, `propSet`: `fetchTypedProperty` finds none).
    closed: AtomicBool,
}

impl PropSet {
    pub fn new(what: &str) -> Box<PropSet> {
        let p = Box::new(PropSet {
            what: what.to_string(),
            values: Mutex::new(HashMap::new()),
            owner: 0,
            closed: AtomicBool::new(false),
        });
        registry::add(p.handle() as usize, Kind::Props);
        p
    }

    pub fn with_owner(what: &str, owner: usize) -> Box<PropSet> {
        let mut p = PropSet::new(what);
        p.owner = owner;
        p
    }

    pub fn handle(&self) -> OfxPropertySetHandle {
        self as *const PropSet as OfxPropertySetHandle
    }

    /// From now on only the properties it holds can be set.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn remove(&self, name: &CStr) {
        self.lock().remove(&*name.to_string_lossy());
    }

    fn refuses(&self, name: &str, map: &HashMap<String, Vec<Value>>) -> bool {
        self.closed.load(Ordering::SeqCst) && !map.contains_key(name)
    }

    pub fn set(&self, name: &CStr, v: Vec<Value>) {
        self.lock().insert(name.to_string_lossy().into_owned(), v);
    }

    pub fn set_named(&self, name: &str, v: Vec<Value>) {
        self.lock().insert(name.to_string(), v);
    }

    pub fn get(&self, name: &CStr) -> Option<Vec<Value>> {
        self.get_named(&name.to_string_lossy())
    }

    pub fn get_named(&self, name: &str) -> Option<Vec<Value>> {
        self.lock().get(name).cloned()
    }

    pub fn copy_from(&self, other: &PropSet) {
        let v = other.lock().clone();
        self.lock().extend(v);
    }

    pub fn int(&self, name: &CStr) -> Option<i32> {
        match self.get(name)?.first()? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn double(&self, name: &CStr) -> Option<f64> {
        match self.get(name)?.first()? {
            Value::Double(d) => Some(*d),
            _ => None,
        }
    }

    pub fn strings(&self, name: &CStr) -> Vec<String> {
        self.strings_named(&name.to_string_lossy())
    }

    pub fn strings_named(&self, name: &str) -> Vec<String> {
        self.get_named(name)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| match v {
                Value::Str(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    }

    pub fn string(&self, name: &CStr) -> Option<String> {
        self.strings(name).into_iter().next()
    }

    pub fn doubles_named(&self, name: &str) -> Vec<f64> {
        self.get_named(name)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| match v {
                Value::Double(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Value>>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PropSet {
    fn drop(&mut self) {
        registry::remove(self.handle() as usize);
    }
}

/// The live property set behind a handle, or `None` (a bad handle, noted).
fn props<'a>(h: OfxPropertySetHandle, what: &str) -> Option<&'a PropSet> {
    if !registry::is(h as usize, Kind::Props) {
        registry::violation(format!("{what}: bad property set handle {h:?}"));
        return None;
    }
    // SAFETY: registered handles point to live, boxed property sets.
    Some(unsafe { &*(h as *const PropSet) })
}

fn name_of<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: plugins pass NUL-terminated names.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

fn set_one(h: OfxPropertySetHandle, name: *const c_char, index: c_int, v: Value) -> OfxStatus {
    let Some(p) = props(h, "propSet") else {
        return kOfxStatErrBadHandle;
    };
    let Some(name) = name_of(name) else {
        return kOfxStatErrValue;
    };
    if index < 0 {
        return kOfxStatErrBadIndex;
    }
    let mut map = p.lock();
    if p.refuses(name, &map) {
        return kOfxStatErrUnknown;
    }
    let values = map.entry(name.to_string()).or_default();
    if let Some(first) = values.first()
        && !first.same_type(&v)
    {
        registry::violation(format!(
            "{}: {name} set as {v:?}, but it holds {first:?}",
            p.what
        ));
        return kOfxStatErrValue;
    }
    let i = index as usize;
    // Setting past the end grows a property (variable-dimension ones).
    while values.len() <= i {
        values.push(v.zero_like());
    }
    values[i] = v;
    kOfxStatOK
}

fn set_n(h: OfxPropertySetHandle, name: *const c_char, v: Vec<Value>) -> OfxStatus {
    let Some(p) = props(h, "propSetN") else {
        return kOfxStatErrBadHandle;
    };
    let Some(name) = name_of(name) else {
        return kOfxStatErrValue;
    };
    let mut map = p.lock();
    if p.refuses(name, &map) {
        return kOfxStatErrUnknown;
    }
    if let (Some(old), Some(new)) = (map.get(name).and_then(|o| o.first()), v.first())
        && !old.same_type(new)
    {
        registry::violation(format!(
            "{}: {name} set as {new:?}, but it holds {old:?}",
            p.what
        ));
        return kOfxStatErrValue;
    }
    map.insert(name.to_string(), v);
    kOfxStatOK
}

/// Reads value `index` of a property, checked.
fn get_one(h: OfxPropertySetHandle, name: *const c_char, index: c_int) -> Result<Value, OfxStatus> {
    let p = props(h, "propGet").ok_or(kOfxStatErrBadHandle)?;
    let name = name_of(name).ok_or(kOfxStatErrValue)?;
    let map = p.lock();
    let values = map.get(name).ok_or(kOfxStatErrUnknown)?;
    usize::try_from(index)
        .ok()
        .and_then(|i| values.get(i))
        .cloned()
        .ok_or(kOfxStatErrBadIndex)
}

/// A `CString` value's pointer, valid while the property keeps the value.
fn str_ptr(
    h: OfxPropertySetHandle,
    name: *const c_char,
    index: c_int,
) -> Result<*mut c_char, OfxStatus> {
    let p = props(h, "propGetString").ok_or(kOfxStatErrBadHandle)?;
    let name = name_of(name).ok_or(kOfxStatErrValue)?;
    let map = p.lock();
    let values = map.get(name).ok_or(kOfxStatErrUnknown)?;
    match usize::try_from(index).ok().and_then(|i| values.get(i)) {
        Some(Value::Str(s)) => Ok(s.as_ptr() as *mut c_char),
        Some(_) => Err(kOfxStatErrValue),
        None => Err(kOfxStatErrBadIndex),
    }
}

macro_rules! getter {
    ($fname:ident, $ty:ty, $variant:ident, $conv:expr) => {
        unsafe extern "C" fn $fname(
            h: OfxPropertySetHandle,
            name: *const c_char,
            index: c_int,
            out: *mut $ty,
        ) -> OfxStatus {
            if out.is_null() {
                return kOfxStatErrValue;
            }
            match get_one(h, name, index) {
                Ok(Value::$variant(v)) => {
                    // SAFETY: the plugin's out pointer.
                    unsafe { *out = $conv(v) };
                    kOfxStatOK
                }
                Ok(_) => kOfxStatErrValue,
                Err(st) => st,
            }
        }
    };
}

getter!(prop_get_int, c_int, Int, |v| v);
getter!(prop_get_double, f64, Double, |v| v);
getter!(prop_get_pointer, *mut c_void, Ptr, |v: usize| v
    as *mut c_void);

unsafe extern "C" fn prop_get_string(
    h: OfxPropertySetHandle,
    name: *const c_char,
    index: c_int,
    out: *mut *mut c_char,
) -> OfxStatus {
    if out.is_null() {
        return kOfxStatErrValue;
    }
    match str_ptr(h, name, index) {
        Ok(p) => {
            // SAFETY: the plugin's out pointer.
            unsafe { *out = p };
            kOfxStatOK
        }
        Err(st) => st,
    }
}

macro_rules! getter_n {
    ($fname:ident, $one:ident, $ty:ty) => {
        unsafe extern "C" fn $fname(
            h: OfxPropertySetHandle,
            name: *const c_char,
            count: c_int,
            out: *mut $ty,
        ) -> OfxStatus {
            for i in 0..count {
                // SAFETY: the plugin gives room for `count` values.
                let st = unsafe { $one(h, name, i, out.add(i as usize)) };
                if st != kOfxStatOK {
                    return st;
                }
            }
            kOfxStatOK
        }
    };
}

getter_n!(prop_get_int_n, prop_get_int, c_int);
getter_n!(prop_get_double_n, prop_get_double, f64);
getter_n!(prop_get_pointer_n, prop_get_pointer, *mut c_void);
getter_n!(prop_get_string_n, prop_get_string, *mut c_char);

unsafe extern "C" fn prop_set_int(
    h: OfxPropertySetHandle,
    name: *const c_char,
    index: c_int,
    v: c_int,
) -> OfxStatus {
    set_one(h, name, index, Value::Int(v))
}

unsafe extern "C" fn prop_set_double(
    h: OfxPropertySetHandle,
    name: *const c_char,
    index: c_int,
    v: f64,
) -> OfxStatus {
    set_one(h, name, index, Value::Double(v))
}

unsafe extern "C" fn prop_set_pointer(
    h: OfxPropertySetHandle,
    name: *const c_char,
    index: c_int,
    v: *mut c_void,
) -> OfxStatus {
    set_one(h, name, index, Value::Ptr(v as usize))
}

unsafe extern "C" fn prop_set_string(
    h: OfxPropertySetHandle,
    name: *const c_char,
    index: c_int,
    v: *const c_char,
) -> OfxStatus {
    if v.is_null() {
        return kOfxStatErrValue;
    }
    // SAFETY: a NUL-terminated string, copied.
    let v = unsafe { CStr::from_ptr(v) }.to_owned();
    set_one(h, name, index, Value::Str(v))
}

unsafe extern "C" fn prop_set_int_n(
    h: OfxPropertySetHandle,
    name: *const c_char,
    count: c_int,
    v: *const c_int,
) -> OfxStatus {
    if v.is_null() || count < 0 {
        return kOfxStatErrValue;
    }
    // SAFETY: `count` values.
    let s = unsafe { std::slice::from_raw_parts(v, count as usize) };
    set_n(h, name, s.iter().map(|&x| Value::Int(x)).collect())
}

unsafe extern "C" fn prop_set_double_n(
    h: OfxPropertySetHandle,
    name: *const c_char,
    count: c_int,
    v: *const f64,
) -> OfxStatus {
    if v.is_null() || count < 0 {
        return kOfxStatErrValue;
    }
    // SAFETY: `count` values.
    let s = unsafe { std::slice::from_raw_parts(v, count as usize) };
    set_n(h, name, s.iter().map(|&x| Value::Double(x)).collect())
}

unsafe extern "C" fn prop_set_pointer_n(
    h: OfxPropertySetHandle,
    name: *const c_char,
    count: c_int,
    v: *const *mut c_void,
) -> OfxStatus {
    if v.is_null() || count < 0 {
        return kOfxStatErrValue;
    }
    // SAFETY: `count` values.
    let s = unsafe { std::slice::from_raw_parts(v, count as usize) };
    set_n(h, name, s.iter().map(|&x| Value::Ptr(x as usize)).collect())
}

unsafe extern "C" fn prop_set_string_n(
    h: OfxPropertySetHandle,
    name: *const c_char,
    count: c_int,
    v: *const *const c_char,
) -> OfxStatus {
    if v.is_null() || count < 0 {
        return kOfxStatErrValue;
    }
    // SAFETY: `count` NUL-terminated strings.
    let s = unsafe { std::slice::from_raw_parts(v, count as usize) };
    if s.iter().any(|p| p.is_null()) {
        return kOfxStatErrValue;
    }
    // SAFETY: as above.
    let values = s
        .iter()
        .map(|&p| Value::Str(unsafe { CStr::from_ptr(p) }.to_owned()))
        .collect();
    set_n(h, name, values)
}

unsafe extern "C" fn prop_reset(h: OfxPropertySetHandle, name: *const c_char) -> OfxStatus {
    let Some(p) = props(h, "propReset") else {
        return kOfxStatErrBadHandle;
    };
    let Some(name) = name_of(name) else {
        return kOfxStatErrValue;
    };
    match p.lock().get_mut(name) {
        Some(values) => {
            for v in values.iter_mut() {
                *v = v.zero_like();
            }
            kOfxStatOK
        }
        None => kOfxStatErrUnknown,
    }
}

unsafe extern "C" fn prop_get_dimension(
    h: OfxPropertySetHandle,
    name: *const c_char,
    count: *mut c_int,
) -> OfxStatus {
    let Some(p) = props(h, "propGetDimension") else {
        return kOfxStatErrBadHandle;
    };
    let Some(name) = name_of(name) else {
        return kOfxStatErrValue;
    };
    if count.is_null() {
        return kOfxStatErrValue;
    }
    match p.lock().get(name) {
        Some(values) => {
            // SAFETY: the plugin's out pointer.
            unsafe { *count = values.len() as c_int };
            kOfxStatOK
        }
        None => kOfxStatErrUnknown,
    }
}

pub static SUITE: OfxPropertySuiteV1 = OfxPropertySuiteV1 {
    propSetPointer: Some(prop_set_pointer),
    propSetString: Some(prop_set_string),
    propSetDouble: Some(prop_set_double),
    propSetInt: Some(prop_set_int),
    propSetPointerN: Some(prop_set_pointer_n),
    propSetStringN: Some(prop_set_string_n),
    propSetDoubleN: Some(prop_set_double_n),
    propSetIntN: Some(prop_set_int_n),
    propGetPointer: Some(prop_get_pointer),
    propGetString: Some(prop_get_string),
    propGetDouble: Some(prop_get_double),
    propGetInt: Some(prop_get_int),
    propGetPointerN: Some(prop_get_pointer_n),
    propGetStringN: Some(prop_get_string_n),
    propGetDoubleN: Some(prop_get_double_n),
    propGetIntN: Some(prop_get_int_n),
    propReset: Some(prop_reset),
    propGetDimension: Some(prop_get_dimension),
};
