//! The caller's chance to stop a long forward pass from inside it.
//!
//! One transformer block of the 5b model at its default size is a minute
//! of CPU work; a cancel that waits for the block to end is not one. A
//! model installs the caller's poll for the length of a pass
//! ([`with_poll`]); the kernels' loops over independent pieces of work
//! (row pieces of a linear layer, query blocks of attention, feed-forward
//! chunks) call [`check`] between pieces on the calling thread, and an
//! error from the poll ends the pass. Without an installed poll [`check`]
//! does nothing, so the kernels keep one code path.

use std::cell::Cell;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use candle_core::Result;

/// The least time between two calls of the poll from [`check`]: the
/// callback may update a host's progress bar, which is not free, and
/// 20 ms keeps a cancel well inside a tenth of a second.
pub const MIN_INTERVAL: Duration = Duration::from_millis(20);

type PollFn = dyn FnMut() -> Result<()>;

struct Installed {
    poll: NonNull<PollFn>,
    interval: Duration,
    last: Instant,
}

thread_local! {
    static INSTALLED: Cell<Option<Installed>> = const { Cell::new(None) };
}

/// Restores the previous poll when a pass ends, also by an error or panic.
struct Restore(Option<Installed>);

impl Drop for Restore {
    fn drop(&mut self) {
        INSTALLED.with(|c| c.set(self.0.take()));
    }
}

/// Runs `f` with `poll` installed for [`check`] on this thread, called at
/// most every `interval`. `None` runs `f` with no poll (an outer one, if
/// any, stays in effect).
pub fn with_poll<'a, R>(
    poll: Option<&'a mut (dyn FnMut() -> Result<()> + 'a)>,
    interval: Duration,
    f: impl FnOnce() -> R,
) -> R {
    let Some(poll) = poll else {
        return f();
    };
    // SAFETY: only the lifetime is erased; the pointer is removed from the
    // thread-local by `Restore` before `poll`'s borrow ends, and used only
    // on this thread meanwhile.
    let poll: NonNull<PollFn> = unsafe {
        std::mem::transmute::<NonNull<dyn FnMut() -> Result<()> + 'a>, NonNull<PollFn>>(
            NonNull::from(poll),
        )
    };
    let previous = INSTALLED.with(|c| {
        c.replace(Some(Installed {
            poll,
            interval,
            last: Instant::now(),
        }))
    });
    let _restore = Restore(previous);
    f()
}

/// Calls the installed poll if `interval` has passed since its last call
/// (`force`: whatever the time), returning its error. Nothing installed:
/// `Ok`.
fn call(force: bool) -> Result<()> {
    let Some(mut installed) = INSTALLED.with(Cell::take) else {
        return Ok(());
    };
    let now = Instant::now();
    let result = if force || now.duration_since(installed.last) >= installed.interval {
        installed.last = now;
        // SAFETY: see `with_poll`; taken out of the thread-local for the
        // call, so a nested `check` from inside the poll finds nothing.
        unsafe { installed.poll.as_mut()() }
    } else {
        Ok(())
    };
    INSTALLED.with(|c| c.set(Some(installed)));
    result
}

/// Between two pieces of work: polls if the interval has passed.
pub fn check() -> Result<()> {
    call(false)
}

/// At a boundary the caller can count on (before each block): polls
/// whatever the time.
pub fn check_now() -> Result<()> {
    call(true)
}

/// Whether a poll is installed on this thread: loops split their work into
/// pieces only where someone listens between them.
pub fn installed() -> bool {
    INSTALLED.with(|c| {
        let i = c.take();
        let some = i.is_some();
        c.set(i);
        some
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_only_while_installed_and_restores_the_outer_one() {
        assert!(check_now().is_ok());
        let (mut outer, mut inner) = (0, 0);
        let mut count_outer = || -> Result<()> {
            outer += 1;
            Ok(())
        };
        with_poll(Some(&mut count_outer), Duration::ZERO, || {
            check().unwrap();
            let mut count_inner = || -> Result<()> {
                inner += 1;
                candle_core::bail!("stop")
            };
            let r = with_poll(Some(&mut count_inner), Duration::ZERO, check);
            assert!(r.is_err());
            check().unwrap();
            // A pass without its own poll leaves the outer one in effect.
            with_poll(None, Duration::ZERO, || check().unwrap());
        });
        assert!(!installed());
        assert_eq!((outer, inner), (3, 1));
    }

    #[test]
    fn the_interval_limits_calls_but_not_forced_ones() {
        let mut calls = 0;
        let mut count = || -> Result<()> {
            calls += 1;
            Ok(())
        };
        with_poll(Some(&mut count), Duration::from_secs(3600), || {
            for _ in 0..10 {
                check().unwrap();
            }
            check_now().unwrap();
        });
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_panic_inside_the_pass_uninstalls_the_poll() {
        let mut poll = || -> Result<()> { Ok(()) };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_poll(Some(&mut poll), Duration::ZERO, || panic!("boom"))
        }));
        assert!(r.is_err());
        assert!(!installed());
    }
}
