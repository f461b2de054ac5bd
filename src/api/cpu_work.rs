//! CPU-heavy request work (reading large bodies, checking tool schemas, rendering chat
//! templates, tokenizing, compiling grammars, serializing stored responses) runs on tokio's
//! blocking threads, at most a few at once, so the async threads that accept connections
//! and carry other clients' streams are never held by one heavy request. Requests past the
//! bound wait for a place without holding a thread.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::error::ApiError;

pub struct CpuWork {
    permits: Arc<Semaphore>,
}

impl CpuWork {
    /// At most `at_once` pieces of work run at a time.
    pub fn new(at_once: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(at_once.max(1))),
        }
    }

    /// Run `work` on a blocking thread once a place is free. A panic in it is this
    /// request's 500, not the server's.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the server is stopping"))?;
        // The place is held by the work itself, so a client that goes away mid-way does not
        // free it while the thread still runs.
        let task = tokio::task::spawn_blocking(move || {
            let _place = permit;
            work()
        });
        task.await.map_err(|e| {
            let message = match e.try_into_panic() {
                Ok(payload) => crate::faults::panic_message(&*payload),
                Err(e) => e.to_string(),
            };
            tracing::error!(panic = message, "request work on a blocking thread failed");
            ApiError::internal("The server had an error while processing your request.")
        })
    }
}
