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

use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

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
        Ok(Constraint {
            matcher,
            fast_forward: false,
        })
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
    /// Append forced tokens without sampling them ([`Constraint::force`]).
    fast_forward: bool,
}

impl Constraint {
    /// Forbid (−∞) every token the grammar does not allow next. Logits past the vocabulary
    /// (padding rows some models have) are forbidden too.
    pub fn mask(&mut self, logits: &mut [f32]) -> anyhow::Result<()> {
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
        self.matcher.consume_token(token)
    }

    /// This constraint, fast-forwarding what the grammar forces.
    pub fn fast_forwarding(mut self) -> Self {
        self.fast_forward = true;
        self
    }

    /// The tokens the grammar allows as the only continuation from here (at most `room`),
    /// consumed: the caller appends them without sampling.
    pub fn force(&mut self, room: usize) -> anyhow::Result<Vec<u32>> {
        if !self.fast_forward {
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
        self.matcher.is_stopped()
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}
