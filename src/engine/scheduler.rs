//! The engine loop: admits waiting requests into free KV slots between steps, builds each
//! step's batch (every generating sequence's next token plus prompt chunks within a token
//! budget), runs the model once for the batch, and retires finished or cancelled sequences.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use super::prefix_cache::PrefixCache;
use super::sequence::{Progress, Sequence};
use super::{Event, Stats, Submission};
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
}

impl Scheduler {
    pub fn new(
        model: Box<dyn Model>,
        frontend: Arc<ModelFrontend>,
        kv: KvPool,
        prefill_chunk: usize,
        stats: Arc<Stats>,
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
        }
    }

    /// Runs until every handle is dropped and no work is left.
    pub fn run(mut self, incoming: Receiver<Submission>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                // Idle: block until work arrives.
                match incoming.recv() {
                    Ok(s) => self.waiting.push_back(s),
                    Err(_) => return,
                }
            }
            loop {
                match incoming.try_recv() {
                    Ok(s) => self.waiting.push_back(s),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.idle() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            self.retire_cancelled();
            self.admit();
            self.publish_counts();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
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
        self.waiting.retain(|s| !s.events.is_closed());
        let dropped_waiting = before.1 - self.waiting.len();
        let dropped = before.0 - self.running.len() + dropped_waiting;
        self.stats
            .waiting
            .fetch_sub(dropped_waiting, Ordering::SeqCst);
        if dropped > 0 {
            tracing::debug!(dropped, "cancelled requests retired");
            self.stats.cancelled.fetch_add(dropped, Ordering::SeqCst);
        }
    }

    /// Move waiting requests into free slots, oldest first.
    fn admit(&mut self) {
        while self.kv.n_free() > 0 {
            let Some(submission) = self.waiting.pop_front() else {
                break;
            };
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
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
            let choice = self
                .prefix
                .choose(self.kv.free_slots(), &submission.request.prompt);
            match self.kv.acquire_slot(choice.slot) {
                Ok(()) => {
                    let prompt_len = submission.request.prompt.len();
                    self.stats
                        .prompt_tokens
                        .fetch_add(prompt_len, Ordering::SeqCst);
                    self.stats
                        .prefix_cache_hits
                        .fetch_add(choice.reused, Ordering::SeqCst);
                    self.running.push(Sequence::new(
                        submission.request,
                        submission.events,
                        choice.slot,
                        choice.reused,
                    ));
                }
                Err(e) => {
                    let _ = submission
                        .events
                        .send(Event::Error(format!("no memory for the KV cache: {e}")));
                }
            }
        }
    }

    /// One batched forward pass and the sampling that follows it.
    fn step(&mut self) {
        // Which sequences take part, and how many of their pending tokens.
        let mut budget = self.prefill_chunk;
        let mut plan: Vec<(usize, usize)> = Vec::with_capacity(self.running.len());
        for (i, seq) in self.running.iter().enumerate() {
            if seq.is_prefilling() {
                if budget == 0 {
                    continue;
                }
                let take = seq.pending().len().min(budget);
                budget -= take;
                plan.push((i, take));
            } else {
                plan.push((i, 1));
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

        let (model, kv) = (&self.model, &self.kv);
        let result = catch_unwind(AssertUnwindSafe(|| {
            model.forward(&batch, kv)?.to_vec2::<f32>()
        }));
        drop(batch);
        let logits = match result {
            Ok(Ok(logits)) => logits,
            Ok(Err(e)) => return self.fail_batch(&plan, format!("model step failed: {e}")),
            Err(_) => return self.fail_batch(&plan, "model step panicked".into()),
        };

        let mut rows = logits.into_iter();
        let mut finished = Vec::new();
        for (&(i, take), wants_logits) in plan.iter().zip(wants) {
            let seq = &mut self.running[i];
            seq.cached += take;
            if !wants_logits {
                continue;
            }
            let mut row = rows.next().expect("one logits row per sampling sequence");
            if let Progress::Finished = seq.advance(
                &mut row,
                &self.frontend.tokenizer,
                self.frontend.context_length,
            ) {
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
