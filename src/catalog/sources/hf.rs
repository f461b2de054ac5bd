//! A file of a Hugging Face hub repository, through hf-hub's async API.
//!
//! hf-hub downloads into its own cache layout; we point that cache at a scratch folder,
//! then copy the file through a hashing writer into ours and let the scratch folder go.
//! hf-hub sets no timeouts, so a hub that does not answer is detected here: the download
//! fails when no progress event arrives for a while.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use hf_hub::api::tokio::{ApiBuilder, Progress as HfProgress};
use hf_hub::{Repo, RepoType};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::Instant;

use super::{one_line, Target};
use crate::catalog::files::ScratchDir;
use crate::catalog::{progress, Progress};

/// How long the hub may take to answer before the download starts (connect, metadata).
const FIRST_ANSWER: Duration = Duration::from_secs(20);
/// How long a running download may go without receiving a byte.
const STALL: Duration = Duration::from_secs(60);

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
    let downloaded = download(scratch, repo, file, revision, progress).await?;

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

/// Downloads into the scratch folder's hf cache; returns the downloaded file's path.
async fn download(
    scratch: &ScratchDir,
    repo: &str,
    file: &str,
    revision: Option<&str>,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    // from_env: honours HF_ENDPOINT and the user's saved token.
    let api = ApiBuilder::from_env()
        .with_cache_dir(scratch.path().join("hf"))
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

    let mut deadline = Instant::now() + FIRST_ANSWER;
    let mut started = false;
    let mut events_open = true;
    let outcome = loop {
        tokio::select! {
            result = &mut download => break result,
            event = rx.recv(), if events_open => match event {
                Some(Event::Started(size)) => {
                    started = true;
                    progress.start(&format!("downloading {file}"), Some(size));
                    deadline = Instant::now() + STALL;
                }
                Some(Event::Bytes(n)) => {
                    progress.advance(n);
                    deadline = Instant::now() + STALL;
                }
                None => events_open = false,
            },
            _ = tokio::time::sleep_until(deadline) => {
                if started {
                    progress.finish();
                    bail!("download stalled: nothing received for {}s", STALL.as_secs());
                }
                bail!("no answer from the hub within {}s", FIRST_ANSWER.as_secs());
            }
        }
    };
    if started {
        progress.finish();
    }
    outcome.map_err(|e| anyhow::anyhow!(one_line(&e)))
}
