//! Prometheus metrics: the names wick records (through the `metrics` facade, from wherever
//! the event happens) and the exporter that renders them for `GET /metrics`.
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder), so servers
//! started in one process — tests do that — share counters; gauges describing the engines
//! are set from the server being scraped just before rendering.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::engine::ModelRegistry;

/// Requests answered, by route and status.
pub const HTTP_REQUESTS: &str = "wick_http_requests_total";
/// From a generation request's arrival to its last byte, seconds.
pub const REQUEST_DURATION: &str = "wick_request_duration_seconds";
pub const TIME_TO_FIRST_TOKEN: &str = "wick_time_to_first_token_seconds";
pub const INTER_TOKEN_LATENCY: &str = "wick_inter_token_latency_seconds";
pub const PROMPT_TOKENS: &str = "wick_prompt_tokens_total";
pub const GENERATED_TOKENS: &str = "wick_generated_tokens_total";
pub const QUEUE_DEPTH: &str = "wick_queue_depth";
pub const RUNNING_SEQUENCES: &str = "wick_running_sequences";
pub const KV_CACHE_TOKENS: &str = "wick_kv_cache_tokens";
pub const KV_CACHE_USAGE: &str = "wick_kv_cache_usage_ratio";
pub const PREFIX_CACHE_HITS: &str = "wick_prefix_cache_hit_tokens_total";
/// Sequences that gave their paged KV blocks up to older ones (and recomputed later).
pub const KV_PREEMPTIONS: &str = "wick_kv_preemptions_total";
/// Panics an engine caught and recovered from (each failed only the requests it touched).
pub const ENGINE_FAULTS: &str = "wick_engine_faults_total";
pub const MODELS_LOADED: &str = "wick_models_loaded";
pub const OPEN_CONNECTIONS: &str = "wick_open_connections";
/// This process's resident memory, bytes (Linux).
pub const RESIDENT_MEMORY: &str = "wick_process_resident_memory_bytes";

/// Bytes a loaded model's weights take, as its kernels hold them.
pub const MODEL_WEIGHT_BYTES: &str = "wick_model_weight_bytes";
/// Bytes a loaded model's KV cache takes with every slot in use.
pub const KV_CACHE_BYTES: &str = "wick_kv_cache_bytes";

/// Requests sent to an upstream replica (each attempt counts), by model and replica.
pub const UPSTREAM_REQUESTS: &str = "wick_upstream_requests_total";
/// Upstream failures by model, replica and kind (connect, timeout, status_5xx, busy, auth,
/// rejected, closed, stream, error_event).
pub const UPSTREAM_ERRORS: &str = "wick_upstream_errors_total";
/// From sending a request upstream to its first event, seconds.
pub const UPSTREAM_FIRST_EVENT: &str = "wick_upstream_first_event_seconds";
/// From sending a request upstream to the end of its stream, seconds.
pub const UPSTREAM_REQUEST_DURATION: &str = "wick_upstream_request_duration_seconds";
/// 1 while a replica takes requests, 0 while a failure has taken it out.
pub const UPSTREAM_HEALTHY: &str = "wick_upstream_replica_healthy";
/// Requests this server has running on a replica now.
pub const UPSTREAM_OUTSTANDING: &str = "wick_upstream_outstanding_requests";

/// Safety verdicts by direction (input, output) and verdict (pass, annotate, refuse).
pub const SAFETY_VERDICTS: &str = "wick_safety_verdicts_total";
/// Judgements in which a dimension reached its policy threshold, by direction and dimension.
pub const SAFETY_FLAGS: &str = "wick_safety_flags_total";
/// How long one guard judgement took, by direction, seconds.
pub const GUARD_DURATION: &str = "wick_guard_duration_seconds";

/// Gauge: how long the loaded model took to load, seconds.
pub const MODEL_LOAD_TIME: &str = "wick_model_load_duration_seconds";

/// Latency buckets from a fast token (a few ms) to a long answer on a slow CPU.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The process's Prometheus handle, installing the recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when something else installed a recorder first; then wick's metrics
        // go there and this handle renders nothing, which beats refusing to start.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// The text exposition of every metric, with the engine gauges read from `models` now.
pub fn render(models: &ModelRegistry) -> String {
    let handle = handle();
    let loaded = models.loaded();
    gauge!(MODELS_LOADED).set(loaded.len() as f64);
    for entry in models.catalog.models.iter().filter(|m| !m.is_upstream()) {
        let model = entry.id.clone();
        let served = loaded.iter().find(|m| m.entry.id == entry.id);
        let h = served.map(|m| m.backend.health()).unwrap_or_default();
        gauge!(QUEUE_DEPTH, "model" => model.clone()).set(h.waiting as f64);
        gauge!(RUNNING_SEQUENCES, "model" => model.clone()).set(h.running as f64);
        gauge!(KV_CACHE_TOKENS, "model" => model.clone()).set(h.kv_tokens as f64);
        let usage = if h.kv_capacity_tokens > 0 {
            h.kv_tokens as f64 / h.kv_capacity_tokens as f64
        } else {
            0.0
        };
        gauge!(KV_CACHE_USAGE, "model" => model.clone()).set(usage);
        gauge!(MODEL_WEIGHT_BYTES, "model" => model.clone()).set(h.weight_bytes as f64);
        gauge!(KV_CACHE_BYTES, "model" => model.clone()).set(h.kv_bytes as f64);
        gauge!(MODEL_LOAD_TIME, "model" => model.clone())
            .set(served.map_or(0.0, |m| m.load_time.as_secs_f64()));
        if served.is_some() {
            // The engine's own running total; a reloaded model starts again from zero.
            counter!(PREFIX_CACHE_HITS, "model" => model.clone())
                .absolute(h.prefix_cache_hits as u64);
            counter!(KV_PREEMPTIONS, "model" => model.clone()).absolute(h.preempted as u64);
            counter!(ENGINE_FAULTS, "model" => model).absolute(h.faults as u64);
        }
    }
    for upstream in models.upstreams() {
        for replica in upstream.backend.health().replicas {
            let labels = [
                ("model", upstream.entry.id.clone()),
                ("replica", replica.url.clone()),
            ];
            gauge!(UPSTREAM_HEALTHY, &labels).set(if replica.healthy { 1.0 } else { 0.0 });
            gauge!(UPSTREAM_OUTSTANDING, &labels).set(replica.outstanding as f64);
        }
    }
    if let Some(bytes) = resident_bytes() {
        gauge!(RESIDENT_MEMORY).set(bytes as f64);
    }
    handle.run_upkeep();
    handle.render()
}

/// `VmRSS` from `/proc/self/status`, where there is one.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The sum of a metric's samples over all its label sets in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None; // another metric whose name starts with this one
            }
            l.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// One answered HTTP request.
pub fn record_request(route: &str, status: u16) {
    counter!(HTTP_REQUESTS, "route" => route.to_string(), "status" => status.to_string())
        .increment(1);
}

/// Timing of one generation as its events reach the client.
pub struct GenerationTimer {
    model: String,
    started: std::time::Instant,
    last_token: Option<std::time::Instant>,
}

impl GenerationTimer {
    /// Start timing a request that arrived at `started`.
    pub fn new(model: &str, started: std::time::Instant) -> Self {
        Self {
            model: model.to_string(),
            started,
            last_token: None,
        }
    }

    /// Text reached the client: the first is the time to first token, the rest inter-token gaps.
    pub fn text(&mut self) {
        let now = std::time::Instant::now();
        match self.last_token {
            None => histogram!(TIME_TO_FIRST_TOKEN, "model" => self.model.clone())
                .record((now - self.started).as_secs_f64()),
            Some(last) => histogram!(INTER_TOKEN_LATENCY, "model" => self.model.clone())
                .record((now - last).as_secs_f64()),
        }
        self.last_token = Some(now);
    }

    /// The request finished (tokens as the engine counted them).
    pub fn done(&self, prompt_tokens: usize, generated_tokens: usize) {
        counter!(PROMPT_TOKENS, "model" => self.model.clone()).increment(prompt_tokens as u64);
        counter!(GENERATED_TOKENS, "model" => self.model.clone())
            .increment(generated_tokens as u64);
    }
}

impl Drop for GenerationTimer {
    /// End to end, however the request ended (finished, failed or the client left).
    fn drop(&mut self) {
        histogram!(REQUEST_DURATION, "model" => self.model.clone())
            .record(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn sums_a_metric_over_labels() {
        let text = "# TYPE wick_running_sequences gauge\n\
                    wick_running_sequences{model=\"a\"} 2\n\
                    wick_running_sequences{model=\"b\"} 1\n\
                    wick_running_sequences_extra 9\n";
        assert_eq!(metric_sum(text, "wick_running_sequences"), Some(3.0));
        assert_eq!(metric_sum(text, "wick_queue_depth"), None);
    }
}
