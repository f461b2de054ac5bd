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
    /// Time to first token when `streams` long prompts (the prompt-processing size) arrive
    /// at once: what a burst of pasted documents waits.
    pub long_ttft_p50_ms: f64,
    pub long_ttft_p95_ms: f64,
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

/// Every measurement on every target, interleaved: each timed run goes to each target in
/// turn (the order alternating from run to run), so a shared machine's speed drifting over
/// minutes moves every target's figures alike. `figures[i]` is `targets[i]`'s.
pub async fn measure(targets: &[Target], plan: &Plan) -> anyhow::Result<Vec<Figures>> {
    let runs = RunNumbers::new();
    let mut figures = vec![Figures::default(); targets.len()];
    let sentences = prompt_processing(targets, plan, &runs, &mut figures).await?;
    decode(targets, plan, &runs, &mut figures).await?;
    for &streams in plan.concurrency.iter().filter(|&&n| n > 1) {
        let levels = concurrent(targets, plan, &runs, streams).await?;
        let long = long_prompts_at_once(targets, plan, &runs, streams, &sentences).await?;
        for ((f, mut level), (p50, p95)) in figures.iter_mut().zip(levels).zip(long) {
            (level.long_ttft_p50_ms, level.long_ttft_p95_ms) = (p50, p95);
            f.concurrent.push(level);
        }
    }
    Ok(figures)
}

/// The targets' indices in the order run `run` visits them: forwards on even runs,
/// backwards on odd ones, so neither target always goes first.
fn turn_order(targets: usize, run: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..targets).collect();
    if run % 2 == 1 {
        order.reverse();
    }
    order
}

/// One-token answers to a long prompt: prompt tokens / time to the first token. Returns
/// each target's sentence count that makes the long prompt `plan.prompt_tokens` long (its
/// own tokenizer's count).
async fn prompt_processing(
    targets: &[Target],
    plan: &Plan,
    runs: &RunNumbers,
    figures: &mut [Figures],
) -> anyhow::Result<Vec<usize>> {
    eprintln!(
        "prompt processing, ~{} tokens, {} runs",
        plan.prompt_tokens, plan.runs
    );
    // The warm-up also calibrates the sentence count against the server's tokenizer.
    let mut sentences = Vec::with_capacity(targets.len());
    for target in targets {
        let first = prompt::initial_sentences(plan.prompt_tokens);
        let warm = target
            .stream_chat(prompt::long_prompt(runs.next(), first), 1)
            .await?;
        let measured = prompt_tokens(target, &warm)?;
        sentences.push(prompt::rescale_sentences(
            first,
            measured,
            plan.prompt_tokens,
        ));
    }
    let mut counts = vec![Vec::new(); targets.len()];
    let mut rates = vec![Vec::new(); targets.len()];
    for run in 0..plan.runs {
        for i in turn_order(targets.len(), run) {
            let t = targets[i]
                .stream_chat(prompt::long_prompt(runs.next(), sentences[i]), 1)
                .await?;
            let n = prompt_tokens(&targets[i], &t)? as f64;
            counts[i].push(n);
            rates[i].push(n / t.first_token().as_secs_f64());
        }
    }
    for (i, f) in figures.iter_mut().enumerate() {
        f.pp_prompt_tokens = median(&counts[i]).unwrap_or(0.0);
        f.pp_tok_s = median(&rates[i]).unwrap_or(0.0);
    }
    Ok(sentences)
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
    targets: &[Target],
    plan: &Plan,
    runs: &RunNumbers,
    figures: &mut [Figures],
) -> anyhow::Result<()> {
    eprintln!("decode, {} tokens, {} runs", plan.gen_tokens, plan.runs);
    for target in targets {
        target
            .stream_chat(prompt::short_prompt(runs.next()), plan.gen_tokens)
            .await?;
    }
    let n = targets.len();
    let (mut rates, mut ttfts, mut prompts) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    for run in 0..plan.runs {
        for i in turn_order(n, run) {
            let t = targets[i]
                .stream_chat(prompt::short_prompt(runs.next()), plan.gen_tokens)
                .await?;
            ttfts[i].push(t.first_token().as_secs_f64() * 1000.0);
            prompts[i].extend(t.usage.map(|u| u.prompt_tokens as f64));
            if let Some(rate) = decode_rate(&t) {
                rates[i].push(rate);
            }
        }
    }
    for (i, f) in figures.iter_mut().enumerate() {
        if rates[i].is_empty() {
            bail!(
                "{} streamed too few tokens to time decoding (is --gen-tokens at least 2?)",
                targets[i].name
            );
        }
        f.decode_tok_s = median(&rates[i]).unwrap_or(0.0);
        f.ttft_ms = median(&ttfts[i]).unwrap_or(0.0);
        f.ttft_prompt_tokens = median(&prompts[i]).unwrap_or(0.0);
    }
    Ok(())
}

/// Tokens after the first per second between the first and the last content.
fn decode_rate(t: &StreamTiming) -> Option<f64> {
    let (first, last) = (t.first_content?, t.last_content?);
    let span = last.checked_sub(first)?.as_secs_f64();
    let tokens = t.completion_tokens().checked_sub(1)?;
    (span > 0.0 && tokens > 0).then(|| tokens as f64 / span)
}

/// `streams` decodes sent at once, to each target in turn.
async fn concurrent(
    targets: &[Target],
    plan: &Plan,
    runs: &RunNumbers,
    streams: usize,
) -> anyhow::Result<Vec<ConcurrentFigures>> {
    eprintln!(
        "decode, {streams} concurrent streams of {} tokens, {} runs",
        plan.gen_tokens, plan.runs
    );
    let n = targets.len();
    let (mut rates, mut ttfts) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    for run in 0..plan.runs {
        for i in turn_order(n, run) {
            let start = Instant::now();
            let batch = try_join_all((0..streams).map(|_| {
                targets[i].stream_chat(prompt::short_prompt(runs.next()), plan.gen_tokens)
            }))
            .await?;
            let wall = start.elapsed().as_secs_f64();
            let tokens: u64 = batch.iter().map(StreamTiming::completion_tokens).sum();
            rates[i].push(tokens as f64 / wall);
            ttfts[i].extend(batch.iter().map(|t| t.first_token().as_secs_f64() * 1000.0));
        }
    }
    Ok((0..n)
        .map(|i| ConcurrentFigures {
            streams,
            aggregate_tok_s: median(&rates[i]).unwrap_or(0.0),
            ttft_p50_ms: percentile(&ttfts[i], 50.0).unwrap_or(0.0),
            ttft_p95_ms: percentile(&ttfts[i], 95.0).unwrap_or(0.0),
            long_ttft_p50_ms: 0.0,
            long_ttft_p95_ms: 0.0,
        })
        .collect())
}

/// `streams` long prompts (each its own run, so no prefix cache serves them; `sentences`
/// per target as calibrated) sent at once with one-token answers, to each target in turn:
/// each target's time-to-first-token p50 and p95.
async fn long_prompts_at_once(
    targets: &[Target],
    plan: &Plan,
    runs: &RunNumbers,
    streams: usize,
    sentences: &[usize],
) -> anyhow::Result<Vec<(f64, f64)>> {
    eprintln!(
        "time to first token, {streams} concurrent ~{}-token prompts, {} runs",
        plan.prompt_tokens, plan.runs
    );
    let n = targets.len();
    let mut ttfts = vec![Vec::new(); n];
    for run in 0..plan.runs {
        for i in turn_order(n, run) {
            let batch = try_join_all((0..streams).map(|_| {
                targets[i].stream_chat(prompt::long_prompt(runs.next(), sentences[i]), 1)
            }))
            .await?;
            ttfts[i].extend(batch.iter().map(|t| t.first_token().as_secs_f64() * 1000.0));
        }
    }
    Ok(ttfts
        .iter()
        .map(|t| {
            (
                percentile(t, 50.0).unwrap_or(0.0),
                percentile(t, 95.0).unwrap_or(0.0),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::sse::Usage;
    use super::*;

    #[test]
    fn runs_alternate_which_target_goes_first() {
        assert_eq!(turn_order(2, 0), [0, 1]);
        assert_eq!(turn_order(2, 1), [1, 0]);
        assert_eq!(turn_order(1, 1), [0]);
    }

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
