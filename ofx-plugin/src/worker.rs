//! The process's one background worker. Every segment is processed on it,
//! one job at a time, so that a render never runs the model itself:
//! interactive renders return at once (the source with a status), final
//! renders wait for their job while polling the host's abort flag, which
//! lets them return within a fraction of a second of an abort however long
//! a model step takes.
//!
//! Jobs are keyed by what they compute (a segment and every parameter that
//! matters). Each instance "wants" at most one job; when it comes to want
//! another (a parameter changed) and no other instance wants the old one,
//! the old one is cancelled through the library's progress callback.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One job's shared state: the worker updates it, renders read it.
pub struct Job {
    pub id: u64,
    cancel: AtomicBool,
    /// Fraction done (f64 bits).
    frac: AtomicU64,
    status: Mutex<String>,
    /// Set once the job's work has returned (its outcome is recorded).
    done: Mutex<bool>,
    finished: Condvar,
}

impl Job {
    pub fn new(id: u64) -> Arc<Job> {
        Arc::new(Job {
            id,
            cancel: AtomicBool::new(false),
            frac: AtomicU64::new(0f64.to_bits()),
            status: Mutex::new("queued".into()),
            done: Mutex::new(false),
            finished: Condvar::new(),
        })
    }

    /// Waits until the job's outcome is recorded or `limit` passes.
    pub fn wait(&self, limit: Duration) {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if !*done {
            let _ = self.finished.wait_timeout(done, limit);
        }
    }

    /// Whether the job's work has returned.
    pub fn finished(&self) -> bool {
        *self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.finished.notify_all();
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    pub fn fraction(&self) -> f64 {
        f64::from_bits(self.frac.load(Ordering::SeqCst))
    }

    /// What the job is doing, e.g. "denoising, step 3 of 50".
    pub fn status(&self) -> String {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_status(&self, text: &str) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = text.into();
    }

    /// Records a library progress report; false once the job is cancelled.
    pub fn report(&self, stage: i32, done: i32, total: i32) -> bool {
        let part = if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        };
        // `COGVIDEO_STAGE_LOAD` (C API 1.3) is a job of its own, in MiB.
        if stage == 5 {
            self.frac
                .store(part.clamp(0.0, 1.0).to_bits(), Ordering::SeqCst);
            *self.status.lock().unwrap_or_else(|e| e.into_inner()) =
                format!("loading the checkpoint, {done} of {total} MiB");
            return !self.cancelled();
        }
        // `COGVIDEO_STAGE_*` run in order from 0 to 4: spread them over the bar.
        let frac = ((stage as f64 + part) / 5.0).clamp(0.0, 1.0);
        self.frac.store(frac.to_bits(), Ordering::SeqCst);
        let what = match stage {
            0 => "encoding the prompt",
            1 => "encoding the frames",
            2 => "inverting",
            3 => "denoising",
            _ => "decoding",
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) =
            format!("processing: {what}, step {done} of {total}");
        !self.cancelled()
    }
}

type Work = Box<dyn FnOnce(&Job) + Send>;

#[derive(Default)]
struct Queue {
    waiting: VecDeque<(Arc<Job>, Work)>,
    running: Option<Arc<Job>>,
    /// Whether the worker thread is alive.
    thread: bool,
    /// Per instance (its handle's address), the job it wants.
    wants: HashMap<usize, u64>,
}

static QUEUE: Mutex<Option<Queue>> = Mutex::new(None);
static WAKE: Condvar = Condvar::new();

/// The worker ends after this long without work (so that no thread of ours
/// outlives the host's use of the plugin by much).
const IDLE: Duration = Duration::from_secs(5);

fn with<R>(f: impl FnOnce(&mut Queue) -> R) -> R {
    let mut q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    f(q.get_or_insert_with(Queue::default))
}

/// Queues `work` for `job`; `urgent` (a final render waits for it) puts it
/// first.
pub fn submit(job: Arc<Job>, urgent: bool, work: impl FnOnce(&Job) + Send + 'static) {
    let spawn = with(|q| {
        if urgent {
            q.waiting.push_front((job, Box::new(work)));
        } else {
            q.waiting.push_back((job, Box::new(work)));
        }
        !std::mem::replace(&mut q.thread, true)
    });
    if spawn {
        let started = std::thread::Builder::new()
            .name("cogvideox-worker".into())
            .spawn(run);
        if let Err(e) = started {
            crate::log::line(&format!("cannot start the worker thread: {e}"));
            with(|q| q.thread = false);
        }
    }
    WAKE.notify_all();
}

/// Moves job `id` to the front of the queue if it waits there (a final
/// render now waits for it).
pub fn hurry(id: u64) {
    with(|q| {
        if let Some(i) = q.waiting.iter().position(|(j, _)| j.id == id)
            && let Some(entry) = q.waiting.remove(i)
        {
            q.waiting.push_front(entry);
        }
    });
}

fn run() {
    loop {
        let next = {
            let mut guard = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let q = guard.get_or_insert_with(Queue::default);
                if let Some((job, work)) = q.waiting.pop_front() {
                    q.running = Some(job.clone());
                    break Some((job, work));
                }
                let (g, timeout) = WAKE
                    .wait_timeout(guard, IDLE)
                    .unwrap_or_else(|e| e.into_inner());
                guard = g;
                let q = guard.get_or_insert_with(Queue::default);
                if timeout.timed_out() && q.waiting.is_empty() {
                    q.thread = false;
                    break None;
                }
            }
        };
        let Some((job, work)) = next else { return };
        // The work records its own outcome; a panic must not end the worker.
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&job)));
        if res.is_err() {
            crate::log::line("a job panicked");
        }
        job.finish();
        with(|q| q.running = None);
    }
}

/// Instance `instance` now wants the result of job `id` (queued, running,
/// done or not started). The job it wanted before is cancelled when no
/// instance wants it any more.
pub fn want(instance: usize, id: u64) {
    with(|q| {
        if let Some(old) = q.wants.insert(instance, id)
            && old != id
        {
            release(q, old);
        }
    });
}

/// The instance's parameters changed: the job it wanted is stale unless
/// another instance wants it.
pub fn changed(instance: usize) {
    with(|q| {
        if let Some(old) = q.wants.remove(&instance) {
            release(q, old);
        }
    });
}

/// The instance is gone. Its job is not cancelled: hosts such as MLT make
/// an instance per frame, and the next one wants the same job.
pub fn forget(instance: usize) {
    with(|q| {
        q.wants.remove(&instance);
    });
}

fn release(q: &mut Queue, id: u64) {
    if q.wants.values().any(|w| *w == id) {
        return;
    }
    let jobs = q.waiting.iter().map(|(j, _)| j).chain(q.running.as_ref());
    // A running job may have recorded its result already: renders then
    // stop wanting it, which must not read as staleness.
    for job in jobs.filter(|j| j.id == id && !j.finished() && !j.cancelled()) {
        crate::log::line(&format!("job {id:016x} is stale: cancelled"));
        job.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Jobs whose work blocks until the test lets it go.
    fn blocked(id: u64) -> (Arc<Job>, mpsc::Sender<()>, mpsc::Receiver<bool>) {
        let job = Job::new(id);
        let (go, wait) = mpsc::channel::<()>();
        let (tell, told) = mpsc::channel();
        submit(job.clone(), false, move |j: &Job| {
            let _ = wait.recv();
            let _ = tell.send(j.cancelled());
        });
        (job, go, told)
    }

    // One test: the queue and the wants are per process.
    #[test]
    fn jobs_run_in_order_and_stale_ones_are_cancelled_unless_wanted() {
        let caller = std::thread::current().id();
        let (tx, rx) = mpsc::channel();
        let first = Job::new(1);
        submit(first.clone(), false, move |_| {
            tx.send(std::thread::current().id()).unwrap()
        });
        assert_ne!(rx.recv().unwrap(), caller, "the work ran on the caller");
        first.wait(Duration::from_secs(120));
        assert!(first.finished());

        // Instance 10 wants job 2 (running), then job 3: job 2 is cancelled.
        let (two, go_two, told_two) = blocked(2);
        let (three, go_three, told_three) = blocked(3);
        want(10, 2);
        want(11, 3);
        want(10, 3);
        assert!(two.cancelled() && !three.cancelled());
        // Job 3 is also wanted by 11: 10 changing its parameters keeps it.
        changed(10);
        assert!(!three.cancelled());
        // An instance that goes away cancels nothing (MLT: one per frame).
        forget(11);
        assert!(!three.cancelled());
        go_two.send(()).unwrap();
        assert!(told_two.recv().unwrap());
        go_three.send(()).unwrap();
        assert!(!told_three.recv().unwrap());
        // Nobody wants job 3 now; a new want elsewhere leaves it alone.
        want(12, 4);
        three.wait(Duration::from_secs(120));
        assert!(three.finished() && !three.cancelled());
    }

    #[test]
    fn a_hurried_job_runs_before_those_queued_ahead_of_it() {
        let (_, go, done) = blocked(20);
        let (tx, rx) = mpsc::channel();
        for id in [21, 22] {
            let tx = tx.clone();
            submit(Job::new(id), false, move |j: &Job| tx.send(j.id).unwrap());
        }
        hurry(22);
        go.send(()).unwrap();
        done.recv().unwrap();
        let order: Vec<u64> = rx.iter().take(2).collect();
        assert_eq!(order, [22, 21]);
    }

    #[test]
    fn progress_reports_say_what_runs_and_stop_once_cancelled() {
        let job = Job::new(99);
        assert!(job.report(3, 2, 4));
        assert_eq!(job.status(), "processing: denoising, step 2 of 4");
        assert!((job.fraction() - 3.5 / 5.0).abs() < 1e-9);
        job.cancel();
        assert!(!job.report(3, 3, 4));

        let load = Job::new(100);
        assert!(load.report(5, 30, 120));
        assert_eq!(load.status(), "loading the checkpoint, 30 of 120 MiB");
        assert!((load.fraction() - 0.25).abs() < 1e-9);
    }
}
