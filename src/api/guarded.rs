//! The safety guard in the chat request flow (src/safety/): the input judged before
//! generation, the output judged over a sliding window while it streams (beside generation:
//! the stream does not wait for a window's verdict) and once complete; the policy's verdict
//! turned into a refusal, a `content_filter` finish, or a verdict attached to the response.

use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::AppState;
use crate::engine::{ClientId, ModelRegistry};
use crate::safety::{transcript, Assessment, Direction, FailureMode, Guard, Scores, Verdict};
use crate::template::ChatMessage;

/// Where the guard runs: /v2 always when it is on, /v1 when the operator says so.
pub struct GuardSettings {
    pub guard: Arc<Guard>,
    /// Judge /v1/chat/completions too (`--guard all`).
    pub on_v1: bool,
}

/// The guard that judges a chat request of this version, if any.
pub(super) fn guard_for(state: &AppState, v2: bool) -> Option<Arc<Guard>> {
    state
        .safety
        .as_ref()
        .filter(|s| v2 || s.on_v1)
        .map(|s| s.guard.clone())
}

/// The policy's assessment of one judgement (or of the guard's failure to judge), counted
/// on /metrics.
fn assess(
    guard: &Guard,
    direction: Direction,
    outcome: Result<Scores, String>,
    guard_ms: u64,
) -> Assessment {
    let policy = &guard.policy;
    let assessment = match outcome {
        Ok(scores) => {
            let (verdict, cause) = policy.decide(direction, &scores);
            for (d, flagged) in policy.flagged(direction, &scores) {
                if flagged {
                    metrics::counter!(crate::metrics::SAFETY_FLAGS,
                        "direction" => direction.name(), "dimension" => d.name())
                    .increment(1);
                }
            }
            Assessment {
                verdict,
                scores: Some(scores),
                cause,
                guard_ms,
                error: None,
            }
        }
        Err(error) => Assessment {
            verdict: match policy.on_guard_failure {
                FailureMode::Open => Verdict::Pass,
                FailureMode::Closed => Verdict::Refuse,
            },
            scores: None,
            cause: None,
            guard_ms,
            error: Some(error),
        },
    };
    metrics::counter!(crate::metrics::SAFETY_VERDICTS,
        "direction" => direction.name(), "verdict" => assessment.verdict.name())
    .increment(1);
    tracing::debug!(
        direction = direction.name(),
        verdict = assessment.verdict.name(),
        cause = assessment.cause.map(|c| c.name()),
        error = assessment.error.as_deref(),
        "safety verdict"
    );
    assessment
}

/// Judge a conversation before it reaches the model. A guard that cannot judge under a
/// closed policy is a 503 `guard_unavailable`: the request is not answered at all.
pub(super) async fn judge_input(
    state: &AppState,
    guard: &Arc<Guard>,
    client: ClientId,
    messages: &[ChatMessage],
) -> Result<Assessment, ApiError> {
    let text = transcript::conversation(messages);
    let (outcome, ms) = guard
        .judge(&state.models, client, Direction::Input, &text)
        .await;
    let assessment = assess(guard, Direction::Input, outcome, ms);
    if let (Verdict::Refuse, Some(error)) = (assessment.verdict, &assessment.error) {
        return Err(ApiError::unavailable(format!(
            "the safety guard could not judge this request, and the policy fails closed: {error}"
        ))
        .with_code("guard_unavailable"));
    }
    Ok(assessment)
}

/// Judge a finished answer.
pub(super) async fn judge_output(
    models: &ModelRegistry,
    guard: &Arc<Guard>,
    client: ClientId,
    text: &str,
) -> Assessment {
    let text = transcript::tail(text, transcript::MAX_CHARS);
    let (outcome, ms) = guard.judge(models, client, Direction::Output, text).await;
    assess(guard, Direction::Output, outcome, ms)
}

/// A window's judgement of one choice.
type WindowJudgement = (usize, Result<Scores, String>, u64);

/// Watches a stream's output: each choice's text is judged every `every_chars` new
/// characters over its last `window_chars`, one judgement per choice at a time, on tasks of
/// their own; [`OutputWatch::next_verdict`] yields the ones that refuse.
pub(super) struct OutputWatch {
    guard: Arc<Guard>,
    models: Arc<ModelRegistry>,
    client: ClientId,
    texts: Vec<String>,
    /// Characters in each choice's text.
    chars: Vec<usize>,
    /// Characters of each choice's text when its last window was sent.
    judged: Vec<usize>,
    running: Vec<bool>,
    tasks: FuturesUnordered<JoinHandle<WindowJudgement>>,
    /// Each choice's strongest scores over its windows so far, and their guard time.
    worst: Vec<Option<Scores>>,
    guard_ms: Vec<u64>,
}

impl OutputWatch {
    pub(super) fn new(state: &AppState, guard: Arc<Guard>, client: ClientId, n: usize) -> Self {
        Self {
            guard,
            models: state.models.clone(),
            client,
            texts: vec![String::new(); n],
            chars: vec![0; n],
            judged: vec![0; n],
            running: vec![false; n],
            tasks: FuturesUnordered::new(),
            worst: vec![None; n],
            guard_ms: vec![0; n],
        }
    }

    /// Choice `index` produced `text`: send a window to the guard when enough is new.
    pub(super) fn push(&mut self, index: usize, text: &str) {
        self.texts[index].push_str(text);
        self.chars[index] += text.chars().count();
        let chars = self.chars[index];
        let window = self.guard.policy.stream;
        if self.running[index] || chars - self.judged[index] < window.every_chars {
            return;
        }
        self.judged[index] = chars;
        self.running[index] = true;
        let text = transcript::tail(&self.texts[index], window.window_chars).to_string();
        let (guard, models, client) = (self.guard.clone(), self.models.clone(), self.client);
        self.tasks.push(tokio::spawn(async move {
            let (outcome, ms) = guard.judge(&models, client, Direction::Output, &text).await;
            (index, outcome, ms)
        }));
    }

    /// Whether a window is being judged (only then is [`Self::next_verdict`] worth awaiting).
    pub(super) fn busy(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// The next window judgement to finish: a choice to cut, with its assessment, when the
    /// policy refuses it; None when the window passed.
    pub(super) async fn next_verdict(&mut self) -> Option<(usize, Assessment)> {
        let (index, outcome, ms) = match self.tasks.next().await? {
            Ok(judged) => judged,
            Err(e) => {
                tracing::warn!(error = %e, "a window of the output guard failed");
                return None;
            }
        };
        self.running[index] = false;
        self.guard_ms[index] += ms;
        match outcome {
            Ok(scores) => {
                let worst = self.worst[index].map_or(scores, |w| w.max(scores));
                self.worst[index] = Some(worst);
                let (verdict, _) = self.guard.policy.decide(Direction::Output, &scores);
                (verdict == Verdict::Refuse).then(|| {
                    let a = assess(
                        &self.guard,
                        Direction::Output,
                        Ok(worst),
                        self.guard_ms[index],
                    );
                    (index, a)
                })
            }
            // A failing window does not cut the stream: the judgement of the whole answer
            // decides, and fails as the policy says.
            Err(_) => None,
        }
    }

    /// Choice `index` finished: its whole answer judged (its strongest window counts too).
    pub(super) async fn finish(&mut self, index: usize) -> Assessment {
        let text = transcript::tail(&self.texts[index], transcript::MAX_CHARS).to_string();
        let (outcome, ms) = self
            .guard
            .judge(&self.models, self.client, Direction::Output, &text)
            .await;
        let outcome = outcome.map(|s| self.worst[index].map_or(s, |w| w.max(s)));
        assess(
            &self.guard,
            Direction::Output,
            outcome,
            self.guard_ms[index] + ms,
        )
    }
}
