//! A wick server inside the bench process, on a free loopback port, so that `wick bench`
//! needs no second terminal and can read the server's own peak memory.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::catalog::BarProgress;
use crate::config::ServeArgs;
use crate::server::Server;

pub struct LocalServer {
    pub base_url: String,
    pub model: String,
    /// Where its models run.
    pub device: crate::device::DeviceChoice,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl LocalServer {
    /// Load the model the serve flags name and start serving it on 127.0.0.1, port 0:
    /// whatever `--host`/`--port` say, a benchmark must not expose or collide with anything.
    pub async fn start(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut args = args.clone();
        args.host = "127.0.0.1".into();
        args.port = 0;
        let server = Server::build(&args, &BarProgress::new()).await?;
        let base_url = format!("http://{}", server.addr);
        let model = server.state.default_model.clone();
        let device = server.state.device;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            base_url,
            model,
            device,
            stop,
            task,
        })
    }

    /// Ask the server to stop and wait briefly. Graceful shutdown waits for open
    /// connections; the bench is done with them, so a slow close is not worth waiting for.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(Duration::from_secs(2), &mut task).await {
            Ok(Ok(Err(e))) => eprintln!("wick server ended with an error: {e:#}"),
            Ok(_) => {}
            Err(_) => task.abort(),
        }
    }
}
