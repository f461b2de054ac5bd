//! `wick bench`: prompt processing, decode speed and time to first token, for wick and,
//! with `--compare URL`, for another OpenAI-compatible server (llama.cpp's llama-server)
//! measured the same way over the same streaming HTTP API.
//!
//! The parts: `local` starts wick in this process, `client` talks to one server, `sse` reads
//! its stream, `prompt` writes the prompts, `scenario` times them, `stats` summarises,
//! `report` prints the table and `rss` reads peak memory. Progress goes to stderr, the
//! table alone to stdout, so `wick bench > results.txt` keeps just the table.

mod client;
mod local;
mod prompt;
mod report;
mod rss;
mod scenario;
mod soak;
pub(crate) mod sse;
mod stats;

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::ServeArgs;
use client::Target;
use local::LocalServer;
use scenario::Plan;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Benchmark the wick already running at this URL instead of starting one in-process.
    #[arg(long)]
    pub url: Option<String>,
    /// Also benchmark this OpenAI-compatible server (e.g. llama-server) and show ratios.
    #[arg(long)]
    pub compare: Option<String>,
    /// Model name to send to the --compare server. Default: the first of its /v1/models.
    #[arg(long, requires = "compare")]
    pub compare_model: Option<String>,
    /// Process id of the --compare server, to show its peak resident memory beside wick's
    /// (Linux's /proc; both then count the same thing).
    #[arg(long, requires = "compare")]
    pub compare_pid: Option<u32>,
    /// Approximate prompt length for the prompt-processing figure, in tokens.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens generated per decode request (exactly that many: `ignore_eos`).
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Timed repetitions of each measurement, after one warm-up; the median is shown.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Concurrent decode streams to measure, e.g. 1,4,8 (1: the single-stream figures only).
    /// With --soak: the number of streams kept going (the largest value given).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub concurrency: Vec<usize>,
    /// Soak test instead: keep --concurrency streams going for this many minutes, with
    /// random prompt lengths, max_tokens and disconnects; print requests, errors, p50/p95
    /// latency and the server's memory at the start and end.
    #[arg(long, value_name = "MINUTES")]
    pub soak: Option<f64>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl BenchArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if self.gen_tokens < 2 {
            bail!("--gen-tokens must be at least 2 to time decoding");
        }
        if self.prompt_tokens == 0 {
            bail!("--prompt-tokens must be at least 1");
        }
        if self.concurrency.contains(&0) {
            bail!("--concurrency values must be at least 1");
        }
        let mut concurrency = self.concurrency.clone();
        concurrency.sort_unstable();
        concurrency.dedup();
        Ok(Plan {
            prompt_tokens: self.prompt_tokens,
            gen_tokens: self.gen_tokens,
            runs: self.runs,
            concurrency,
        })
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    // No overall timeout: a slow model on a small machine may take minutes for one
    // request. Unreachable servers are caught by `Target::connect`'s own timeout.
    // A fresh connection per request: llama-server closes idle keep-alive connections after
    // a few seconds, and a pooled one it closed fails the next request (seen as "does not
    // answer" between phases). Both servers pay the same loopback connect.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .context("building the HTTP client")?;

    // Check the comparison server before loading anything, so a wrong URL fails at once.
    let other = match &args.compare {
        Some(url) => Some(
            Target::connect(&http, None, url, args.compare_model.clone())
                .await
                .with_context(|| format!("--compare {url}"))?,
        ),
        None => None,
    };

    let (wick, local) = match &args.url {
        Some(url) => {
            let t = Target::connect(&http, Some("wick"), url, args.serve.model.clone())
                .await
                .with_context(|| format!("--url {url}"))?;
            (t, None)
        }
        None => {
            eprintln!("starting wick in-process…");
            let local = LocalServer::start(&args.serve).await?;
            eprintln!(
                "wick serves '{}' on {} at {}",
                local.model, local.device, local.base_url
            );
            let t = Target::new(http.clone(), "wick", &local.base_url, local.model.clone());
            (t, Some(local))
        }
    };

    if let Some(minutes) = args.soak {
        let streams = plan.concurrency.iter().copied().max().unwrap_or(1);
        let duration = Duration::try_from_secs_f64(minutes * 60.0)
            .context("--soak must be a number of minutes ≥ 0")?;
        eprintln!("soak: {streams} streams for {minutes} min…");
        let result = soak::soak(&wick, duration, streams).await;
        if let Some(local) = local {
            local.stop().await;
        }
        let report = result?;
        if let Some(e) = &report.first_error {
            eprintln!("first error: {e}");
        }
        print!("{}", report.render(minutes, streams));
        return Ok(());
    }

    let mut targets = vec![wick];
    targets.extend(other);
    for t in &targets {
        eprintln!("{}: model '{}' at {}", t.name, t.model, t.base);
    }

    let result = measure_all(&targets, &plan, local.is_some(), args.compare_pid).await;
    if let Some(local) = local {
        local.stop().await;
    }
    let figures = result?;

    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    if let [a, b] = figures.as_slice() {
        if (a.pp_prompt_tokens - b.pp_prompt_tokens).abs() > 0.02 * a.pp_prompt_tokens {
            eprintln!(
                "note: the servers counted the long prompt differently ({:.0} and {:.0} tokens)",
                a.pp_prompt_tokens, b.pp_prompt_tokens
            );
        }
    }
    print!("{}", report::render(&names, &figures));
    Ok(())
}

/// Measure the targets, never at once (on a small machine they would share the cores and
/// both figures would be wrong) but run by run in turn (`scenario::measure`).
async fn measure_all(
    targets: &[Target],
    plan: &Plan,
    wick_in_process: bool,
    compare_pid: Option<u32>,
) -> anyhow::Result<Vec<scenario::Figures>> {
    let mut all = scenario::measure(targets, plan).await?;
    // VmHWM is this process's: it says something about wick only when wick runs here.
    if wick_in_process {
        all[0].peak_rss_mib = rss::peak_rss_mib();
    }
    if let Some(other) = all.get_mut(1) {
        other.peak_rss_mib = compare_pid.and_then(rss::peak_rss_mib_of);
    }
    if let Some(engine) = targets[0].engine_health().await {
        all[0].read_engine_health(&engine);
    }
    Ok(all)
}
