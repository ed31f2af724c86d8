//! A log file the user can find (hosts such as Resolve hide stdout):
//! `$COGVIDEOX_OFX_LOG`, else `$XDG_CACHE_HOME/cogvideox-ofx/plugin.log`,
//! else `~/.cache/cogvideox-ofx/plugin.log`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

static LOCK: Mutex<()> = Mutex::new(());

pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("COGVIDEOX_OFX_LOG") {
        return PathBuf::from(p);
    }
    cache_home().join("cogvideox-ofx").join("plugin.log")
}

/// The user's cache folder: `$XDG_CACHE_HOME`, else `~/.cache`. Unit tests
/// keep to a folder of their own.
pub fn cache_home() -> PathBuf {
    if cfg!(test) {
        return std::env::temp_dir().join(format!("cogvideox-ofx-unit-{}", std::process::id()));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
}

/// Appends one line; logging never fails the caller.
pub fn line(msg: &str) {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let p = path();
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
    {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(f, "[{secs:.3} pid {}] {msg}", std::process::id());
    }
}
