//! The engine: the only place that runs a model. It lives on its own thread; request
//! handlers reach it through [`Backend`] (submit a request, receive a stream of events,
//! cancel by dropping the stream) and never touch the model.

mod admission;
pub mod constraint;
pub mod embedder;
mod pooled;
mod prefix_cache;
pub mod registry;
pub(crate) mod sampler;
mod scheduler;
mod sequence;
mod stop;
pub mod trigger;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::model::bert::Pooling;
pub use crate::model::kv_cache::{KvType, Q8_BLOCK};
use crate::model::{KvPool, KvShape, LoadedModel};
pub use admission::{client_share, ClientId, ANONYMOUS};
pub use constraint::{Constraint, GrammarCompiler};
use pooled::EmbedJob;
pub use registry::{LoadError, ModelRegistry, RegistryLimits, ServedModel};
pub use sampler::{SamplingParams, TokenLogprob};
pub use trigger::{Preamble, Trigger};

/// One generation job, already tokenized.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Most tokens to generate; the caller has checked that prompt + this fits the context.
    pub max_tokens: usize,
    /// Strings that end generation; never emitted.
    pub stop: Vec<String>,
    /// Keep generating past end-of-turn tokens until `max_tokens` (for benchmarks).
    pub ignore_eos: bool,
    /// A grammar the output must follow (tool calls, response_format); None: free text.
    pub constraint: Option<Constraint>,
    /// When to stop generating whatever `max_tokens` says (`--request-timeout`); the
    /// request then finishes with `Length`.
    pub deadline: Option<std::time::Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of turn (or a grammar that finished).
    Stop,
    /// The request's stop string of this index (in its `stop` list) came up.
    StopSequence(usize),
    /// `max_tokens` or the context ran out.
    Length,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Tokens sampled for the answer; the end-of-turn token is not counted.
    pub completion_tokens: usize,
}

/// What a request's stream carries, in order: text deltas (each sampled token's
/// log-probabilities before the text it adds, when the request asked for them), then exactly
/// one `Done` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Newly generated text; never splits a UTF-8 character, never contains a stop string.
    Text(String),
    /// A sampled token and its log-probabilities (only when `SamplingParams::logprobs` is set;
    /// not sent for the end-of-turn token).
    Logprob(TokenLogprob),
    Done {
        finish: FinishReason,
        usage: Usage,
    },
    Error(String),
    /// Thinking a remote engine returned apart from the answer (`reasoning_content`).
    Reasoning(String),
    /// A tool call a remote engine returned whole (a local model's calls are read from its
    /// text by the api layer).
    Call(crate::tools::ToolCall),
}

/// Events of one request. Dropping it cancels the request and frees its slot at once.
pub type EventStream = UnboundedReceiver<Event>;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is busy: {0} requests are already waiting")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
    /// A remote engine refused or failed the request before anything was generated: the
    /// HTTP status the client gets (502, 503, 504, or the upstream's own 4xx) and why.
    #[error("{message}")]
    Upstream {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// The request was given at the level this backend does not take (token ids to a
    /// remote engine, a whole request to the local one).
    #[error("this backend does not take requests of this kind")]
    WrongLevel,
    /// The model does not do what was asked (generation from an embedding model, embeddings
    /// from a chat model): a 400 that says why.
    #[error("{0}")]
    Unsupported(String),
}

/// What [`Backend::embed`] resolves to: one vector per input, in order, or why not.
pub type EmbedSubmission = futures::future::BoxFuture<'static, Result<Vec<Vec<f32>>, SubmitError>>;

/// Which OpenAI endpoint a whole request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// A request handed over whole, as an OpenAI body, to a backend that renders and tokenizes
/// prompts itself (a remote engine, src/upstream/). The api layer has already checked it,
/// routed it and applied the tradition layer; the backend sets `model` and the streaming
/// fields it needs.
#[derive(Debug, Clone)]
pub struct WholeRequest {
    pub endpoint: Endpoint,
    pub body: serde_json::Map<String, serde_json::Value>,
    /// How many choices the body asks for: one event stream each.
    pub choices: usize,
    /// When to stop whatever the body asks (`--request-timeout`); the choices then end with
    /// `Length`.
    pub deadline: Option<std::time::Instant>,
}

/// What [`Backend::submit_whole`] resolves to: one event stream per choice, once the
/// backend has accepted the request (for a remote engine: its first event has arrived, so a
/// refusal is still an HTTP error and a retry elsewhere is still safe).
pub type WholeSubmission =
    futures::future::BoxFuture<'static, Result<Vec<EventStream>, SubmitError>>;

/// A snapshot of the engine for /health.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub alive: bool,
    pub running: usize,
    pub waiting: usize,
    pub slots: usize,
    /// Requests whose client went away before they finished, since the start.
    pub cancelled: usize,
    /// Prompt tokens admitted since the start, and how many of them came from the prefix
    /// cache instead of being computed.
    pub prompt_tokens: usize,
    pub prefix_cache_hits: usize,
    /// Tokens held in the KV slots of running sequences, and what all slots could hold.
    pub kv_tokens: usize,
    pub kv_capacity_tokens: usize,
    /// The KV cache's layout: `slots` or `paged`.
    pub kv_layout: &'static str,
    /// Sequences whose cache was given up for older ones when a paged cache ran short (each
    /// recomputes its tokens later and goes on), since the start.
    pub preempted: usize,
    /// Bytes of the model's weights as the kernels hold them.
    pub weight_bytes: u64,
    /// Bytes of the KV cache with every slot in use (slots are allocated on first use; a
    /// paged cache all at once).
    pub kv_bytes: u64,
    /// Panics the engine caught and recovered from since the start (each failed only the
    /// requests it touched), and the last one's message.
    pub faults: usize,
    pub last_fault: Option<String>,
    /// A fault happened in the last [`FAULT_WINDOW`]: /health says `degraded`.
    #[serde(skip)]
    pub recent_fault: bool,
    /// A remote engine's replicas (empty for the local engine).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaHealth>,
}

/// One replica of a remote engine, for /health and /metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaHealth {
    /// Its base URL without credentials.
    pub url: String,
    /// Taking requests; false while a failure has taken it out.
    pub healthy: bool,
    /// Requests this server has running on it now.
    pub outstanding: usize,
}

/// How long after a caught engine fault /health reports the model `degraded`.
pub const FAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// The seam between the API and whatever generates tokens.
pub trait Backend: Send + Sync {
    fn submit(&self, request: GenerateRequest) -> Result<EventStream, SubmitError> {
        let mut streams = self.submit_all(vec![request])?;
        Ok(streams.pop().expect("one stream per request"))
    }
    /// Submit requests that belong together (a request's `n` choices): all are queued or,
    /// when the queue cannot take them all, none.
    fn submit_all(&self, requests: Vec<GenerateRequest>) -> Result<Vec<EventStream>, SubmitError> {
        self.submit_for(ANONYMOUS, requests)
    }
    /// [`Self::submit_all`] for one client: the queue is shared fairly between clients
    /// (src/engine/admission.rs).
    fn submit_for(
        &self,
        client: ClientId,
        requests: Vec<GenerateRequest>,
    ) -> Result<Vec<EventStream>, SubmitError>;
    /// Requests that may wait at once; a group larger than [`client_share`] of it can never
    /// be queued.
    fn queue_capacity(&self) -> usize;
    fn health(&self) -> Health;
    /// Submit a whole OpenAI request. Only a backend that renders prompts itself takes
    /// these; the local engine takes token ids ([`Self::submit_for`]).
    fn submit_whole(&self, _client: ClientId, _request: WholeRequest) -> WholeSubmission {
        Box::pin(async { Err(SubmitError::WrongLevel) })
    }
    /// Whether this backend takes whole requests ([`Self::submit_whole`]) instead of
    /// token ids.
    fn takes_whole_requests(&self) -> bool {
        false
    }
    /// Embed token sequences (each already framed as the model wants, e.g. `[CLS] .. [SEP]`):
    /// one vector of length 1 per sequence, in order. An embedding model's backend
    /// ([`embedder::Embedder`]) makes them, and a decoder's [`Engine`] where
    /// [`EngineConfig::pooled_embeddings`] turns them on.
    fn embed(&self, _client: ClientId, _inputs: Vec<Vec<u32>>) -> EmbedSubmission {
        Box::pin(async { Err(SubmitError::WrongLevel) })
    }
    /// Whether [`Self::embed`] works here.
    fn makes_embeddings(&self) -> bool {
        false
    }
    /// The length of the vectors [`Self::embed`] returns (0 where it makes none).
    fn embedding_dimensions(&self) -> usize {
        0
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences that run at once, each with its own KV slot.
    pub max_sequences: usize,
    /// Requests that may wait for a slot; past it, submit fails with `QueueFull`.
    pub queue_capacity: usize,
    /// Most prompt tokens processed in one step, so a long prompt does not stall the
    /// sequences already generating.
    pub prefill_chunk: usize,
    /// The KV cache's layout.
    pub kv_layout: KvLayout,
    /// What the CPU's slots cache stores per value.
    pub kv_type: KvType,
    /// Bytes the paged layout takes (all layers, keys and values). None: enough for
    /// `max_sequences` full contexts.
    pub kv_budget: Option<u64>,
    /// Sample with wick's sampling kernel on the model's device, so only token ids cross to
    /// the host (requests with penalties, bias, log-probabilities or a grammar still sample
    /// on the host). None: on a CUDA device only; on the CPU the kernel's CPU reference runs.
    pub device_sampling: Option<bool>,
    /// Faults tests inject (src/faults.rs); None outside tests.
    pub faults: Option<Arc<crate::faults::Faults>>,
    /// Answer /v1/embeddings with the model's token vectors pooled so (src/engine/pooled.rs);
    /// None: the model makes no embeddings (a chat model, unless its operator asks).
    pub pooled_embeddings: Option<Pooling>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_sequences: 4,
            queue_capacity: 64,
            prefill_chunk: 512,
            kv_layout: KvLayout::Auto,
            kv_type: KvType::F16,
            kv_budget: None,
            device_sampling: None,
            faults: None,
            pooled_embeddings: None,
        }
    }
}

impl EngineConfig {
    /// Bytes the KV cache of a model with `shape` takes at most on `device`.
    pub fn kv_bytes(&self, shape: &KvShape, device: &candle_core::Device) -> u64 {
        match self.kv_layout.resolve(device, shape) {
            KvLayout::Paged => self.kv_budget.unwrap_or(
                (self.max_sequences * shape.blocks_per_context() * shape.block_bytes()) as u64,
            ),
            _ if device.is_cpu() => {
                (self.max_sequences.max(1) * shape.slot_bytes_as(self.kv_type)) as u64
            }
            // Device slots are f32 tensors.
            _ => (self.max_sequences.max(1) * shape.slot_bytes() * 2) as u64,
        }
    }
}

/// `--kv-cache`: how the KV cache is laid out (see `model::kv_cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KvLayout {
    /// Paged on a CUDA GPU (its kernels read blocks; head sizes 64, 128 and 256), slots
    /// elsewhere.
    #[default]
    Auto,
    /// One full-context region per sequence.
    Slots,
    /// Fixed-size blocks shared by all sequences under `--kv-budget`.
    Paged,
}

impl KvLayout {
    /// The layout `Auto` means on `device` for a cache of `shape`: paged where wick's paged
    /// attention kernel covers the head size.
    pub fn resolve(self, device: &candle_core::Device, shape: &KvShape) -> KvLayout {
        let kernel_fits =
            crate::model::cuda::paged_attention::KERNEL_HEAD_DIMS.contains(&shape.head_dim);
        match self {
            KvLayout::Auto if device.is_cuda() && kernel_fits => KvLayout::Paged,
            KvLayout::Auto => KvLayout::Slots,
            other => other,
        }
    }
}

/// The pool for a model's cache shape under `config`. A paged budget must hold at least one
/// full context, so a sequence alone can always run to the end of its context.
fn kv_pool(
    shape: KvShape,
    config: &EngineConfig,
    device: &candle_core::Device,
) -> anyhow::Result<KvPool> {
    if config.kv_layout.resolve(device, &shape) == KvLayout::Slots {
        if config.kv_budget.is_some() {
            tracing::warn!("--kv-budget applies to the paged KV cache only; it is ignored");
        }
        if config.kv_type != KvType::F16 && !device.is_cpu() {
            anyhow::bail!("--kv-type {:?} is for the CPU's cache", config.kv_type);
        }
        if config.kv_type == KvType::Q8_0 && !shape.head_dim.is_multiple_of(Q8_BLOCK) {
            anyhow::bail!(
                "--kv-type q8_0 needs heads of a multiple of {Q8_BLOCK} values; this model's are {}",
                shape.head_dim
            );
        }
        tracing::info!(
            slots = config.max_sequences,
            slot_mib = shape.slot_bytes_as(config.kv_type) / (1 << 20),
            kv_type = ?config.kv_type,
            "KV cache: slots allocated on first use"
        );
        return Ok(
            KvPool::new(shape, config.max_sequences, device.clone()).with_type(config.kv_type)
        );
    }
    if config.kv_type != KvType::F16 {
        anyhow::bail!("--kv-type q8_0 is for the slots cache (--kv-cache slots) on the CPU");
    }
    let kernel_dims = crate::model::cuda::paged_attention::KERNEL_HEAD_DIMS;
    if device.is_cuda() && !kernel_dims.contains(&shape.head_dim) {
        anyhow::bail!(
            "--kv-cache paged on a CUDA GPU needs heads of {kernel_dims:?}; this model's are {}: \
             use --kv-cache slots",
            shape.head_dim
        );
    }
    let num_blocks = match config.kv_budget {
        Some(bytes) => (bytes / shape.block_bytes() as u64) as usize,
        None => config.max_sequences * shape.blocks_per_context(),
    };
    if num_blocks < shape.blocks_per_context() {
        anyhow::bail!(
            "--kv-budget holds {} tokens, less than one context of {}: raise --kv-budget or \
             lower --ctx-size (one token takes {} bytes)",
            num_blocks * crate::model::kv_cache::BLOCK_TOKENS,
            shape.capacity,
            shape.block_bytes() / crate::model::kv_cache::BLOCK_TOKENS
        );
    }
    tracing::info!(
        blocks = num_blocks,
        tokens = num_blocks * crate::model::kv_cache::BLOCK_TOKENS,
        mib = num_blocks * shape.block_bytes() / (1 << 20),
        sequences = config.max_sequences,
        "KV cache: paged, allocated now"
    );
    Ok(KvPool::paged(
        shape,
        config.max_sequences,
        num_blocks,
        device.clone(),
    )?)
}

/// Counters shared between the engine thread and handles.
#[derive(Default)]
struct Stats {
    alive: AtomicBool,
    running: AtomicUsize,
    waiting: admission::Waiting,
    cancelled: AtomicUsize,
    prompt_tokens: AtomicUsize,
    prefix_cache_hits: AtomicUsize,
    kv_tokens: AtomicUsize,
    preempted: AtomicUsize,
    faults: FaultLog,
}

impl Stats {
    /// Count a caught panic (the scheduler has already failed the requests it touched).
    fn record_fault(&self, message: &str) {
        tracing::error!(fault = message, "engine fault caught; the engine goes on");
        self.faults.record(message);
    }
}

/// The panics an engine caught and went on from, for /health: how many, and the last one
/// (`degraded` while it is within [`FAULT_WINDOW`]). Shared by the generating engine and
/// the embedder (src/engine/embedder.rs).
#[derive(Default)]
pub(crate) struct FaultLog {
    count: AtomicUsize,
    last: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

impl FaultLog {
    pub(crate) fn record(&self, message: &str) {
        self.count.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), message.to_string()));
    }

    /// `faults`, `recent_fault` and `last_fault` of [`Health`].
    pub(crate) fn report(&self) -> (usize, bool, Option<String>) {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (
            self.count.load(Ordering::SeqCst),
            last.as_ref()
                .is_some_and(|(at, _)| at.elapsed() < FAULT_WINDOW),
            last.map(|(_, message)| message),
        )
    }
}

struct Submission {
    request: GenerateRequest,
    client: ClientId,
    events: UnboundedSender<Event>,
}

/// What the engine thread is sent: a request to generate for, or texts to embed.
enum Work {
    Generate(Box<Submission>),
    Embed(EmbedJob),
}

pub struct Engine {
    submit: SyncSender<Work>,
    stats: Arc<Stats>,
    queue_capacity: usize,
    slots: usize,
    /// Tokens the whole cache holds.
    kv_capacity_tokens: usize,
    kv_layout: &'static str,
    weight_bytes: u64,
    kv_bytes: u64,
    pooled_embeddings: Option<Pooling>,
    hidden: usize,
}

impl Engine {
    /// Start the engine thread for a loaded model.
    pub fn start(model: LoadedModel, config: EngineConfig) -> anyhow::Result<Self> {
        let LoadedModel { weights, frontend } = model;
        let c = weights.config();
        let shape = KvShape {
            n_layers: c.n_layers,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            capacity: frontend.context_length,
        };
        let kv = kv_pool(shape, &config, weights.device())?;
        let (weight_bytes, kv_bytes) = (
            weights.weight_bytes() as u64,
            config.kv_bytes(&shape, weights.device()),
        );
        let (kv_capacity_tokens, kv_layout) = (
            kv.capacity_tokens(),
            if kv.paged_kv().is_some() {
                "paged"
            } else {
                "slots"
            },
        );
        let (submit, incoming) = sync_channel(config.queue_capacity);
        let stats = Arc::new(Stats::default());
        stats.alive.store(true, Ordering::SeqCst);
        let thread_stats = stats.clone();
        let prefill_chunk = config.prefill_chunk.max(1);
        let device_sampling = config.device_sampling.unwrap_or(weights.device().is_cuda());
        let faults = config.faults.clone();
        let (pooled_embeddings, hidden) = (config.pooled_embeddings, c.hidden);
        std::thread::Builder::new()
            .name("wick-engine".into())
            .spawn(move || {
                let scheduler = scheduler::Scheduler::new(
                    weights,
                    frontend,
                    kv,
                    prefill_chunk,
                    device_sampling,
                    thread_stats.clone(),
                    faults,
                )
                .with_pooled_embeddings(pooled_embeddings);
                scheduler.run(incoming);
                thread_stats.alive.store(false, Ordering::SeqCst);
            })?;
        Ok(Self {
            submit,
            stats,
            queue_capacity: config.queue_capacity,
            slots: config.max_sequences,
            kv_capacity_tokens,
            kv_layout,
            weight_bytes,
            kv_bytes,
            pooled_embeddings,
            hidden,
        })
    }
}

impl Backend for Engine {
    fn submit_for(
        &self,
        client: ClientId,
        requests: Vec<GenerateRequest>,
    ) -> Result<Vec<EventStream>, SubmitError> {
        let n = requests.len();
        // The bound is on requests not yet admitted to a slot, wherever they wait (this
        // channel or the scheduler's queue). Counted before sending so the engine never
        // sees a negative queue; a group is counted whole, so it is queued whole or not.
        self.stats.waiting.enter(client, n, self.queue_capacity)?;
        let mut streams = Vec::with_capacity(n);
        for request in requests {
            let (events, stream) = unbounded_channel();
            let submission = Submission {
                request,
                client,
                events,
            };
            if let Err(e) = self.submit.try_send(Work::Generate(Box::new(submission))) {
                // Those not sent leave the count; those sent end when their streams drop.
                self.stats.waiting.leave(client, n - streams.len());
                return Err(match e {
                    TrySendError::Full(_) => SubmitError::QueueFull(self.queue_capacity),
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                });
            }
            streams.push(stream);
        }
        Ok(streams)
    }

    fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    fn health(&self) -> Health {
        let (faults, recent_fault, last_fault) = self.stats.faults.report();
        Health {
            faults,
            recent_fault,
            last_fault,
            alive: self.stats.alive.load(Ordering::SeqCst),
            running: self.stats.running.load(Ordering::SeqCst),
            waiting: self.stats.waiting.total(),
            slots: self.slots,
            cancelled: self.stats.cancelled.load(Ordering::SeqCst),
            prompt_tokens: self.stats.prompt_tokens.load(Ordering::SeqCst),
            prefix_cache_hits: self.stats.prefix_cache_hits.load(Ordering::SeqCst),
            kv_tokens: self.stats.kv_tokens.load(Ordering::SeqCst),
            kv_capacity_tokens: self.kv_capacity_tokens,
            kv_layout: self.kv_layout,
            preempted: self.stats.preempted.load(Ordering::SeqCst),
            weight_bytes: self.weight_bytes,
            kv_bytes: self.kv_bytes,
            replicas: Vec::new(),
        }
    }

    fn embed(&self, _client: ClientId, inputs: Vec<Vec<u32>>) -> EmbedSubmission {
        if self.pooled_embeddings.is_none() {
            return pooled::refused(SubmitError::WrongLevel);
        }
        pooled::submit(inputs, self.queue_capacity, |job| {
            self.submit.try_send(Work::Embed(job))
        })
        .unwrap_or_else(pooled::refused)
    }

    fn makes_embeddings(&self) -> bool {
        self.pooled_embeddings.is_some()
    }

    fn embedding_dimensions(&self) -> usize {
        match self.pooled_embeddings {
            Some(_) => self.hidden,
            None => 0,
        }
    }
}
