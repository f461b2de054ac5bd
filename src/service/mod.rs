//! Running wick as a long-lived service: serving connections (the cap and the timeouts for
//! slow clients), the shutdown sequence and the idle-model reaper. The API layers (keys, CORS, request ids, metrics) live in `api`.

pub mod connections;
pub mod serve;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::ModelRegistry;

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM (what systemd and Docker send).
pub async fn termination_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT: shutting down"),
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

/// The shutdown sequence around `signal`: the returned future completes with the signal
/// (the server then stops accepting and waits for open requests), and `grace` later
/// `end_streams` is cancelled so the streams still running end with an error chunk.
pub async fn with_grace(
    signal: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    end_streams: CancellationToken,
) {
    signal.await;
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "no longer accepting connections; letting running requests finish"
    );
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if !end_streams.is_cancelled() {
            tracing::info!("shutdown grace over: ending the requests still running");
            end_streams.cancel();
        }
    });
}

/// Unload idle models every so often, for as long as the server runs (`--keep-alive`).
pub fn spawn_reaper(models: Arc<ModelRegistry>, stop: CancellationToken) {
    let Some(keep_alive) = models.keep_alive() else {
        return;
    };
    let every = (keep_alive / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticks.tick() => { models.unload_idle(); }
                _ = stop.cancelled() => return,
            }
        }
    });
}
