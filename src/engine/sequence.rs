//! One request inside the engine: its tokens, where it stands in its KV slot, and the
//! per-request state that turns sampled ids into the events its client receives.

use tokio::sync::mpsc::UnboundedSender;

use super::constraint::Constraint;
use super::sampler::Sampler;
use super::stop::{StopMatcher, StopOutcome};
use super::{Event, FinishReason, GenerateRequest, Usage};
use crate::model::cuda::sampling::RowSampling;
use crate::tokenizer::{StreamDecoder, Tokenizer};

pub struct Sequence {
    /// Prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Tokens already written to the KV slot.
    pub cached: usize,
    pub slot: usize,
    /// Admission order: the scheduler serves older sequences first and preempts newer ones.
    pub admitted: u64,
    /// Who sent it (src/engine/admission.rs).
    pub client: super::ClientId,
    max_tokens: usize,
    ignore_eos: bool,
    deadline: Option<std::time::Instant>,
    sampler: Sampler,
    decoder: StreamDecoder,
    stop: StopMatcher,
    constraint: Option<Constraint>,
    events: UnboundedSender<Event>,
}

/// What a sampled token did to its sequence.
pub enum Progress {
    Continue,
    Finished,
}

impl Sequence {
    /// `reused`: how many of the prompt's first tokens the slot already holds.
    pub fn new(
        request: GenerateRequest,
        events: UnboundedSender<Event>,
        slot: usize,
        reused: usize,
        admitted: u64,
    ) -> Self {
        let prompt_len = request.prompt.len();
        let sampler = Sampler::new(request.sampling, &request.prompt);
        Self {
            tokens: request.prompt,
            prompt_len,
            cached: reused,
            slot,
            admitted,
            client: super::ANONYMOUS,
            max_tokens: request.max_tokens,
            ignore_eos: request.ignore_eos,
            sampler,
            deadline: request.deadline,
            decoder: StreamDecoder::new(),
            stop: StopMatcher::new(request.stop),
            constraint: request.constraint,
            events,
        }
    }

    /// The client dropped its stream: nobody wants the rest.
    pub fn is_cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Tokens whose keys and values are in the slot.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.tokens[..self.cached]
    }

    /// Tokens not yet in the cache (the rest of the prompt, or the last sampled token).
    pub fn pending(&self) -> &[u32] {
        &self.tokens[self.cached..]
    }

    /// More than one token to feed: the rest of a prompt, or everything again after a
    /// preemption; a step takes a chunk of them.
    pub fn is_prefilling(&self) -> bool {
        self.pending().len() > 1
    }

    /// Its cache was taken for older sequences: every token, generated ones included, is
    /// fed again before it samples its next one. What it sent and its sampling state stay.
    pub fn preempt(&mut self) {
        self.cached = 0;
    }

    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated(),
        }
    }

    /// This step's settings and draw for the device's sampler, when nothing of this
    /// sequence needs its logits on the host (a grammar does, and so do penalties, bias and
    /// log-probabilities); then [`Self::accept`] takes the token it picks.
    pub fn device_row(&mut self) -> Option<RowSampling> {
        // A lazy grammar still waiting for its trigger masks nothing (src/engine/trigger.rs).
        if self.constraint.as_ref().is_some_and(Constraint::is_engaged) {
            return None;
        }
        self.sampler.device_row()
    }

    /// Sample the next token from this sequence's logits and emit what it produces.
    pub fn advance(
        &mut self,
        logits: &mut [f32],
        tokenizer: &Tokenizer,
        context_length: usize,
    ) -> Progress {
        if let Some(Err(e)) = self.constraint.as_mut().map(|c| c.mask(logits)) {
            return self.fail(format!("constrained decoding failed: {e}"));
        }
        let sampled = self.sampler.sample(logits);
        self.take(sampled.token, sampled.logprob, tokenizer, context_length)
    }

    /// Emit what a token the device sampled (from [`Self::device_row`]) produces.
    pub fn accept(&mut self, token: u32, tokenizer: &Tokenizer, context_length: usize) -> Progress {
        self.sampler.record(token);
        self.take(token, None, tokenizer, context_length)
    }

    fn take(
        &mut self,
        token: u32,
        logprob: Option<super::TokenLogprob>,
        tokenizer: &Tokenizer,
        context_length: usize,
    ) -> Progress {
        if !self.ignore_eos && tokenizer.stop_ids().contains(&token) {
            return self.finish(FinishReason::Stop);
        }
        if let Some(Err(e)) = self.constraint.as_mut().map(|c| c.commit(token)) {
            return self.fail(format!("constrained decoding failed: {e}"));
        }
        if let Some(finished) = self.emit(token, logprob, tokenizer) {
            return finished;
        }
        // What the grammar forces next (the keys and punctuation of a JSON answer), for a
        // constraint that fast-forwards, is appended at once: the next step feeds it as a chunk,
        // as it feeds a prompt, instead of one decode step per forced token.
        let room = self
            .max_tokens
            .saturating_sub(self.generated())
            .min(context_length.saturating_sub(self.tokens.len()));
        let forced = match self.constraint.as_mut().map(|c| c.force(room)) {
            Some(Err(e)) => return self.fail(format!("constrained decoding failed: {e}")),
            Some(Ok(forced)) => forced,
            None => Vec::new(),
        };
        for token in forced {
            self.sampler.record(token);
            // Under the grammar a forced token is certain: log-probability 0, no alternative.
            let certain = self.sampler.wants_logprobs().then(|| super::TokenLogprob {
                token,
                logprob: 0.0,
                top: vec![(token, 0.0)],
            });
            if let Some(finished) = self.emit(token, certain, tokenizer) {
                return finished;
            }
        }
        if self
            .constraint
            .as_ref()
            .is_some_and(Constraint::is_finished)
        {
            return self.finish(FinishReason::Stop);
        }
        let out_of_time = self
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d);
        if self.generated() >= self.max_tokens || self.tokens.len() >= context_length || out_of_time
        {
            return self.finish(FinishReason::Length);
        }
        Progress::Continue
    }

    /// Append a generated token and send what it produces; `Some` when a stop string ended
    /// the sequence (or detokenizing failed).
    fn emit(
        &mut self,
        token: u32,
        logprob: Option<super::TokenLogprob>,
        tokenizer: &Tokenizer,
    ) -> Option<Progress> {
        self.tokens.push(token);
        if let Some(logprob) = logprob {
            let _ = self.events.send(Event::Logprob(logprob));
        }
        let text = match self.decoder.push(tokenizer, token) {
            Ok(text) => text,
            Err(e) => return Some(self.fail(format!("detokenizing failed: {e}"))),
        };
        if !text.is_empty() {
            match self.stop.push(&text) {
                StopOutcome::Emit(t) => self.send_text(t),
                StopOutcome::Stopped(t, which) => {
                    self.send_text(t);
                    return Some(self.finish(FinishReason::StopSequence(which)));
                }
            }
        }
        None
    }

    fn send_text(&self, text: String) {
        if !text.is_empty() {
            // A closed stream is noticed by the scheduler before the next step.
            let _ = self.events.send(Event::Text(text));
        }
    }

    fn finish(&mut self, finish: FinishReason) -> Progress {
        // Text held back as a possible stop string start is real output after all (after a
        // matched stop string nothing is held).
        let rest = self.stop.flush();
        self.send_text(rest);
        let _ = self.events.send(Event::Done {
            finish,
            usage: self.usage(),
        });
        Progress::Finished
    }

    pub fn fail(&mut self, message: String) -> Progress {
        let _ = self.events.send(Event::Error(message));
        Progress::Finished
    }
}
