//! The measurements: prompt processing, single-stream decode and TTFT, and decode with
//! several streams at once. Each runs once to warm up and then `runs` times; the figures
//! are medians (percentiles for TTFT across concurrent streams).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use futures::future::try_join_all;

use super::client::{StreamTiming, Target};
use super::prompt;
use super::stats::{median, percentile};

/// What to measure, from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub runs: usize,
    /// Stream counts for the concurrent decode; 1 is the single-stream figure, always taken.
    pub concurrency: Vec<usize>,
}

/// One target's results.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// The server's own count of the long prompt's tokens (median over runs).
    pub pp_prompt_tokens: f64,
    pub pp_tok_s: f64,
    pub decode_tok_s: f64,
    pub ttft_ms: f64,
    /// The server's count of the short prompt's tokens (0 if it sent no usage).
    pub ttft_prompt_tokens: f64,
    pub concurrent: Vec<ConcurrentFigures>,
    /// Only for a wick running in this process.
    pub peak_rss_mib: Option<f64>,
    /// Share of prompt tokens served from wick's prefix cache over the whole run.
    pub prefix_cache_hit_pct: Option<f64>,
    /// What wick's /health says the model's weights and its full KV cache take, MiB.
    pub weight_mib: Option<f64>,
    pub kv_mib: Option<f64>,
}

impl Figures {
    /// The figures a wick server reports about itself (its engine's /health entry).
    pub fn read_engine_health(&mut self, engine: &serde_json::Value) {
        let mib = |key: &str| engine[key].as_f64().map(|b| b / (1u64 << 20) as f64);
        self.weight_mib = mib("weight_bytes");
        self.kv_mib = mib("kv_bytes");
        let prompt = engine["prompt_tokens"].as_f64().unwrap_or(0.0);
        let hits = engine["prefix_cache_hits"].as_f64();
        self.prefix_cache_hit_pct = hits.filter(|_| prompt > 0.0).map(|h| 100.0 * h / prompt);
    }
}

#[derive(Debug, Clone)]
pub struct ConcurrentFigures {
    pub streams: usize,
    /// All streams' completion tokens over the wall time of the whole batch.
    pub aggregate_tok_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p95_ms: f64,
}

/// Hands out run numbers for prompt prefixes. It starts from the clock (milliseconds mod
/// 10^6, kept short because SmolLM2 spends a token per digit; it wraps every ~17 minutes)
/// so that a second `wick bench` against the same long-lived server does not repeat the
/// first one's prefixes.
struct RunNumbers(AtomicUsize);

impl RunNumbers {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as usize % 1_000_000)
            .unwrap_or(0);
        Self(AtomicUsize::new(seed))
    }

    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

pub async fn measure(target: &Target, plan: &Plan) -> anyhow::Result<Figures> {
    let runs = RunNumbers::new();
    let mut figures = Figures::default();
    (figures.pp_prompt_tokens, figures.pp_tok_s) = prompt_processing(target, plan, &runs).await?;
    (
        figures.decode_tok_s,
        figures.ttft_ms,
        figures.ttft_prompt_tokens,
    ) = decode(target, plan, &runs).await?;
    for &streams in plan.concurrency.iter().filter(|&&n| n > 1) {
        figures
            .concurrent
            .push(concurrent(target, plan, &runs, streams).await?);
    }
    Ok(figures)
}

/// One-token answers to a long prompt: prompt tokens / time to the first token.
async fn prompt_processing(
    target: &Target,
    plan: &Plan,
    runs: &RunNumbers,
) -> anyhow::Result<(f64, f64)> {
    eprintln!(
        "[{}] prompt processing, ~{} tokens, {} runs",
        target.name, plan.prompt_tokens, plan.runs
    );
    // The warm-up also calibrates the sentence count against the server's tokenizer.
    let mut sentences = prompt::initial_sentences(plan.prompt_tokens);
    let warm = target
        .stream_chat(prompt::long_prompt(runs.next(), sentences), 1)
        .await?;
    let measured = prompt_tokens(target, &warm)?;
    sentences = prompt::rescale_sentences(sentences, measured, plan.prompt_tokens);

    let (mut counts, mut rates) = (Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        let t = target
            .stream_chat(prompt::long_prompt(runs.next(), sentences), 1)
            .await?;
        let n = prompt_tokens(target, &t)? as f64;
        counts.push(n);
        rates.push(n / t.first_token().as_secs_f64());
    }
    Ok((
        median(&counts).unwrap_or(0.0),
        median(&rates).unwrap_or(0.0),
    ))
}

fn prompt_tokens(target: &Target, t: &StreamTiming) -> anyhow::Result<u64> {
    match t.usage {
        Some(u) => Ok(u.prompt_tokens),
        None => bail!(
            "{} sent no usage in its stream (stream_options.include_usage); \
             cannot count prompt tokens",
            target.name
        ),
    }
}

/// `gen_tokens` greedy tokens after a short prompt: tokens after the first over the time
/// from the first to the last; the same requests give the time to first token (and the
/// short prompt's token count, to label it).
async fn decode(
    target: &Target,
    plan: &Plan,
    runs: &RunNumbers,
) -> anyhow::Result<(f64, f64, f64)> {
    eprintln!(
        "[{}] decode, {} tokens, {} runs",
        target.name, plan.gen_tokens, plan.runs
    );
    target
        .stream_chat(prompt::short_prompt(runs.next()), plan.gen_tokens)
        .await?;
    let (mut rates, mut ttfts, mut prompts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        let t = target
            .stream_chat(prompt::short_prompt(runs.next()), plan.gen_tokens)
            .await?;
        ttfts.push(t.first_token().as_secs_f64() * 1000.0);
        prompts.extend(t.usage.map(|u| u.prompt_tokens as f64));
        if let Some(rate) = decode_rate(&t) {
            rates.push(rate);
        }
    }
    if rates.is_empty() {
        bail!(
            "{} streamed too few tokens to time decoding (is --gen-tokens at least 2?)",
            target.name
        );
    }
    Ok((
        median(&rates).unwrap_or(0.0),
        median(&ttfts).unwrap_or(0.0),
        median(&prompts).unwrap_or(0.0),
    ))
}

/// Tokens after the first per second between the first and the last content.
fn decode_rate(t: &StreamTiming) -> Option<f64> {
    let (first, last) = (t.first_content?, t.last_content?);
    let span = last.checked_sub(first)?.as_secs_f64();
    let tokens = t.completion_tokens().checked_sub(1)?;
    (span > 0.0 && tokens > 0).then(|| tokens as f64 / span)
}

/// `streams` decodes sent at once.
async fn concurrent(
    target: &Target,
    plan: &Plan,
    runs: &RunNumbers,
    streams: usize,
) -> anyhow::Result<ConcurrentFigures> {
    eprintln!(
        "[{}] decode, {streams} concurrent streams of {} tokens, {} runs",
        target.name, plan.gen_tokens, plan.runs
    );
    let (mut rates, mut ttfts) = (Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        let start = Instant::now();
        let batch = try_join_all(
            (0..streams)
                .map(|_| target.stream_chat(prompt::short_prompt(runs.next()), plan.gen_tokens)),
        )
        .await?;
        let wall = start.elapsed().as_secs_f64();
        let tokens: u64 = batch.iter().map(StreamTiming::completion_tokens).sum();
        rates.push(tokens as f64 / wall);
        ttfts.extend(batch.iter().map(|t| t.first_token().as_secs_f64() * 1000.0));
    }
    Ok(ConcurrentFigures {
        streams,
        aggregate_tok_s: median(&rates).unwrap_or(0.0),
        ttft_p50_ms: percentile(&ttfts, 50.0).unwrap_or(0.0),
        ttft_p95_ms: percentile(&ttfts, 95.0).unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::sse::Usage;
    use super::*;

    #[test]
    fn decode_rate_excludes_the_first_token() {
        let t = StreamTiming {
            first_content: Some(Duration::from_millis(100)),
            last_content: Some(Duration::from_millis(1100)),
            finished: Duration::from_millis(1100),
            content_chunks: 50,
            usage: Some(Usage {
                prompt_tokens: 30,
                completion_tokens: 101,
            }),
        };
        assert_eq!(decode_rate(&t), Some(100.0));
        let one = StreamTiming {
            last_content: Some(Duration::from_millis(100)),
            ..t
        };
        assert_eq!(decode_rate(&one), None);
    }
}
