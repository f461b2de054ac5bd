//! Showing progress: `BarProgress` draws it with indicatif, and `blocking` lets work that
//! must run on a blocking thread (unzipping, hashing) report to a `&dyn Progress` that
//! lives on the async side.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::Progress;

/// Progress on the terminal (stderr): a spinner while the size is unknown (pip at work), a
/// bar with bytes, rate and ETA once it is known. Draws nothing when stderr is not a
/// terminal.
pub struct BarProgress {
    bar: Mutex<Option<ProgressBar>>,
}

impl BarProgress {
    pub fn new() -> Self {
        Self {
            bar: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        // A panic elsewhere while drawing must not stop a download: take the bar anyway.
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut bar);
    }
}

impl Default for BarProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for BarProgress {
    fn start(&self, what: &str, total_bytes: Option<u64>) {
        self.with_bar(|slot| {
            if let Some(old) = slot.take() {
                old.finish();
            }
            let bar = match total_bytes {
                Some(total) => ProgressBar::new(total).with_style(bytes_style()),
                None => {
                    let bar = ProgressBar::new_spinner().with_style(spinner_style());
                    // Nothing calls `advance` while pip runs: tick on a timer instead.
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                }
            };
            bar.set_message(what.to_string());
            *slot = Some(bar);
        });
    }

    fn advance(&self, bytes: u64) {
        self.with_bar(|slot| {
            if let Some(bar) = slot {
                bar.inc(bytes);
            }
        });
    }

    fn finish(&self) {
        self.with_bar(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish();
            }
        });
    }
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}]").expect("valid template")
}

/// Runs `work` on a blocking thread; the byte counts it passes to its tick function are
/// forwarded to `progress` as they come. `start`/`finish` remain the caller's job.
pub(super) async fn blocking<T, F>(progress: &dyn Progress, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Fn(u64)) -> T + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let handle = tokio::task::spawn_blocking(move || {
        let tick = move |n: u64| {
            // The receiver only goes away if the fetch was dropped; the work still finishes.
            let _ = tx.send(n);
        };
        work(&tick)
    });
    // The channel closes when `work` returns and drops its sender.
    while let Some(n) = rx.recv().await {
        progress.advance(n);
    }
    handle
        .await
        .map_err(|e| anyhow::anyhow!("background task failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Count(AtomicU64);
    impl Progress for Count {
        fn advance(&self, bytes: u64) {
            self.0.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn blocking_work_reports_its_bytes() {
        let count = Count::default();
        let out = blocking(&count, |tick| {
            tick(3);
            tick(4);
            "done"
        })
        .await
        .unwrap();
        assert_eq!(out, "done");
        assert_eq!(count.0.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn bar_progress_runs_without_a_terminal() {
        let bar = BarProgress::new();
        bar.start("spinning", None);
        bar.start("unpacking", Some(10));
        bar.advance(5);
        bar.finish();
        bar.advance(1);
    }
}
