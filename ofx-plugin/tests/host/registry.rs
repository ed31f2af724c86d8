//! Every handle the host gives out, so that a suite call with a stale or
//! foreign handle is refused (and noted) instead of dereferenced.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Props,
    Effect,
    Clip,
    ParamSet,
    Param,
    ImageMemory,
    Mutex,
}

static LIVE: Mutex<Option<HashMap<usize, Kind>>> = Mutex::new(None);
static VIOLATIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn add(handle: usize, kind: Kind) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(handle, kind);
}

pub fn remove(handle: usize) {
    if let Some(map) = LIVE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        map.remove(&handle);
    }
}

pub fn is(handle: usize, kind: Kind) -> bool {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(&handle))
        == Some(&kind)
}

/// Notes something a plugin did against the standard (or a host rule);
/// tests assert there is none.
pub fn violation(what: String) {
    VIOLATIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(what);
}

/// Every violation noted in this process so far.
pub fn violations() -> Vec<String> {
    VIOLATIONS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
