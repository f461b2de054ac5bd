//! Constrained decoding: a grammar (Lark, with JSON schemas embedded as `%json{…}`) compiled
//! by llguidance over the model's vocabulary. Before each sampling step the grammar's mask
//! sets every token it forbids to −∞; the chosen token then advances the grammar. The output
//! is therefore always in the grammar's language, whatever the model's size. A constraint
//! may fast-forward: where the grammar allows only one continuation, its tokens are appended
//! without sampling ([`Constraint::force`], src/engine/sequence.rs). Only the safety guard
//! asks for that (src/safety/guard.rs): the forced text is tokenized canonically, which is
//! not always how the model would have split it, and a 135M model answering a forced tool
//! call loses its way on the difference (tests/tool_calls.rs), while the guard's verdicts
//! come out the same (scripts/safety/eval.py on 60 prompts, either way).
//!
//! A constraint may also be lazy ([`GrammarCompiler::compile_lazy`]): it leaves the output
//! free until a trigger text appears (src/engine/trigger.rs), then holds the rest to the
//! grammar. That is how a call under `tool_choice: auto` is kept to the offered functions
//! while the model stays free to answer in text.

use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

use super::trigger::{Trigger, Waiting};
use crate::tokenizer::Tokenizer;

/// Compiles grammars for one model. Building it (the vocabulary's token trie and
/// llguidance's lexer slices) takes a noticeable moment, so it is built on the first
/// constrained request and shared after.
#[derive(Default)]
pub struct GrammarCompiler {
    factory: OnceLock<Result<Arc<ParserFactory>, String>>,
}

impl GrammarCompiler {
    /// Compile a Lark grammar into a fresh per-sequence constraint. Errors say what in the
    /// grammar (or an embedded schema) llguidance could not compile.
    pub fn compile(&self, tokenizer: &Tokenizer, lark: &str) -> anyhow::Result<Constraint> {
        let matcher = self.matcher(tokenizer, lark)?;
        Ok(Constraint {
            matcher,
            state: State::Engaged,
            fast_forward: false,
        })
    }

    /// Compile a grammar that holds the output only from the first appearance of
    /// `trigger` on; the grammar describes the output from the trigger's first byte.
    pub fn compile_lazy(
        &self,
        tokenizer: &Tokenizer,
        lark: &str,
        trigger: &Trigger,
    ) -> anyhow::Result<Constraint> {
        let matcher = self.matcher(tokenizer, lark)?;
        Ok(Constraint {
            matcher,
            state: State::Waiting(Waiting::new(trigger)),
            fast_forward: false,
        })
    }

    fn matcher(&self, tokenizer: &Tokenizer, lark: &str) -> anyhow::Result<Matcher> {
        let factory = self
            .factory
            .get_or_init(|| build_factory(tokenizer).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("the constraint engine is unavailable for this model: {e}"))?;
        let grammar = TopLevelGrammar::from_lark(lark.to_string());
        let parser = factory.create_parser(grammar)?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(anyhow!(e));
        }
        Ok(matcher)
    }
}

fn build_factory(tokenizer: &Tokenizer) -> anyhow::Result<Arc<ParserFactory>> {
    let env = WickTokEnv::new(tokenizer)?;
    let mut factory = ParserFactory::new_simple(&(Arc::new(env) as TokEnv))?;
    // llguidance logs grammar warnings to stderr by default; the server's logs are tracing's.
    factory.quiet();
    Ok(Arc::new(factory))
}

/// The vocabulary as llguidance sees it: every token's bytes (from the tokenizer's own
/// serialized form, read by llguidance) in a trie, and wick's tokenizer for text.
struct WickTokEnv {
    trie: TokTrie,
    tokenizer: tokenizers::Tokenizer,
}

impl WickTokEnv {
    fn new(tokenizer: &Tokenizer) -> anyhow::Result<Self> {
        let hf = tokenizer.hf().clone();
        let json = serde_json::to_value(&hf).context("serializing the tokenizer")?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&json)?;
        let vocab_size = hf.get_vocab_size(true).max(words.len());
        // Ids the vocabulary leaves unnamed can never be produced.
        words.resize(vocab_size, Vec::new());
        let stops = tokenizer.stop_ids();
        let eos = *stops
            .first()
            .context("the tokenizer has no end-of-turn token")?;
        let info = TokRxInfo::new(vocab_size as u32, eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(stops);
        Ok(Self {
            trie,
            tokenizer: hf,
        })
    }
}

impl TokenizerEnv for WickTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}

/// One sequence's grammar state.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    state: State,
    /// Append forced tokens without sampling them ([`Constraint::force`]).
    fast_forward: bool,
}

/// Whether the grammar holds the output yet.
#[derive(Clone)]
enum State {
    /// Lazy, and its trigger has not appeared: the output is free.
    Waiting(Waiting),
    /// Every token from here on must follow the grammar.
    Engaged,
    /// Lazy, and what followed its trigger in the same token was not in the grammar (a
    /// model that writes the marker and then something else): the output stays free, and
    /// the answer is read as it is (src/tools/parse.rs keeps a bad call block as text).
    Released,
}

impl Constraint {
    /// Whether the grammar holds the next token (a lazy constraint before its trigger
    /// does not, so the sequence may sample as if unconstrained).
    pub fn is_engaged(&self) -> bool {
        matches!(self.state, State::Engaged)
    }

    /// Forbid (−∞) every token the grammar does not allow next. Logits past the vocabulary
    /// (padding rows some models have) are forbidden too.
    pub fn mask(&mut self, logits: &mut [f32]) -> anyhow::Result<()> {
        if !self.is_engaged() {
            return Ok(());
        }
        let allowed = self.matcher.compute_mask_or_eos()?;
        for (id, logit) in logits.iter_mut().enumerate() {
            if id >= allowed.len() || !allowed.is_allowed(id as TokenId) {
                *logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advance the grammar with the token that was sampled.
    pub fn commit(&mut self, token: u32) -> anyhow::Result<()> {
        let State::Waiting(waiting) = &mut self.state else {
            return match self.state {
                State::Engaged => self.matcher.consume_token(token),
                _ => Ok(()),
            };
        };
        let env = self.matcher.tok_env()?;
        let Some(tail) = waiting.push(&env.tok_trie().decode_ext(&[token], false)) else {
            return Ok(());
        };
        // The grammar starts at the trigger, which may begin inside this token: it takes
        // the bytes from there, as tokens of their own (it reads bytes, not ids).
        let tokens = env.tokenize_bytes(&tail);
        self.state = match self.matcher.consume_tokens(&tokens) {
            Ok(()) => State::Engaged,
            Err(_) => State::Released,
        };
        Ok(())
    }

    /// This constraint, fast-forwarding what the grammar forces.
    pub fn fast_forwarding(mut self) -> Self {
        self.fast_forward = true;
        self
    }

    /// The tokens the grammar allows as the only continuation from here (at most `room`),
    /// consumed: the caller appends them without sampling.
    pub fn force(&mut self, room: usize) -> anyhow::Result<Vec<u32>> {
        if !self.fast_forward || !self.is_engaged() {
            return Ok(Vec::new());
        }
        let mut forced = self.matcher.compute_ff_tokens();
        forced.truncate(room);
        if !forced.is_empty() {
            self.matcher.consume_tokens(&forced)?;
        }
        Ok(forced)
    }

    /// The grammar is complete and allows nothing more.
    pub fn is_finished(&self) -> bool {
        self.is_engaged() && self.matcher.is_stopped()
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}
