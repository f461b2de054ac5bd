//! `wick bench --soak MINUTES`: N streams kept going against one server for a while, with
//! random prompt lengths, random `max_tokens` and random mid-stream disconnects, to show
//! that the server neither leaks (RSS at start and end) nor leaves work behind (running
//! sequences and queue depth from /metrics once the load stops).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::client::Target;
use super::prompt::long_prompt;
use super::sse::{parse_line, LineBuffer, SseData};
use super::stats::percentile;
use crate::metrics::{metric_sum, QUEUE_DEPTH, RESIDENT_MEMORY, RUNNING_SEQUENCES};

/// How one soak request ended.
enum Outcome {
    /// Read to `[DONE]`; latency from sending to the end.
    Completed(Duration),
    /// The client hung up on purpose mid-stream.
    Disconnected,
    Failed(String),
}

#[derive(Debug, Default)]
pub struct SoakReport {
    pub completed: usize,
    pub disconnected: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub p50_s: Option<f64>,
    pub p95_s: Option<f64>,
    pub rss_start_mib: Option<f64>,
    pub rss_end_mib: Option<f64>,
    /// Summed over models, read from /metrics after the load stopped.
    pub running_after: Option<f64>,
    pub queued_after: Option<f64>,
}

impl SoakReport {
    pub fn render(&self, minutes: f64, streams: usize) -> String {
        let secs = |v: Option<f64>| v.map_or("-".into(), |s| format!("{s:.2} s"));
        let mib = |v: Option<f64>| v.map_or("-".into(), |m| format!("{m:.0} MiB"));
        let num = |v: Option<f64>| v.map_or("-".into(), |n| format!("{n:.0}"));
        format!(
            "soak: {minutes} min, {streams} streams\n\
             requests done      {}\n\
             disconnected       {}\n\
             errors             {}\n\
             latency p50        {}\n\
             latency p95        {}\n\
             server RSS start   {}\n\
             server RSS end     {}\n\
             running after      {}\n\
             queued after       {}\n",
            self.completed,
            self.disconnected,
            self.errors,
            secs(self.p50_s),
            secs(self.p95_s),
            mib(self.rss_start_mib),
            mib(self.rss_end_mib),
            num(self.running_after),
            num(self.queued_after),
        )
    }
}

/// Keep `streams` requests in flight against `target` for `duration`.
pub async fn soak(
    target: &Target,
    duration: Duration,
    streams: usize,
) -> anyhow::Result<SoakReport> {
    let mut report = SoakReport {
        rss_start_mib: scrape(target).await?.rss_mib,
        ..SoakReport::default()
    };
    let until = Instant::now() + duration;
    let workers: Vec<_> = (0..streams.max(1))
        .map(|worker| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(worker as u64);
                let mut outcomes = Vec::new();
                let mut run = worker * 10_000;
                while Instant::now() < until {
                    outcomes.push(one_request(&target, &mut rng, run).await);
                    run += 1;
                }
                outcomes
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        for outcome in worker.await.context("a soak worker panicked")? {
            match outcome {
                Outcome::Completed(t) => {
                    report.completed += 1;
                    latencies.push(t.as_secs_f64());
                }
                Outcome::Disconnected => report.disconnected += 1,
                Outcome::Failed(e) => {
                    report.errors += 1;
                    report.first_error.get_or_insert(e);
                }
            }
        }
    }
    report.p50_s = percentile(&latencies, 50.0);
    report.p95_s = percentile(&latencies, 95.0);
    // Disconnected requests are retired at the engine's next step: give it a moment.
    let mut after = scrape(target).await?;
    for _ in 0..100 {
        if after.running == Some(0.0) && after.queued == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(target).await?;
    }
    report.rss_end_mib = after.rss_mib;
    report.running_after = after.running;
    report.queued_after = after.queued;
    Ok(report)
}

/// One streamed request with a random prompt length and `max_tokens`; one in four hangs up
/// after a few chunks.
async fn one_request(target: &Target, rng: &mut impl Rng, run: usize) -> Outcome {
    // Up to about 500 prompt tokens, so a 1024-token context still fits.
    let sentences = rng.random_range(1..=24);
    let max_tokens = rng.random_range(1..=96);
    let hang_up_after = rng.random_bool(0.25).then(|| rng.random_range(1..=8));
    let body = json!({
        "model": target.model,
        "messages": long_prompt(run, sentences),
        "max_tokens": max_tokens,
        "stream": true,
    });
    let start = Instant::now();
    let response = match target
        .http()
        .post(format!("{}/v1/chat/completions", target.base))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("sending: {e}")),
    };
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Outcome::Failed(format!("{status}: {text}"));
    }
    let mut lines = LineBuffer::default();
    let mut bytes = response.bytes_stream();
    let mut chunks = 0;
    while let Some(piece) = bytes.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(format!("reading: {e}")),
        };
        for line in lines.push(&piece) {
            match parse_line(&line) {
                None => {}
                Some(Ok(SseData::Done)) => return Outcome::Completed(start.elapsed()),
                Some(Ok(SseData::Chunk(c))) => {
                    if let Some(e) = c.error {
                        return Outcome::Failed(format!("mid-stream: {e}"));
                    }
                    chunks += 1;
                    if hang_up_after == Some(chunks) {
                        return Outcome::Disconnected; // dropping `bytes` closes the stream
                    }
                }
                Some(Err(e)) => return Outcome::Failed(e),
            }
        }
    }
    Outcome::Failed("the stream ended without [DONE]".into())
}

/// What the soak reads from /metrics.
struct Scrape {
    rss_mib: Option<f64>,
    running: Option<f64>,
    queued: Option<f64>,
}

async fn scrape(target: &Target) -> anyhow::Result<Scrape> {
    let text = target
        .http()
        .get(format!("{}/metrics", target.base))
        .send()
        .await
        .context("GET /metrics")?
        .text()
        .await?;
    Ok(Scrape {
        rss_mib: metric_sum(&text, RESIDENT_MEMORY).map(|b| b / (1 << 20) as f64),
        running: metric_sum(&text, RUNNING_SEQUENCES),
        queued: metric_sum(&text, QUEUE_DEPTH),
    })
}
