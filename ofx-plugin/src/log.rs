//! A log file the user can find (hosts such as Resolve hide stdout):
//! `$COGVIDEOX_OFX_LOG`, else `$XDG_CACHE_HOME/cogvideox-ofx/plugin.log`,
//! else `~/.cache/cogvideox-ofx/plugin.log`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

static LOCK: Mutex<()> = Mutex::new(());

pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("COGVIDEOX_OFX_LOG") {
        return PathBuf::from(p);
    }
    cache_home().join("cogvideox-ofx").join("plugin.log")
}

/// The user's cache folder: `$XDG_CACHE_HOME`, else `~/.cache`. Unit tests
/// keep to a folder of their own ([`unit_test_home`]).
pub fn cache_home() -> PathBuf {
    if cfg!(test) {
        return unit_test_home();
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
}

/// A folder per unit-test process. The first call removes those of test
/// processes that have ended: each left its disk cache behind (about 1 MB
/// per run). Processes are looked up in `/proc`, so only on Linux.
fn unit_test_home() -> PathBuf {
    const PREFIX: &str = "cogvideox-ofx-unit-";
    static CLEAN: Once = Once::new();
    let tmp = std::env::temp_dir();
    CLEAN.call_once(|| {
        if !cfg!(target_os = "linux") {
            return;
        }
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX)
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    tmp.join(format!("{PREFIX}{}", std::process::id()))
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
