//! Faults tests inject into a running server, to show that a panic anywhere in a request's
//! path fails only that request. This is a test-only hook: no flag or environment variable
//! reaches it; tests set [`crate::config::ServeArgs::faults`] themselves. With no hook set,
//! each point costs one `Option` check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// A request handler, before it reads its body.
    Handler,
    /// Sampling one sequence's next token (the engine thread, after the forward pass).
    Sampling,
    /// The scheduler's bookkeeping between steps: admission, after a KV slot was taken.
    Admission,
    /// A task of the kernel thread pool, inside a forward pass.
    KernelTask,
}

/// The armed faults of one server: each point panics the next `n` times it is reached.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<HashMap<FaultPoint, usize>>,
    /// How long each request's CPU work (template, tokenizing, grammar) is made to take.
    heavy: Mutex<Option<Duration>>,
    /// Pieces of that work running now, and the most ever at once.
    heavy_now: AtomicUsize,
    heavy_peak: AtomicUsize,
}

impl Faults {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Make `point` panic the next `times` times it is reached.
    pub fn arm(&self, point: FaultPoint, times: usize) {
        self.lock().insert(point, times);
    }

    /// Whether `point` should fail now (counting the use).
    pub fn take(&self, point: FaultPoint) -> bool {
        let mut armed = self.lock();
        match armed.get_mut(&point) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Make every request's CPU work take `duration` more (blocking its thread, as a
    /// huge prompt or schema would).
    pub fn make_work_heavy(&self, duration: Duration) {
        *self.heavy.lock().unwrap_or_else(|e| e.into_inner()) = Some(duration);
    }

    /// The most pieces of request CPU work that ran at once while it was heavy.
    pub fn heavy_work_peak(&self) -> usize {
        self.heavy_peak.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FaultPoint, usize>> {
        // A panic never happens while this lock is held, but a poisoned map is still right.
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Panic at `point` when the hook has it armed.
pub fn trip(hook: &Option<Arc<Faults>>, point: FaultPoint) {
    if hook.as_ref().is_some_and(|f| f.take(point)) {
        panic!("injected fault at {point:?}");
    }
}

/// Block this thread for the heavy-work time, when the hook sets one.
pub fn heavy_work(hook: &Option<Arc<Faults>>) {
    let Some(faults) = hook else { return };
    let Some(duration) = *faults.heavy.lock().unwrap_or_else(|e| e.into_inner()) else {
        return;
    };
    let now = faults.heavy_now.fetch_add(1, Ordering::SeqCst) + 1;
    faults.heavy_peak.fetch_max(now, Ordering::SeqCst);
    std::thread::sleep(duration);
    faults.heavy_now.fetch_sub(1, Ordering::SeqCst);
}

/// The text of a caught panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".into())
}
