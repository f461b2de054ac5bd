//! The engine loop: admits waiting requests into free KV slots between steps, builds each
//! step's batch (every generating sequence's next token plus prompt chunks within a token
//! budget), runs the model once for the batch, and retires finished or cancelled sequences.
//!
//! With a paged KV cache, memory is the other budget: a request is admitted when the blocks
//! for its prompt are to be had, each step makes room for the tokens it writes, and when the
//! blocks run out the newest sequences give theirs up to older ones (preemption by
//! recomputation, as vLLM does: the preempted sequence keeps its state and output, and feeds
//! all its tokens again once blocks are free). The oldest sequence can always go on, since
//! the budget holds at least one full context.
//!
//! Faults: a panic in the forward pass fails that step's sequences; a panic while one
//! sequence samples, detokenizes or matches stops fails that sequence alone; a panic
//! anywhere else in a loop turn (admission, planning, KV bookkeeping) fails every running
//! sequence and resets the KV pool, whose record may be wrong then. Each is counted for
//! /health and /metrics, and the engine goes on serving the queue.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use super::admission::Turns;
use super::pooled::{self, EmbedJob};
use super::prefix_cache::PrefixCache;
use super::sequence::{Progress, Sequence};
use super::{Event, Stats, Submission, Work};
use candle_core::Tensor;

use crate::faults::{panic_message, trip, FaultPoint, Faults};
use crate::model::bert::Pooling;
use crate::model::cuda::sampling::{sample_rows, RowSampling};
use crate::model::{KvPool, Model, ModelFrontend, SeqChunk};

pub struct Scheduler {
    model: Box<dyn Model>,
    frontend: Arc<ModelFrontend>,
    kv: KvPool,
    prefix: PrefixCache,
    prefill_chunk: usize,
    stats: Arc<Stats>,
    waiting: VecDeque<Submission>,
    running: Vec<Sequence>,
    /// Admissions so far: the next sequence's `admitted`.
    admissions: u64,
    /// Which client's turn it is to get a slot.
    turns: Turns,
    /// The last step left a sequence out for want of KV blocks: admit nobody new until it
    /// runs again.
    starved: bool,
    /// Sample on the model's device where a request allows it (see [`outputs`]).
    device_sampling: bool,
    faults: Option<Arc<Faults>>,
    /// How token vectors are pooled for /v1/embeddings; None: this model makes none.
    pooling: Option<Pooling>,
    /// Embedding jobs, answered between steps (src/engine/pooled.rs).
    embeds: Vec<EmbedJob>,
}

impl Scheduler {
    pub fn new(
        model: Box<dyn Model>,
        frontend: Arc<ModelFrontend>,
        kv: KvPool,
        prefill_chunk: usize,
        device_sampling: bool,
        stats: Arc<Stats>,
        faults: Option<Arc<Faults>>,
    ) -> Self {
        Self {
            model,
            frontend,
            prefix: PrefixCache::new(kv.n_slots()),
            kv,
            prefill_chunk,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            admissions: 0,
            turns: Turns::default(),
            starved: false,
            device_sampling,
            faults,
            pooling: None,
            embeds: Vec::new(),
        }
    }

    /// Answer embedding jobs, pooling token vectors so (src/engine/pooled.rs).
    pub fn with_pooled_embeddings(mut self, pooling: Option<Pooling>) -> Self {
        self.pooling = pooling;
        self
    }

    /// Runs until every handle is dropped and no work is left.
    pub fn run(mut self, incoming: Receiver<Work>) {
        loop {
            if self.idle() {
                // Idle: block until work arrives.
                match incoming.recv() {
                    Ok(work) => self.take(work),
                    Err(_) => return,
                }
            }
            loop {
                match incoming.try_recv() {
                    Ok(work) => self.take(work),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.idle() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            if !self.embeds.is_empty() {
                self.embed_waiting();
            }
            let turn = catch_unwind(AssertUnwindSafe(|| {
                self.retire_cancelled();
                self.admit();
                self.publish_counts();
                if !self.running.is_empty() {
                    self.step();
                }
            }));
            if let Err(payload) = turn {
                self.recover(&panic_message(&*payload));
            }
        }
    }

    /// After a panic outside any one sequence's work: fail every running sequence (their
    /// state may be half-updated), give all KV memory back, forget the prefix index, and go
    /// on with the queue.
    fn recover(&mut self, message: &str) {
        self.stats.record_fault(message);
        let error = format!("internal error in the engine: {message}");
        for mut seq in self.running.drain(..) {
            seq.fail(error.clone());
        }
        self.kv.reset();
        self.prefix = PrefixCache::new(self.kv.n_slots());
        self.starved = false;
        self.publish_counts();
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty() && self.embeds.is_empty()
    }

    fn take(&mut self, work: Work) {
        match work {
            Work::Generate(submission) => self.waiting.push_back(*submission),
            Work::Embed(job) => self.embeds.push(job),
        }
    }

    /// Answer every waiting embedding job, between two generation steps: the texts run as
    /// batched steps of their own, each text in a cache of its own, so the generating
    /// sequences' slots are untouched (src/engine/pooled.rs). A failure fails those jobs
    /// only.
    fn embed_waiting(&mut self) {
        let jobs = std::mem::take(&mut self.embeds);
        let Some(pooling) = self.pooling else {
            // The handle refuses embeddings then; nothing reaches here.
            return;
        };
        let model = self.model.as_ref();
        let embedded = pooled::answer(jobs, &self.stats.faults, |texts| {
            pooled::decoder_embeddings(model, texts, pooling)
        });
        self.stats
            .prompt_tokens
            .fetch_add(embedded, Ordering::SeqCst);
    }

    fn publish_counts(&self) {
        self.stats
            .running
            .store(self.running.len(), Ordering::SeqCst);
        let kv_tokens = self.running.iter().map(|s| s.cached).sum();
        self.stats.kv_tokens.store(kv_tokens, Ordering::SeqCst);
    }

    fn retire_cancelled(&mut self) {
        let (kv, prefix) = (&mut self.kv, &mut self.prefix);
        let before = (self.running.len(), self.waiting.len());
        self.running.retain(|seq| {
            let keep = !seq.is_cancelled();
            if !keep {
                prefix.record(seq.slot, seq.cached_tokens());
                kv.release(seq.slot);
            }
            keep
        });
        let waiting = &self.stats.waiting;
        self.waiting.retain(|s| {
            let keep = !s.events.is_closed();
            if !keep {
                waiting.leave(s.client, 1);
            }
            keep
        });
        let dropped_waiting = before.1 - self.waiting.len();
        let dropped = before.0 - self.running.len() + dropped_waiting;
        if dropped > 0 {
            tracing::debug!(dropped, "cancelled requests retired");
            self.stats.cancelled.fetch_add(dropped, Ordering::SeqCst);
        }
    }

    /// Move waiting requests into free slots, clients taking turns (src/engine/admission.rs),
    /// oldest first within a client.
    fn admit(&mut self) {
        let (waiting, running) = (&self.waiting, &self.running);
        self.turns.keep_only(|client| {
            waiting.iter().any(|s| s.client == client) || running.iter().any(|s| s.client == client)
        });
        while self.kv.n_free() > 0 {
            let Some(next) = self.turns.next(self.waiting.iter().map(|s| s.client)) else {
                break;
            };
            let submission = self.waiting.remove(next).expect("a waiting position");
            self.stats.waiting.leave(submission.client, 1);
            if submission
                .request
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
            {
                // Its time ran out while it waited: it ends as if it had used its tokens.
                let _ = submission.events.send(Event::Done {
                    finish: super::FinishReason::Length,
                    usage: super::Usage {
                        prompt_tokens: submission.request.prompt.len(),
                        completion_tokens: 0,
                    },
                });
                continue;
            }
            if submission.request.prompt.is_empty() {
                let _ = submission
                    .events
                    .send(Event::Error("the prompt has no tokens".into()));
                continue;
            }
            let kv = &self.kv;
            let choice = self
                .prefix
                .choose(kv.free_slots(), &submission.request.prompt, |slot| {
                    kv.held_tokens(slot)
                });
            if !self.has_room_for(&submission.request.prompt) {
                // Its turn: it waits for blocks, and so does everything behind it.
                self.stats.waiting.restore(submission.client);
                self.waiting.insert(next, submission);
                break;
            }
            match self.kv.acquire_slot(choice.slot) {
                Ok(()) => {
                    trip(&self.faults, FaultPoint::Admission);
                    // Blocks past the reused prefix go back to the pool for anyone.
                    self.kv.truncate(choice.slot, choice.reused);
                    self.admissions += 1;
                    let prompt_len = submission.request.prompt.len();
                    self.stats
                        .prompt_tokens
                        .fetch_add(prompt_len, Ordering::SeqCst);
                    self.stats
                        .prefix_cache_hits
                        .fetch_add(choice.reused, Ordering::SeqCst);
                    self.turns.admitted(submission.client, self.admissions);
                    let mut seq = Sequence::new(
                        submission.request,
                        submission.events,
                        choice.slot,
                        choice.reused,
                        self.admissions,
                    );
                    seq.client = submission.client;
                    self.running.push(seq);
                }
                Err(e) => {
                    let _ = submission
                        .events
                        .send(Event::Error(format!("no memory for the KV cache: {e}")));
                }
            }
        }
    }

    /// Whether a paged cache has the blocks for `prompt`, with a block to spare per running
    /// sequence so that admitting it does not at once preempt them, and no sequence is
    /// waiting for blocks already. Always true for the slots layout.
    ///
    /// The blocks of the prefix it reuses count on both sides (the chosen slot is idle, so
    /// they are among the available ones), hence the whole prompt.
    fn has_room_for(&self, prompt: &[u32]) -> bool {
        let Some(available) = self.kv.available_blocks() else {
            return true;
        };
        let block = crate::model::kv_cache::BLOCK_TOKENS;
        !self.starved && prompt.len().div_ceil(block) + self.running.len() <= available
    }

    /// Which sequences take part in this step and how many of their pending tokens, oldest
    /// first, with room made in the cache for what they write.
    fn plan_step(&mut self) -> Vec<(usize, usize)> {
        let mut order: Vec<usize> = (0..self.running.len()).collect();
        order.sort_by_key(|&i| self.running[i].admitted);
        let mut budget = self.prefill_chunk;
        let mut plan: Vec<(usize, usize)> = Vec::with_capacity(self.running.len());
        self.starved = false;
        for &i in &order {
            let seq = &self.running[i];
            let take = if seq.is_prefilling() {
                seq.pending().len().min(budget)
            } else {
                1
            };
            if take == 0 {
                continue;
            }
            let end = seq.cached + take;
            loop {
                let seq = &self.running[i];
                if self.kv.reserve(seq.slot, end) {
                    if self.running[i].is_prefilling() {
                        budget -= take;
                    }
                    plan.push((i, take));
                    break;
                }
                // Short of blocks: the newest sequence that holds any gives them up, if it
                // is newer than this one (it is then not in the plan yet).
                let admitted = seq.admitted;
                let victim = order
                    .iter()
                    .copied()
                    .filter(|&j| {
                        let other = &self.running[j];
                        other.admitted > admitted && self.kv.held_tokens(other.slot) > 0
                    })
                    .max_by_key(|&j| self.running[j].admitted);
                match victim {
                    Some(j) => self.preempt(j),
                    // Nothing newer to take from: it waits for blocks.
                    None => {
                        self.starved = true;
                        break;
                    }
                }
            }
        }
        plan
    }

    fn preempt(&mut self, index: usize) {
        let seq = &mut self.running[index];
        tracing::debug!(
            slot = seq.slot,
            tokens = seq.tokens.len(),
            "sequence preempted"
        );
        self.kv.truncate(seq.slot, 0);
        seq.preempt();
        self.stats.preempted.fetch_add(1, Ordering::SeqCst);
    }

    /// One batched forward pass and the sampling that follows it.
    fn step(&mut self) {
        let plan = self.plan_step();
        if plan.is_empty() {
            // Only possible when the oldest sequence cannot get blocks although nobody
            // newer holds any: its own tokens exceed the whole cache (the budget is checked
            // to hold a context at start, so this is a defect, reported, not a hang).
            let oldest = (0..self.running.len())
                .min_by_key(|&i| self.running[i].admitted)
                .expect("step runs with sequences");
            return self.fail_batch(
                &[(oldest, 0)],
                "the KV cache (--kv-budget) cannot hold this sequence".into(),
            );
        }
        // Per sampling sequence, in plan order: its draw for the device's sampler, or None
        // when its logits go to the host. Drawn before the step, in a fixed order, so a
        // seed gives the same tokens however the batch is made.
        let mut draws: Vec<Option<RowSampling>> = Vec::new();
        for &(i, take) in &plan {
            let seq = &mut self.running[i];
            if take == seq.pending().len() {
                draws.push(if self.device_sampling {
                    seq.device_row()
                } else {
                    None
                });
            }
        }
        let batch: Vec<SeqChunk<'_>> = plan
            .iter()
            .map(|&(i, take)| {
                let seq = &self.running[i];
                SeqChunk {
                    slot: seq.slot,
                    start: seq.cached,
                    tokens: &seq.pending()[..take],
                    want_logits: take == seq.pending().len(),
                }
            })
            .collect();
        let wants: Vec<bool> = batch.iter().map(|c| c.want_logits).collect();

        let (model, kv, faults) = (&self.model, &self.kv, &self.faults);
        let result = catch_unwind(AssertUnwindSafe(|| {
            if faults
                .as_ref()
                .is_some_and(|f| f.take(FaultPoint::KernelTask))
            {
                // A panicking task in the kernel pool, as a kernel bug would be.
                wick_quant::pool::Pool::global().run(8, &|i| {
                    assert!(i != 3, "injected fault at {:?}", FaultPoint::KernelTask);
                });
            }
            let logits = model.forward(&batch, kv)?;
            outputs(&logits, &draws)
        }));
        drop(batch);
        let outputs = match result {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(e)) => return self.fail_batch(&plan, format!("model step failed: {e}")),
            Err(payload) => {
                let message = format!("model step panicked: {}", panic_message(&*payload));
                self.stats.record_fault(&message);
                return self.fail_batch(&plan, message);
            }
        };

        let mut outputs = outputs.into_iter();
        let mut finished = Vec::new();
        let (tokenizer, context) = (&self.frontend.tokenizer, self.frontend.context_length);
        for (&(i, take), wants_logits) in plan.iter().zip(wants) {
            let seq = &mut self.running[i];
            seq.cached += take;
            if !wants_logits {
                continue;
            }
            let output = outputs.next().expect("one output per sampling sequence");
            // Sampling, grammar, detokenizing and stop matching are this sequence's alone: a
            // panic there fails it and nobody else.
            let faults = &self.faults;
            let progress = catch_unwind(AssertUnwindSafe(|| {
                trip(faults, FaultPoint::Sampling);
                match output {
                    Output::Token(token) => seq.accept(token, tokenizer, context),
                    Output::Logits(mut row) => seq.advance(&mut row, tokenizer, context),
                }
            }));
            let progress = progress.unwrap_or_else(|payload| {
                let message = panic_message(&*payload);
                self.stats.record_fault(&message);
                seq.fail(format!("internal error in the engine: {message}"))
            });
            if let Progress::Finished = progress {
                finished.push(i);
            }
        }
        self.remove(finished);
    }

    fn fail_batch(&mut self, plan: &[(usize, usize)], message: String) {
        tracing::error!("{message}");
        let mut failed = Vec::new();
        for &(i, _) in plan {
            self.running[i].fail(message.clone());
            failed.push(i);
        }
        self.remove(failed);
    }

    /// Drop sequences by index and give their slots back.
    fn remove(&mut self, mut indices: Vec<usize>) {
        indices.sort_unstable();
        for i in indices.into_iter().rev() {
            let seq = self.running.swap_remove(i);
            self.prefix.record(seq.slot, seq.cached_tokens());
            self.kv.release(seq.slot);
        }
        self.publish_counts();
    }
}

/// What a step gives a sampling sequence: the token the device picked, or its logits.
enum Output {
    Token(u32),
    Logits(Vec<f32>),
}

/// Split a step's logits (`[sampling sequences, vocab]`, on the model's device) by `draws`:
/// rows with a draw are sampled where they are, and only their token ids cross to the host;
/// the other rows are copied over whole.
fn outputs(logits: &Tensor, draws: &[Option<RowSampling>]) -> candle_core::Result<Vec<Output>> {
    let device_rows: Vec<u32> = (0..draws.len() as u32)
        .filter(|&r| draws[r as usize].is_some())
        .collect();
    if device_rows.is_empty() {
        return Ok(logits
            .to_vec2::<f32>()?
            .into_iter()
            .map(Output::Logits)
            .collect());
    }
    let settings: Vec<RowSampling> = draws.iter().flatten().copied().collect();
    let picked = if device_rows.len() == draws.len() {
        sample_rows(logits, &settings)?
    } else {
        let rows = Tensor::new(device_rows.as_slice(), logits.device())?;
        sample_rows(&logits.index_select(&rows, 0)?, &settings)?
    };
    let host_rows: Vec<u32> = (0..draws.len() as u32)
        .filter(|&r| draws[r as usize].is_none())
        .collect();
    let mut host = if host_rows.is_empty() {
        Vec::new()
    } else {
        let rows = Tensor::new(host_rows.as_slice(), logits.device())?;
        logits.index_select(&rows, 0)?.to_vec2::<f32>()?
    }
    .into_iter();
    let mut picked = picked.into_iter();
    Ok(draws
        .iter()
        .map(|draw| match draw {
            Some(_) => Output::Token(picked.next().expect("one token per draw")),
            None => Output::Logits(host.next().expect("one row per host row")),
        })
        .collect())
}
