//! A file of a Hugging Face hub repository, through hf-hub's async API.
//!
//! hf-hub downloads into its own cache layout; we point that cache at a scratch folder,
//! then copy the file through a hashing writer into ours and let the scratch folder go.
//! hf-hub sets no timeouts, so a hub that does not answer is detected here: the download
//! fails when no progress event arrives for a while.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use hf_hub::api::tokio::{ApiBuilder, Progress as HfProgress};
use hf_hub::{Repo, RepoType};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::Instant;

use super::{one_line, Target};
use crate::catalog::files::ScratchDir;
use crate::catalog::{progress, Progress};

/// How long to wait for the hub before giving up on it.
#[derive(Clone, Copy)]
struct Patience {
    /// Until the download starts (connect, metadata).
    first_answer: Duration,
    /// Between two pieces of a running download.
    stall: Duration,
}

const PATIENCE: Patience = Patience {
    first_answer: Duration::from_secs(20),
    stall: Duration::from_secs(60),
};

enum Event {
    Started(u64),
    Bytes(u64),
}

/// hf-hub wants a `Clone + 'static` progress; ours is borrowed, so events cross a channel.
#[derive(Clone)]
struct Events(UnboundedSender<Event>);

impl HfProgress for Events {
    async fn init(&mut self, size: usize, _filename: &str) {
        let _ = self.0.send(Event::Started(size as u64));
    }
    async fn update(&mut self, size: usize) {
        let _ = self.0.send(Event::Bytes(size as u64));
    }
    async fn finish(&mut self) {}
}

pub(in crate::catalog) async fn fetch(
    scratch: &ScratchDir,
    target: &Target,
    repo: &str,
    file: &str,
    revision: Option<&str>,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let cache = scratch.path().join("hf");
    let downloaded = download(api(), PATIENCE, &cache, repo, file, revision, progress).await?;

    progress.start(&format!("verifying {file}"), target.size);
    let target = target.clone();
    let installed = progress::blocking(progress, move |tick| -> Result<PathBuf> {
        let mut partial = target.partial()?;
        let mut src = std::fs::File::open(&downloaded)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut src, &mut buf)?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut partial, &buf[..n])?;
            tick(n as u64);
        }
        target.install(partial)
    })
    .await;
    progress.finish();
    installed?
}

/// The hub's API as the user's environment sets it up: `HF_ENDPOINT`, `HF_HOME` (the
/// cache), and the token from `HF_TOKEN` or the one `huggingface-cli login` saved.
fn api() -> ApiBuilder {
    let api = ApiBuilder::from_env();
    match std::env::var("HF_TOKEN") {
        Ok(token) if !token.is_empty() => api.with_token(Some(token)),
        _ => api,
    }
}

/// Where the hub is, for messages.
pub(in crate::catalog) fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
}

/// A file of a hub repository (revision `main`), downloaded into the Hugging Face cache
/// (`HF_HOME`, by default `~/.cache/huggingface`) as other Hugging Face tools keep it, so
/// an interrupted download resumes and a file another tool fetched is not fetched again.
pub(in crate::catalog) async fn fetch_into_hf_cache(
    repo: &str,
    file: &str,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env().path().clone();
    download(api(), PATIENCE, &cache, repo, file, None, progress).await
}

/// The `.gguf` files of a hub repository (revision `main`).
pub(in crate::catalog) async fn list_gguf(repo: &str) -> Result<Vec<String>> {
    let api = api()
        .with_progress(false)
        .build()
        .map_err(|e| anyhow::anyhow!(one_line(&e)))?;
    let info = tokio::time::timeout(PATIENCE.first_answer, api.model(repo.to_string()).info())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from the hub within {}s",
                PATIENCE.first_answer.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!(one_line(&e)))?;
    Ok(info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .collect())
}

/// Downloads into the hf cache at `cache`; returns the downloaded file's path.
async fn download(
    api: ApiBuilder,
    patience: Patience,
    cache: &std::path::Path,
    repo: &str,
    file: &str,
    revision: Option<&str>,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let api = api
        .with_cache_dir(cache.to_path_buf())
        .with_progress(false)
        .build()
        .map_err(|e| anyhow::anyhow!(one_line(&e)))?;
    let repo = Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.unwrap_or("main").to_string(),
    );
    let repo = api.repo(repo);

    let (tx, mut rx) = unbounded_channel();
    let download = repo.download_with_progress(file, Events(tx));
    tokio::pin!(download);

    // A spinner until the hub says how big the file is.
    progress.start(&format!("asking the hub for {file}"), None);
    let mut deadline = Instant::now() + patience.first_answer;
    let mut started = false;
    let mut events_open = true;
    let outcome = loop {
        tokio::select! {
            result = &mut download => break result.map_err(|e| anyhow::anyhow!(one_line(&e))),
            event = rx.recv(), if events_open => match event {
                Some(Event::Started(size)) => {
                    started = true;
                    progress.start(&format!("downloading {file}"), Some(size));
                    deadline = Instant::now() + patience.stall;
                }
                Some(Event::Bytes(n)) => {
                    progress.advance(n);
                    deadline = Instant::now() + patience.stall;
                }
                None => events_open = false,
            },
            _ = tokio::time::sleep_until(deadline) => {
                break Err(if started {
                    anyhow::anyhow!(
                        "download stalled: nothing received for {}s",
                        patience.stall.as_secs()
                    )
                } else {
                    anyhow::anyhow!(
                        "no answer from the hub within {}s",
                        patience.first_answer.as_secs()
                    )
                });
            }
        }
    };
    progress.finish();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::files::test_dir;
    use crate::catalog::Silent;

    /// A hub that accepts connections and never answers must not hang the fetch.
    #[tokio::test]
    async fn a_silent_hub_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let dir = test_dir("hf-silent");
        let scratch = ScratchDir::new_in(dir.path()).unwrap();
        let patience = Patience {
            first_answer: Duration::from_millis(500),
            stall: Duration::from_millis(500),
        };
        let api = ApiBuilder::new().with_endpoint(endpoint);
        let started = std::time::Instant::now();
        let cache = scratch.path().join("hf");
        let err = download(api, patience, &cache, "a/b", "c.gguf", None, &Silent)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no answer from the hub"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        server.abort();
    }
}
