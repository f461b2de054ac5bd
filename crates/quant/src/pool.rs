//! A small thread pool for the kernels of a model step. A decode step runs a couple of
//! hundred short parallel loops; waking sleeping threads for each (as a general-purpose pool
//! does) costs more than the loops themselves. Here the calling thread takes part in every
//! loop, and helper threads spin between loops for a while before they park, so a handoff
//! inside a step costs well under a microsecond.
//!
//! A task that panics does not take the pool down: every task runs under `catch_unwind`, the
//! loop still counts it done, and the caller re-raises the first panic only after every task
//! of the loop has finished, so no helper can still be using the caller's borrowed closure
//! while the caller unwinds, and no helper thread dies with the panic.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// The job of one parallel loop: a function of the task index, borrowed for the loop's
/// duration (the publishing thread does not return before every task is done).
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

// SAFETY: the pointer is only dereferenced while `run` keeps the closure alive.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

struct Shared {
    /// The loop's number (high 32 bits) and its next unclaimed task (low 32 bits), in one
    /// word so a task can only be claimed for the loop it belongs to: a helper still
    /// finishing the previous loop can never take a task of the next one.
    state: AtomicU64,
    job: Mutex<Option<Job>>,
    /// Tasks of the current loop that have finished (or panicked).
    done: AtomicUsize,
    /// The first panic of the current loop, re-raised in the caller once the loop is over.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Set when a task of the current loop panicked: the rest are counted, not run.
    failed: AtomicBool,
    /// Helpers parked after spinning without work.
    parked: Mutex<Vec<Thread>>,
    any_parked: AtomicBool,
}

pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// One loop at a time: a second caller waits for the first.
    running: Mutex<()>,
}

impl Pool {
    fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: Mutex::new(None),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
            failed: AtomicBool::new(false),
            parked: Mutex::new(Vec::new()),
            any_parked: AtomicBool::new(false),
        });
        for i in 1..threads {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("wick-kernel-{i}"))
                .spawn(move || helper(&shared))
                .expect("spawning a kernel thread");
        }
        Self {
            shared,
            threads,
            running: Mutex::new(()),
        }
    }

    /// The process-wide pool, sized to the compute thread count (`RAYON_NUM_THREADS`, set
    /// by `config::init_threads`, else the core count).
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let threads = std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| {
                    thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(1)
                });
            Pool::new(threads.max(1))
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(0..tasks)` across the pool; returns when every task has run. When a task
    /// panics, the tasks not yet started are skipped and the panic resumes here, after every
    /// running task has finished.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.threads == 1 || tasks == 1 {
            (0..tasks).for_each(f);
            return;
        }
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY (lifetime erasure): `f` outlives the loop because this function waits below
        // until every task has finished before returning.
        let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        // Job, counter and loop number change together under the job's lock, so a helper
        // (which reads them under the same lock) never pairs a job with another loop.
        let epoch = {
            let mut job = s.job.lock().unwrap();
            *job = Some(Job { f: f_static, tasks });
            s.done.store(0, Ordering::SeqCst);
            s.failed.store(false, Ordering::SeqCst);
            let epoch = (s.state.load(Ordering::SeqCst) >> 32) + 1;
            s.state.store(epoch << 32, Ordering::SeqCst);
            epoch
        };
        if s.any_parked.swap(false, Ordering::SeqCst) {
            for t in s.parked.lock().unwrap().drain(..) {
                t.unpark();
            }
        }
        work(s, epoch, f, tasks);
        while s.done.load(Ordering::Acquire) < tasks {
            std::hint::spin_loop();
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let panic = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

/// Claim and run tasks of loop `epoch` until none are left (or another loop began).
fn work(s: &Shared, epoch: u64, f: &(dyn Fn(usize) + Sync), tasks: usize) {
    loop {
        let state = s.state.load(Ordering::Acquire);
        let i = (state & 0xFFFF_FFFF) as usize;
        if state >> 32 != epoch || i >= tasks {
            return;
        }
        if s.state
            .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        if !s.failed.load(Ordering::Acquire) {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                s.failed.store(true, Ordering::Release);
                s.panic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(payload);
            }
        }
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

fn epoch_of(s: &Shared) -> u64 {
    s.state.load(Ordering::SeqCst) >> 32
}

fn helper(s: &Shared) {
    let mut seen = epoch_of(s);
    loop {
        let since = Instant::now();
        // Spin for new work, then park until a loop is published.
        while epoch_of(s) == seen {
            if since.elapsed() > SPIN {
                let mut parked = s.parked.lock().unwrap();
                if epoch_of(s) != seen {
                    break;
                }
                parked.push(thread::current());
                s.any_parked.store(true, Ordering::SeqCst);
                drop(parked);
                thread::park_timeout(Duration::from_millis(50));
                continue;
            }
            std::hint::spin_loop();
        }
        // Read the job under its lock together with the loop it belongs to.
        let (job, epoch) = {
            let job = s.job.lock().unwrap();
            (*job, epoch_of(s))
        };
        seen = epoch;
        if let Some(job) = job {
            // SAFETY: the publisher keeps the closure alive until `done` reaches `tasks`;
            // `work` claims only tasks of `epoch`, the loop this job was read with.
            let f = unsafe { &*job.f };
            work(s, epoch, f, job.tasks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once_across_many_loops() {
        let pool = Pool::new(3);
        for round in 0..2000 {
            let tasks = 1 + round % 17;
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::SeqCst) == 1),
                "round {round}"
            );
        }
    }

    #[test]
    fn a_panicking_task_resumes_in_the_caller_after_the_loop_and_the_pool_goes_on() {
        let pool = Pool::new(3);
        for round in 0..200 {
            let finished = AtomicUsize::new(0);
            let tasks = 16;
            let bad = round % tasks;
            let result = catch_unwind(AssertUnwindSafe(|| {
                pool.run(tasks, &|i| {
                    if i == bad {
                        panic!("task {i} fails");
                    }
                    // Slow enough that helpers are still inside tasks when the panic happens.
                    thread::sleep(Duration::from_micros(50));
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }));
            let payload = result.expect_err("the task's panic reaches the caller");
            assert_eq!(
                payload.downcast_ref::<String>().map(String::as_str),
                Some(format!("task {bad} fails").as_str())
            );
            // Nothing of the loop runs after the caller got the panic back: the tasks that
            // ran have all ended.
            let at_return = finished.load(Ordering::SeqCst);
            thread::sleep(Duration::from_millis(2));
            assert_eq!(finished.load(Ordering::SeqCst), at_return, "round {round}");
            assert!(at_return < tasks);
            // Every helper survived: a full loop after the failure runs every task.
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
        }
    }

    #[test]
    fn helpers_wake_after_parking() {
        let pool = Pool::new(2);
        let sum = AtomicUsize::new(0);
        pool.run(4, &|i| {
            sum.fetch_add(i, Ordering::SeqCst);
        });
        // Long enough for the helper to give up spinning and park.
        thread::sleep(SPIN * 5);
        pool.run(4, &|i| {
            sum.fetch_add(i, Ordering::SeqCst);
        });
        assert_eq!(sum.load(Ordering::SeqCst), 12);
    }
}
