//! The bound on the frames the plugin's caches hold in memory, all caches
//! together: `$COGVIDEOX_OFX_MEMORY_GB` gigabytes (default 8). Each cache
//! reports what it holds and drops its entries (Edit's segments least
//! recently used first) while the total exceeds the bound, but never an
//! entry in use (the one a render serves, one a job works on), so a segment
//! larger than the bound is still processed and served.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

/// The caches that hold frames.
#[derive(Clone, Copy)]
pub enum Cache {
    Edit,
    AnimateImages,
    AnimateResults,
    Generate,
}

static HELD: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

const DEFAULT_GB: f64 = 8.0;

/// The bound in bytes.
pub fn budget() -> u64 {
    let gb = std::env::var("COGVIDEOX_OFX_MEMORY_GB")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(DEFAULT_GB);
    (gb * (1u64 << 30) as f64) as u64
}

/// Records that `cache` holds `bytes`; returns how far all caches together
/// exceed the bound (0 within it).
pub fn held(cache: Cache, bytes: u64) -> u64 {
    HELD[cache as usize].store(bytes, Ordering::SeqCst);
    let total: u64 = HELD.iter().map(|h| h.load(Ordering::SeqCst)).sum();
    total.saturating_sub(budget())
}

/// Bounds `cache`, held in `map`: while the caches exceed the bound, drops
/// the entry other than `keep` that `droppable` allows with the lowest
/// `age`. `bytes` is an entry's size.
pub fn bound<K: Clone + Eq + Hash, V>(
    cache: Cache,
    map: &mut HashMap<K, V>,
    keep: &K,
    bytes: impl Fn(&V) -> u64,
    droppable: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> u64,
) {
    let size = |map: &HashMap<K, V>| map.values().map(&bytes).sum();
    while held(cache, size(map)) > 0 {
        let oldest = map
            .iter()
            .filter(|(k, v)| *k != keep && droppable(v))
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone());
        let Some(v) = oldest.and_then(|k| map.remove(&k)) else {
            break;
        };
        crate::log::line(&format!(
            "memory bound ({} bytes): an entry of {} bytes dropped",
            budget(),
            bytes(&v)
        ));
    }
}
