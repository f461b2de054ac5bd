//! How a guard model's answer becomes six probabilities.
//!
//! - A general chat model answers wick's guard prompt with a JSON verdict held to a schema by
//!   constrained decoding (`{"physical": "safe"|"unsafe", ...}`); each dimension's probability
//!   is read from the log-probabilities of its label's first token, among the tokens the
//!   grammar allowed there (the mask is applied before the log-softmax, src/engine/sequence.rs).
//! - Dedicated guard models answer in their own formats, read here and mapped onto the six
//!   dimensions by their hazard categories: Llama Guard 3 (`safe`, or `unsafe` and a line of
//!   `S1,S10`) and Qwen3Guard (`Safety: Unsafe` / `Controversial` / `Safe` and
//!   `Categories: Violent, PII`).

use serde::Deserialize;

use super::{Dimension, Scores, DIMENSIONS};

/// The answer format a guard model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardFormat {
    /// wick's guard prompt and JSON verdict, for any chat model.
    Json,
    /// Meta's Llama Guard 3 (its chat template builds its own classification prompt).
    LlamaGuard3,
    /// Qwen's Qwen3Guard (generative).
    Qwen3Guard,
}

impl GuardFormat {
    /// The format of a catalog model: its `guard_format`, else one recognised from its id or
    /// name, else wick's JSON verdict.
    pub fn of(declared: Option<GuardFormat>, id: &str, name: &str) -> Self {
        if let Some(f) = declared {
            return f;
        }
        let text = format!("{id} {name}")
            .to_ascii_lowercase()
            .replace(['_', ' '], "-");
        if text.contains("llama-guard") {
            Self::LlamaGuard3
        } else if text.contains("qwen3guard") || text.contains("qwen3-guard") {
            Self::Qwen3Guard
        } else {
            Self::Json
        }
    }
}

/// One generated token as the guard reads it: its text, its log-probability and the
/// alternatives at its position (text, log-probability), most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenChoice {
    pub text: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// The JSON schema of wick's guard verdict: every dimension, in order, `safe` or `unsafe`.
pub fn verdict_schema() -> serde_json::Value {
    let mut properties = serde_json::Map::new();
    for d in DIMENSIONS {
        properties.insert(
            d.name().into(),
            serde_json::json!({ "type": "string", "enum": ["safe", "unsafe"] }),
        );
    }
    serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": DIMENSIONS.map(|d| d.name()),
        "additionalProperties": false,
    })
}

/// The scores of a JSON verdict: each dimension's probability of `unsafe` from its label's
/// first token; the label itself (1 or 0) where the alternatives were not reported. None
/// when a dimension is missing.
pub fn json_scores(tokens: &[TokenChoice]) -> Option<Scores> {
    let mut scores = Scores::default();
    let mut seen = [false; 6];
    let mut before = String::new();
    for token in tokens {
        if let Some(d) = label_follows(&before) {
            let p = unsafe_share(token);
            scores.set(d, p);
            seen[DIMENSIONS.iter().position(|x| *x == d)?] = true;
        }
        before.push_str(&token.text);
    }
    // A verdict whose labels came without alternatives (a merged `"unsafe"` token, say)
    // still counts by its labels.
    if let Ok(labels) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&before)
    {
        for (i, d) in DIMENSIONS.iter().enumerate() {
            if !seen[i] {
                let label = labels.get(d.name())?.as_str()?;
                scores.set(*d, if label == "unsafe" { 1.0 } else { 0.0 });
                seen[i] = true;
            }
        }
    }
    seen.iter().all(|&s| s).then_some(scores)
}

/// The dimension whose label starts right after `text` (`..."ethical": "`), if any.
fn label_follows(text: &str) -> Option<Dimension> {
    let rest = text.trim_end_matches([' ', '\n', '\t']);
    let rest = rest.strip_suffix('"')?;
    let rest = rest.trim_end_matches([' ', '\n', '\t']);
    let rest = rest.strip_suffix(':')?;
    let rest = rest.trim_end_matches([' ', '\n', '\t']);
    let rest = rest.strip_suffix('"')?;
    let start = rest.rfind('"')? + 1;
    Dimension::parse(&rest[start..])
}

/// The probability the label starting at this token is `unsafe`: the share of the
/// alternatives that begin `unsafe` among those that begin either label.
fn unsafe_share(token: &TokenChoice) -> f32 {
    let mut alternatives = token.top.clone();
    if !alternatives.iter().any(|(t, _)| *t == token.text) {
        alternatives.push((token.text.clone(), token.logprob));
    }
    let (mut unsafe_p, mut any_p) = (0.0f64, 0.0f64);
    for (text, logprob) in &alternatives {
        let text = text.trim_start();
        let p = f64::from(*logprob).exp();
        if text.is_empty() {
            continue;
        }
        if "unsafe".starts_with(text) || text.starts_with("unsafe") {
            unsafe_p += p;
            any_p += p;
        } else if "safe".starts_with(text) || text.starts_with("safe") {
            any_p += p;
        }
    }
    if any_p > 0.0 {
        (unsafe_p / any_p) as f32
    } else if token.text.trim_start().starts_with('u') {
        1.0
    } else {
        0.0
    }
}

/// Llama Guard 3's hazard categories (S1..S14) on the six dimensions.
fn llama_guard_category(code: &str) -> &'static [Dimension] {
    use Dimension::*;
    match code.trim() {
        "S1" | "S9" => &[Physical], // violent crimes, indiscriminate weapons
        "S2" | "S3" | "S4" | "S8" | "S10" | "S12" => &[Ethical], // crimes, sexual, IP, hate
        "S5" | "S6" | "S13" => &[Factual], // defamation, specialised advice, elections
        "S7" | "S14" => &[Security], // privacy, code interpreter abuse
        "S11" => &[Emotional, Physical], // suicide and self-harm
        _ => &[],
    }
}

/// Qwen3Guard's categories on the six dimensions.
fn qwen3_guard_category(name: &str) -> &'static [Dimension] {
    use Dimension::*;
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "violent" => &[Physical],
        "suicide & self-harm" => &[Emotional, Physical],
        "pii" | "jailbreak" => &[Security],
        "politically sensitive topics" => &[Factual],
        "non-violent illegal acts"
        | "sexual content or sexual acts"
        | "unethical acts"
        | "copyright violation" => &[Ethical],
        _ => &[],
    }
}

/// The scores of a dedicated guard model's answer. `first` is the first token's choice
/// (its probability of `unsafe` scales the flagged dimensions; None: the label alone).
pub fn dedicated_scores(
    format: GuardFormat,
    text: &str,
    first: Option<&TokenChoice>,
) -> Option<Scores> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let (unsafe_label, p_label, flagged): (bool, f32, Vec<Dimension>) = match format {
        GuardFormat::Json => return None,
        GuardFormat::LlamaGuard3 => {
            let label = lines.first()?.to_ascii_lowercase();
            let flagged = lines
                .get(1)
                .map(|l| {
                    l.split(',')
                        .flat_map(llama_guard_category)
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            match label.as_str() {
                "safe" => (false, 0.0, flagged),
                "unsafe" => (true, 1.0, flagged),
                _ => return None,
            }
        }
        GuardFormat::Qwen3Guard => {
            let field = |key: &str| {
                lines
                    .iter()
                    .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            };
            let safety = field("Safety:")?.to_ascii_lowercase();
            let flagged = field("Categories:")
                .map(|c| {
                    c.split(',')
                        .flat_map(qwen3_guard_category)
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            match safety.as_str() {
                "safe" => (false, 0.0, flagged),
                "unsafe" => (true, 1.0, flagged),
                // Qwen3Guard's middle class: harmful in some contexts.
                "controversial" => (true, 0.5, flagged),
                _ => return None,
            }
        }
    };
    // The first token's own probability, where reported, for Llama Guard's one-word label.
    let p = match (format, first) {
        (GuardFormat::LlamaGuard3, Some(t)) => unsafe_share(t),
        _ => p_label,
    };
    let mut scores = Scores::default();
    if unsafe_label && flagged.is_empty() {
        // Unsafe with no category this mapping knows: every dimension.
        DIMENSIONS.iter().for_each(|&d| scores.set(d, p));
    } else {
        for d in flagged {
            scores.set(d, p);
        }
        // A `safe` label still carries its residual doubt, on every dimension.
        if !unsafe_label {
            DIMENSIONS.iter().for_each(|&d| scores.set(d, p));
        }
    }
    Some(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, lp: f32, top: &[(&str, f32)]) -> TokenChoice {
        TokenChoice {
            text: text.into(),
            logprob: lp,
            top: top.iter().map(|&(t, p)| (t.to_string(), p)).collect(),
        }
    }

    fn verdict_tokens(unsafe_p: &[f32; 6]) -> Vec<TokenChoice> {
        let mut tokens = vec![tok("{", 0.0, &[])];
        for (i, d) in DIMENSIONS.iter().enumerate() {
            let sep = if i == 0 { "\"" } else { ", \"" };
            tokens.push(tok(sep, 0.0, &[]));
            tokens.push(tok(d.name(), 0.0, &[]));
            tokens.push(tok("\": \"", 0.0, &[]));
            let p = unsafe_p[i];
            let (chosen, lp) = if p > 0.5 {
                ("unsafe", p.ln())
            } else {
                ("safe", (1.0 - p).ln())
            };
            tokens.push(tok(
                chosen,
                lp,
                &[("safe", (1.0 - p).ln()), ("unsafe", p.ln())],
            ));
            tokens.push(tok("\"", 0.0, &[]));
        }
        tokens.push(tok("}", 0.0, &[]));
        tokens
    }

    #[test]
    fn a_json_verdict_gives_each_label_probability() {
        let p = [0.1, 0.9, 0.25, 0.5, 0.02, 0.75];
        let scores = json_scores(&verdict_tokens(&p)).expect("all six");
        for (i, d) in DIMENSIONS.iter().enumerate() {
            assert!((scores.get(*d) - p[i]).abs() < 1e-4, "{d:?}");
        }
    }

    #[test]
    fn split_label_tokens_count_by_their_prefix() {
        // "un" + "safe": the alternatives at the first token decide.
        let t = tok(
            "un",
            (0.7f32).ln(),
            &[
                ("un", (0.7f32).ln()),
                ("s", (0.2f32).ln()),
                ("safe", (0.1f32).ln()),
            ],
        );
        assert!((unsafe_share(&t) - 0.7).abs() < 1e-5);
    }

    #[test]
    fn a_verdict_missing_a_dimension_is_no_verdict() {
        let mut tokens = verdict_tokens(&[0.1; 6]);
        tokens.truncate(tokens.len() - 6);
        assert_eq!(json_scores(&tokens), None);
    }

    #[test]
    fn labels_without_alternatives_count_as_certain() {
        let text = r#"{"physical": "unsafe", "ethical": "safe", "emotional": "safe", "factual": "safe", "theological": "safe", "security": "safe"}"#;
        let scores = json_scores(&[tok(text, 0.0, &[])]).expect("parsed");
        assert_eq!(scores.get(Dimension::Physical), 1.0);
        assert_eq!(scores.get(Dimension::Security), 0.0);
    }

    #[test]
    fn llama_guard_categories_map_onto_dimensions() {
        let s = dedicated_scores(GuardFormat::LlamaGuard3, "unsafe\nS1,S11", None).unwrap();
        assert_eq!(s.get(Dimension::Physical), 1.0);
        assert_eq!(s.get(Dimension::Emotional), 1.0);
        assert_eq!(s.get(Dimension::Security), 0.0);
        let first = tok(
            "unsafe",
            (0.8f32).ln(),
            &[("unsafe", (0.8f32).ln()), ("safe", (0.2f32).ln())],
        );
        let s = dedicated_scores(GuardFormat::LlamaGuard3, "unsafe\nS7", Some(&first)).unwrap();
        assert!((s.get(Dimension::Security) - 0.8).abs() < 1e-5);
        let s = dedicated_scores(GuardFormat::LlamaGuard3, "safe", None).unwrap();
        assert_eq!(s, Scores::default());
        assert_eq!(
            dedicated_scores(GuardFormat::LlamaGuard3, "maybe", None),
            None
        );
    }

    #[test]
    fn qwen3_guard_answers_map_onto_dimensions() {
        let s = dedicated_scores(
            GuardFormat::Qwen3Guard,
            "Safety: Unsafe\nCategories: Violent, PII",
            None,
        )
        .unwrap();
        assert_eq!(s.get(Dimension::Physical), 1.0);
        assert_eq!(s.get(Dimension::Security), 1.0);
        assert_eq!(s.get(Dimension::Ethical), 0.0);
        let s = dedicated_scores(
            GuardFormat::Qwen3Guard,
            "Safety: Controversial\nCategories: Politically Sensitive Topics",
            None,
        )
        .unwrap();
        assert_eq!(s.get(Dimension::Factual), 0.5);
        let s = dedicated_scores(
            GuardFormat::Qwen3Guard,
            "Safety: Safe\nCategories: None",
            None,
        )
        .unwrap();
        assert_eq!(s, Scores::default());
    }

    #[test]
    fn guard_formats_are_recognised_by_name() {
        assert_eq!(
            GuardFormat::of(None, "llama-guard-3-1b", ""),
            GuardFormat::LlamaGuard3
        );
        assert_eq!(
            GuardFormat::of(None, "x", "Qwen3Guard Gen 0.6B"),
            GuardFormat::Qwen3Guard
        );
        assert_eq!(
            GuardFormat::of(None, "qwen2.5-coder-0.5b-instruct", ""),
            GuardFormat::Json
        );
        assert_eq!(
            GuardFormat::of(Some(GuardFormat::Json), "llama-guard-3-1b", ""),
            GuardFormat::Json
        );
    }
}
