//! What the learned router (src/routing/learned.rs) reads of a query: a fixed-length vector
//! of cheap features, computed the same way when training (`wick routing-features`, read by
//! scripts/routing/train.py) and when serving, so the two can never drift apart.
//!
//! - dense: sizes of the last user turn (characters, words, digits, numbers, lines), code
//!   and math marks, conversation shape (turns, system prompt), tools, and the hand-tuned
//!   analyser's verdict (src/routing/analyser.rs) as a one-hot tier and its confidence;
//! - hashed: lower-cased word unigrams and bigrams of the last user turn (its first
//!   [`WINDOW`] bytes), each setting one of [`BUCKETS`] slots (FNV-1a), so the vocabulary
//!   needs no file of its own.

use super::analyser::{self, head, Query, SCAN};

/// Names of the dense features, in vector order (the model file repeats them, so a model
/// trained on another layout is refused at load).
pub const DENSE: [&str; 17] = [
    "log_chars",
    "log_words",
    "log_digits",
    "log_numbers",
    "log_lines",
    "code_fence",
    "log_math_marks",
    "question_marks",
    "log_messages",
    "has_system",
    "has_tools",
    "has_schema",
    "analyser_tier_1",
    "analyser_tier_2",
    "analyser_tier_3",
    "analyser_tier_4",
    "analyser_confidence",
];
/// Hashed n-gram slots.
pub const BUCKETS: usize = 2048;
/// Bytes of the last user turn the n-grams are read from.
const WINDOW: usize = 4096;

/// The whole vector's length.
pub const LEN: usize = DENSE.len() + BUCKETS;

/// A query's feature vector (length [`LEN`]). `has_schema`: the request asks for structured
/// output (`response_format` with a schema).
pub fn features(query: &Query, has_schema: bool) -> Vec<f32> {
    let mut x = vec![0.0f32; LEN];
    let messages = query.messages;
    let last = messages
        .iter()
        .rposition(|m| m.role == "user")
        .or(messages.len().checked_sub(1));
    let whole = last.map(|i| messages[i].content.as_str()).unwrap_or("");
    // Sizes are counted on the turn's first SCAN bytes and scaled to its length, so a
    // decision costs the same on any request (benches/routing.rs). Every training query is
    // shorter than that, so their features are exact.
    let text = head(whole, SCAN);
    let scale = whole.len() as f32 / text.len().max(1) as f32;
    let ln = |n: usize| (n as f32).ln_1p();
    let sized = |n: usize| (n as f32 * scale).ln_1p();
    let words = text.split_whitespace().count();
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let numbers = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .count();
    let math = text.bytes().filter(|b| b"+-*/=^%<>".contains(b)).count();
    let verdict = analyser::analyse(query);
    let dense = [
        sized(text.chars().count()),
        sized(words),
        sized(digits),
        sized(numbers),
        sized(text.lines().count()),
        f32::from(u8::from(text.contains("```"))),
        sized(math),
        text.matches('?').count().min(5) as f32,
        ln(messages.len()),
        f32::from(u8::from(messages.iter().any(|m| m.role == "system"))),
        f32::from(u8::from(query.has_tools)),
        f32::from(u8::from(has_schema)),
        f32::from(u8::from(verdict.tier == 1)),
        f32::from(u8::from(verdict.tier == 2)),
        f32::from(u8::from(verdict.tier == 3)),
        f32::from(u8::from(verdict.tier >= 4)),
        verdict.confidence,
    ];
    x[..DENSE.len()].copy_from_slice(&dense);
    let hashed = &mut x[DENSE.len()..];
    let mut previous: Option<&str> = None;
    let window = head(text, WINDOW).to_lowercase();
    for word in window
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        hashed[bucket(&[word])] = 1.0;
        if let Some(p) = previous {
            hashed[bucket(&[p, word])] = 1.0;
        }
        previous = Some(word);
    }
    x
}

/// For training: one JSON line `{"id", "x"}` per row of a JSON-lines query set, each row
/// taken as a one-turn user conversation, offering tools when the row has a non-empty
/// `tools` array (as the request it stands for did). The text is the row's `prompt` when
/// it has one, else its `message`: in data/routing/queries.jsonl `message` is the prompt plus
/// the instruction that makes the answer gradable ("... on a last line 'Answer: <number>'"),
/// which users do not write, so a router that learned from it would key on the instruction.
pub fn dump(queries: &std::path::Path, mut out: impl std::io::Write) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = std::fs::read_to_string(queries)
        .with_context(|| format!("reading {}", queries.display()))?;
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}", n + 1))?;
        let message = row["prompt"]
            .as_str()
            .or(row["message"].as_str())
            .with_context(|| format!("line {}: no `prompt` or `message`", n + 1))?;
        let messages = [crate::template::ChatMessage::new("user", message)];
        let has_tools = row["tools"].as_array().is_some_and(|t| !t.is_empty());
        let x = features(
            &Query {
                messages: &messages,
                has_tools,
            },
            false,
        );
        let line = serde_json::json!({"id": row["id"], "x": x});
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The layout a model file must have been trained on: `{"dense": [...], "buckets": N}`.
pub fn dump_layout(mut out: impl std::io::Write) -> anyhow::Result<()> {
    let layout = serde_json::json!({"dense": DENSE, "buckets": BUCKETS});
    writeln!(out, "{layout}")?;
    Ok(())
}

/// FNV-1a over the words joined by a space, folded into [`BUCKETS`].
fn bucket(words: &[&str]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            h = (h ^ u64::from(b' ')).wrapping_mul(0x0100_0000_01b3);
        }
        for &b in w.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % BUCKETS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::ChatMessage;

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage::new("user", text)]
    }

    #[test]
    fn same_words_same_buckets_and_sizes_grow() {
        let short = user("What is 2 + 2?");
        let long = user("Explain, step by step, how 12 workers finishing 3 jobs compares.");
        let q = |m| Query {
            messages: m,
            has_tools: false,
        };
        let a = features(&q(&short), false);
        let b = features(&q(&short), false);
        assert_eq!(a, b, "deterministic");
        let c = features(&q(&long), false);
        assert!(c[0] > a[0] && c[1] > a[1]);
        assert_eq!(a.len(), LEN);
        assert!(a[DENSE.len()..].iter().filter(|&&v| v == 1.0).count() >= 4);
    }
}
