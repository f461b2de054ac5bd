//! The one path a request's generated output takes on its way out, whatever the endpoint:
//! chat, completions and responses differ in how they shape what comes out of here, not in
//! how they wait for it, time it, end it at shutdown or notice a request the engine dropped.
//!
//! [`Generation`] drives a request's choice streams (merged, each event tagged with its
//! choice): it times the events for /metrics (time to first token, inter-token latency,
//! request duration from the request's arrival), gives up when the shutdown grace is over,
//! holds each choice's log-probabilities until the text their tokens produced comes out,
//! and hands out endpoint-neutral [`Step`]s. [`Generation::collect`] is the same drive for a
//! response that is sent whole.

use std::time::Instant;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::generation;
use super::AppState;
use crate::engine::{Event, EventStream, FinishReason, TokenLogprob, Usage};
use crate::metrics::GenerationTimer;
use crate::tools::ToolCall;

/// Why a request still running at the end of the shutdown grace stopped.
const SHUTTING_DOWN: &str = "the server is shutting down";
/// Why a request whose choice streams closed before every choice finished stopped.
const NO_ANSWER: &str = "the engine ended the request without an answer";

/// What happened next to one of a request's choices.
#[derive(Debug)]
pub(super) enum Step {
    /// Choice `index` produced `text`; `logprobs` are those of the tokens that produced it
    /// (and of earlier tokens that produced no text of their own).
    Text {
        index: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// Thinking a remote engine returned apart from choice `index`'s text.
    Reasoning { index: usize, text: String },
    /// A whole tool call a remote engine returned for choice `index`.
    Call { index: usize, call: ToolCall },
    /// Choice `index` finished; `logprobs` are those of its last tokens that produced no text.
    Finished {
        index: usize,
        finish: FinishReason,
        usage: Usage,
        logprobs: Vec<TokenLogprob>,
    },
    /// The request cannot go on (choice `index` failed, or the whole request did: then
    /// `index` is its first unfinished choice). Nothing follows this step.
    Failed { index: usize, failure: Failure },
}

/// Why a request failed after it was submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The engine reported an error.
    Engine(String),
    /// The shutdown grace is over.
    ShuttingDown,
    /// The engine closed a choice's stream before it finished.
    NoAnswer,
}

impl Failure {
    pub(super) fn message(&self) -> &str {
        match self {
            Failure::Engine(message) => message,
            Failure::ShuttingDown => SHUTTING_DOWN,
            Failure::NoAnswer => NO_ANSWER,
        }
    }

    /// The error response of a request that has sent nothing yet: 503
    /// `server_shutting_down` when the grace is over, 500 otherwise.
    pub(super) fn into_error(self) -> ApiError {
        match self {
            Failure::ShuttingDown => {
                let mut error = ApiError::unavailable(SHUTTING_DOWN.into());
                error.param = None;
                error.with_code("server_shutting_down")
            }
            other => ApiError::internal(other.message()),
        }
    }
}

/// One finished choice.
#[derive(Debug, Clone)]
pub struct ChoiceOutput {
    pub text: String,
    /// Thinking and calls a remote engine returned apart from the text (a local model's
    /// are in its text, read by `super::answer`).
    pub reasoning: String,
    pub calls: Vec<ToolCall>,
    /// One per generated token, when the request asked for log-probabilities.
    pub logprobs: Vec<TokenLogprob>,
    pub finish: FinishReason,
    pub usage: Usage,
}

/// A submitted request's choices on their way out. Dropping it drops every choice's stream,
/// which cancels them in the engine (a client that disconnects drops it).
pub(super) struct Generation {
    events: BoxStream<'static, (usize, Event)>,
    timer: GenerationTimer,
    end: CancellationToken,
    /// Log-probabilities of tokens whose text has not come out yet, per choice.
    pending: Vec<Vec<TokenLogprob>>,
    /// Each choice's usage once it has finished.
    usages: Vec<Option<Usage>>,
    over: bool,
}

impl Generation {
    /// Drive `streams` (one per choice, in choice order) of a request for `model` that
    /// arrived at `arrived`.
    pub(super) fn new(
        state: &AppState,
        model: &str,
        arrived: Instant,
        streams: Vec<EventStream>,
    ) -> Self {
        let n = streams.len();
        let events = futures::stream::select_all(
            streams
                .into_iter()
                .enumerate()
                .map(|(i, s)| UnboundedReceiverStream::new(s).map(move |e| (i, e))),
        )
        .boxed();
        Self {
            events,
            timer: GenerationTimer::new(model, arrived),
            end: state.end_streams.clone(),
            pending: vec![Vec::new(); n],
            usages: vec![None; n],
            over: false,
        }
    }

    /// How many choices the request has.
    pub(super) fn choices(&self) -> usize {
        self.usages.len()
    }

    /// The next step of any choice; `None` once every choice has finished, or after a
    /// [`Step::Failed`].
    pub(super) async fn next(&mut self) -> Option<Step> {
        while !self.over {
            if self.usages.iter().all(Option::is_some) {
                self.over = true;
                break;
            }
            let event = tokio::select! {
                biased;
                event = self.events.next() => event,
                _ = self.end.cancelled() => return Some(self.fail(None, Failure::ShuttingDown)),
            };
            let Some((index, event)) = event else {
                return Some(self.fail(None, Failure::NoAnswer));
            };
            match event {
                Event::Logprob(l) => self.pending[index].push(l),
                Event::Text(text) => {
                    self.timer.text();
                    let logprobs = std::mem::take(&mut self.pending[index]);
                    return Some(Step::Text {
                        index,
                        text,
                        logprobs,
                    });
                }
                Event::Done { finish, usage } => {
                    self.timer
                        .done(usage.prompt_tokens, usage.completion_tokens);
                    self.usages[index] = Some(usage);
                    let logprobs = std::mem::take(&mut self.pending[index]);
                    return Some(Step::Finished {
                        index,
                        finish,
                        usage,
                        logprobs,
                    });
                }
                Event::Error(message) => {
                    return Some(self.fail(Some(index), Failure::Engine(message)))
                }
                Event::Reasoning(text) => {
                    self.timer.text();
                    return Some(Step::Reasoning { index, text });
                }
                Event::Call(call) => {
                    self.timer.text();
                    return Some(Step::Call { index, call });
                }
            }
        }
        None
    }

    fn fail(&mut self, index: Option<usize>, failure: Failure) -> Step {
        self.over = true;
        let index = index
            .or_else(|| self.usages.iter().position(Option::is_none))
            .unwrap_or(0);
        Step::Failed { index, failure }
    }

    /// The request's usage once its choices have finished: choices are grouped
    /// `per_prompt` to a prompt, each prompt counts once, every choice's completion counts.
    pub(super) fn total_usage(&self, per_prompt: usize) -> Usage {
        generation::total_usage(
            self.usages.iter().map(|u| u.unwrap_or_default()),
            per_prompt,
        )
    }

    /// Wait for every choice (they run concurrently), in order; the error response when
    /// one fails or the shutdown grace ends first.
    pub(super) async fn collect(mut self) -> Result<Vec<ChoiceOutput>, ApiError> {
        let n = self.choices();
        let mut texts = vec![String::new(); n];
        let mut thoughts = vec![String::new(); n];
        let mut calls: Vec<Vec<ToolCall>> = vec![Vec::new(); n];
        let mut logprobs: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
        let mut done: Vec<Option<(FinishReason, Usage)>> = vec![None; n];
        while let Some(step) = self.next().await {
            match step {
                Step::Text {
                    index,
                    text,
                    logprobs: l,
                } => {
                    texts[index].push_str(&text);
                    logprobs[index].extend(l);
                }
                Step::Finished {
                    index,
                    finish,
                    usage,
                    logprobs: l,
                } => {
                    logprobs[index].extend(l);
                    done[index] = Some((finish, usage));
                }
                Step::Reasoning { index, text } => thoughts[index].push_str(&text),
                Step::Call { index, call } => calls[index].push(call),
                Step::Failed { failure, .. } => return Err(failure.into_error()),
            }
        }
        texts
            .into_iter()
            .zip(logprobs)
            .zip(done)
            .zip(thoughts.into_iter().zip(calls))
            .map(|(((text, logprobs), done), (reasoning, calls))| {
                let (finish, usage) = done.ok_or_else(|| ApiError::internal(NO_ANSWER))?;
                Ok(ChoiceOutput {
                    text,
                    reasoning,
                    calls,
                    logprobs,
                    finish,
                    usage,
                })
            })
            .collect()
    }
}
