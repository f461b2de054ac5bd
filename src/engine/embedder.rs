//! The engine of an embedding model: a thread of its own owns the [`Encoder`] and runs the
//! texts of every waiting request together, so each weight is read once per step however
//! many requests and inputs arrive at once (the batch shape of src/model/, texts instead of
//! decode steps). Handlers reach it through [`Backend::embed`]; it refuses generation with a
//! 400 that says what the model is for.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use super::pooled::{self, answer, EmbedJob, STEP_TOKENS};
use super::{
    Backend, ClientId, EmbedSubmission, EventStream, GenerateRequest, Health, SubmitError,
};
use crate::model::Encoder;

#[derive(Default)]
struct Stats {
    alive: AtomicBool,
    waiting: AtomicUsize,
    running: AtomicUsize,
    prompt_tokens: AtomicUsize,
    faults: super::FaultLog,
}

pub struct Embedder {
    id: String,
    submit: SyncSender<EmbedJob>,
    stats: Arc<Stats>,
    queue_capacity: usize,
    weight_bytes: u64,
    dimensions: usize,
}

impl Embedder {
    /// Start the model's thread; `queue_capacity` requests may wait for it.
    pub fn start(id: &str, model: Box<dyn Encoder>, queue_capacity: usize) -> anyhow::Result<Self> {
        let (submit, jobs) = sync_channel(queue_capacity.max(1));
        let stats = Arc::new(Stats::default());
        stats.alive.store(true, Ordering::SeqCst);
        let weight_bytes = model.weight_bytes() as u64;
        let dimensions = model.config().hidden;
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name(format!("wick-embed-{id}"))
            .spawn(move || {
                run(model.as_ref(), &jobs, &thread_stats);
                thread_stats.alive.store(false, Ordering::SeqCst);
            })?;
        Ok(Self {
            id: id.to_string(),
            submit,
            stats,
            queue_capacity: queue_capacity.max(1),
            weight_bytes,
            dimensions,
        })
    }
}

/// Take every job waiting (up to [`STEP_TOKENS`] of their texts), run them as one batch,
/// answer each; until every sender is gone.
fn run(model: &dyn Encoder, jobs: &Receiver<EmbedJob>, stats: &Stats) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let mut tokens: usize = batch[0].inputs.iter().map(Vec::len).sum();
        while tokens < STEP_TOKENS {
            match jobs.try_recv() {
                Ok(job) => {
                    tokens += job.inputs.iter().map(Vec::len).sum::<usize>();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        stats.waiting.fetch_sub(batch.len(), Ordering::SeqCst);
        stats.running.store(batch.len(), Ordering::SeqCst);
        let embedded = answer(batch, &stats.faults, |texts| model.embed(texts));
        stats.prompt_tokens.fetch_add(embedded, Ordering::SeqCst);
        stats.running.store(0, Ordering::SeqCst);
    }
}

impl Backend for Embedder {
    fn submit_for(
        &self,
        _client: ClientId,
        _requests: Vec<GenerateRequest>,
    ) -> Result<Vec<EventStream>, SubmitError> {
        Err(SubmitError::Unsupported(format!(
            "model '{}' is an embedding model: it does not generate text; send its inputs to \
             /v1/embeddings",
            self.id
        )))
    }

    fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    fn health(&self) -> Health {
        let (faults, recent_fault, last_fault) = self.stats.faults.report();
        Health {
            alive: self.stats.alive.load(Ordering::SeqCst),
            running: self.stats.running.load(Ordering::SeqCst),
            waiting: self.stats.waiting.load(Ordering::SeqCst),
            prompt_tokens: self.stats.prompt_tokens.load(Ordering::SeqCst),
            weight_bytes: self.weight_bytes,
            kv_layout: "none",
            faults,
            recent_fault,
            last_fault,
            ..Health::default()
        }
    }

    fn embed(&self, _client: ClientId, inputs: Vec<Vec<u32>>) -> EmbedSubmission {
        self.stats.waiting.fetch_add(1, Ordering::SeqCst);
        pooled::submit(inputs, self.queue_capacity, |job| self.submit.try_send(job)).unwrap_or_else(
            |error| {
                self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                pooled::refused(error)
            },
        )
    }

    fn makes_embeddings(&self) -> bool {
        true
    }

    fn embedding_dimensions(&self) -> usize {
        self.dimensions
    }
}
