//! Status codes, the thread-local last error, and `guard`, which every
//! entry point runs its work in: errors become a status and a message,
//! panics become `COGVIDEO_ERR_INTERNAL` and never reach the host's stderr.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Error, Result};
use cogvideo_status::*;

/// Result of every call. Zero is success.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cogvideo_status {
    COGVIDEO_OK = 0,
    /// A null pointer, a bad size, an option out of range, a non-UTF-8 string.
    COGVIDEO_ERR_INVALID_ARGUMENT = 1,
    /// A file or folder could not be read.
    COGVIDEO_ERR_IO = 2,
    /// The checkpoint's files are malformed or inconsistent.
    COGVIDEO_ERR_BAD_CHECKPOINT = 3,
    /// The loaded model cannot do this (e.g. image-to-video on a text model).
    COGVIDEO_ERR_UNSUPPORTED_VARIANT = 4,
    COGVIDEO_ERR_OUT_OF_MEMORY = 5,
    /// The GPU or its driver failed.
    COGVIDEO_ERR_DEVICE = 6,
    /// The progress callback asked to stop. Handles stay usable.
    COGVIDEO_ERR_CANCELLED = 7,
    /// A bug in the library (including a caught panic).
    COGVIDEO_ERR_INTERNAL = 8,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// Set while this thread runs inside [`guard`]: panics there are caught
    /// and reported through the status, so they must not print to the
    /// host's stderr.
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Messages are one line: a caller shows them in a status bar or a log.
/// The library's own messages are; anything after a first line comes from
/// elsewhere (a backtrace that `RUST_BACKTRACE` adds to a dependency's error)
/// and is dropped.
pub(super) fn set_last_error(msg: &str) {
    let line = msg
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let c = CString::new(line.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

pub(super) fn status_of(err: &Error) -> cogvideo_status {
    match err {
        Error::InvalidArgument(_) => COGVIDEO_ERR_INVALID_ARGUMENT,
        Error::Io { .. } => COGVIDEO_ERR_IO,
        Error::BadCheckpoint { .. } => COGVIDEO_ERR_BAD_CHECKPOINT,
        Error::UnsupportedVariant(_) => COGVIDEO_ERR_UNSUPPORTED_VARIANT,
        Error::OutOfMemory(_) => COGVIDEO_ERR_OUT_OF_MEMORY,
        Error::Device(_) => COGVIDEO_ERR_DEVICE,
        Error::Cancelled => COGVIDEO_ERR_CANCELLED,
        Error::Internal(_) => COGVIDEO_ERR_INTERNAL,
    }
}

/// Installs, once, a panic hook that stays silent for panics inside a C
/// API call (they become `COGVIDEO_ERR_INTERNAL` with the message) and
/// defers to the previous hook everywhere else, so the host's own panics
/// are reported as before.
pub(super) fn quiet_panics_in_calls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CALL.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
}

/// Runs `f` with panics caught and kept off the host's stderr.
pub(super) fn catch_quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    quiet_panics_in_calls();
    let outer = IN_CALL.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_CALL.with(|c| c.set(outer));
    result
}

/// Runs `f`, turning errors and panics into a status and a message.
pub(super) fn guard(f: impl FnOnce() -> Result<()>) -> cogvideo_status {
    match catch_quietly(f) {
        Ok(Ok(())) => {
            set_last_error("");
            COGVIDEO_OK
        }
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            status_of(&e)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (panic): {what}"));
            COGVIDEO_ERR_INTERNAL
        }
    }
}

/// The message of the last failed call on this thread ("" after a
/// successful call). Valid until the next call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn cogvideo_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn last_error() -> String {
        // SAFETY: the library's own NUL-terminated message.
        unsafe { CStr::from_ptr(cogvideo_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn messages_are_one_line() {
        set_last_error("shape mismatch in matmul\nstack backtrace:\n   0: candle_core::error");
        assert_eq!(last_error(), "shape mismatch in matmul");
    }

    /// Runs itself in a child process (stderr is the point) where a call
    /// panics: the caller gets an internal error with the panic's message,
    /// and nothing reaches the host's stderr.
    #[test]
    fn panics_in_calls_are_errors_and_stay_off_stderr() {
        const CHILD: &str = "COGVIDEO_TEST_PANIC_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let st = guard(|| panic!("boom in a call"));
            assert_eq!(st, COGVIDEO_ERR_INTERNAL);
            assert_eq!(last_error(), "internal error (panic): boom in a call");
            eprintln!("child done");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ffi::status::tests::panics_in_calls_are_errors_and_stay_off_stderr",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("child done"), "the child ran: {stderr}");
        assert!(!stderr.contains("boom"), "the panic was printed: {stderr}");
    }
}
