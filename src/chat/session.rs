//! One conversation with a loaded model: the messages so far, and an answer streamed to a
//! writer as the engine produces it.

use std::io::Write;
use std::sync::Arc;

use crate::engine::{Event, FinishReason, GenerateRequest, SamplingParams, ServedModel};
use crate::template::ChatMessage;

pub struct Conversation {
    model: Arc<ServedModel>,
    frontend: Arc<crate::model::ModelFrontend>,
    system: Option<String>,
    /// User and assistant turns, oldest first.
    turns: Vec<ChatMessage>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
}

/// How an answer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Finished(FinishReason),
    /// Stopped by the user (Ctrl-C); what came so far is kept.
    Interrupted,
}

impl Conversation {
    /// A conversation with a model run here (the terminal chat does not forward upstream).
    pub fn new(model: Arc<ServedModel>, system: Option<String>) -> anyhow::Result<Self> {
        let Some(frontend) = model.frontend.clone() else {
            anyhow::bail!(
                "'{}' is an upstream model: `wick chat` runs local models only (use `wick serve` to forward to it)",
                model.entry.id
            );
        };
        Ok(Self {
            frontend,
            model,
            system,
            turns: Vec::new(),
            sampling: SamplingParams::default(),
            max_tokens: 1024,
        })
    }

    pub fn clear(&mut self) {
        self.turns.clear();
    }

    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system;
    }

    fn messages(&self) -> Vec<ChatMessage> {
        let system = self.system.iter().map(|s| ChatMessage::new("system", s));
        system.chain(self.turns.iter().cloned()).collect()
    }

    /// The prompt's tokens, dropping the oldest turns while the prompt and a full answer
    /// would not fit the context.
    fn prompt(&mut self) -> anyhow::Result<Vec<u32>> {
        let frontend = &self.frontend;
        loop {
            let text = frontend.template.render(&self.messages(), None, true)?;
            let tokens = frontend.tokenizer.encode(&text)?;
            let fits = tokens.len() + self.max_tokens.min(256) < frontend.context_length;
            if fits || self.turns.len() <= 1 {
                if tokens.len() >= frontend.context_length {
                    anyhow::bail!("the message is longer than the model's context");
                }
                return Ok(tokens);
            }
            // The oldest exchange goes first: a user turn and the answer to it.
            self.turns.drain(..2.min(self.turns.len() - 1));
        }
    }

    /// Answer `user`, writing the text to `out` as it comes, until done or `interrupt`
    /// completes. The exchange is kept in the conversation either way.
    pub async fn answer(
        &mut self,
        user: &str,
        out: &mut impl Write,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Ending> {
        self.turns.push(ChatMessage::new("user", user));
        let prompt = match self.prompt() {
            Ok(prompt) => prompt,
            Err(e) => {
                self.turns.pop();
                return Err(e);
            }
        };
        let room = self.frontend.context_length - prompt.len();
        let mut events = self.model.backend.submit(GenerateRequest {
            prompt,
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens.min(room),
            stop: Vec::new(),
            ignore_eos: false,
            constraint: None,
            deadline: None,
        })?;
        let mut text = String::new();
        tokio::pin!(interrupt);
        let ending = loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = &mut interrupt => break Ending::Interrupted,
            };
            match event {
                Some(Event::Text(t)) => {
                    out.write_all(t.as_bytes())?;
                    out.flush()?;
                    text.push_str(&t);
                }
                Some(Event::Done { finish, .. }) => break Ending::Finished(finish),
                // The chat never asks for log-probabilities, and runs a local model, which
                // sends neither thinking nor calls apart from its text.
                Some(Event::Logprob(_) | Event::Reasoning(_) | Event::Call(_)) => {}
                Some(Event::Error(e)) => {
                    self.turns.pop();
                    anyhow::bail!("generation failed: {e}");
                }
                None => anyhow::bail!("the engine stopped"),
            }
        };
        // Dropping `events` (on return) cancels an interrupted answer in the engine.
        self.turns.push(ChatMessage::new("assistant", &text));
        Ok(ending)
    }
}
