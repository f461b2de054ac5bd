//! The operator's safety policy (safety.toml): per dimension and direction an action and a
//! threshold, what a guard failure does, how streams are watched, and the refusal texts,
//! which may depend on the request's tradition. The repository's safety.toml is built in.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::{Dimension, Direction, Scores, Verdict, DIMENSIONS};
use crate::routing::Tradition;

const BUILTIN: &str = include_str!("../../safety.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Annotate,
    Refuse,
}

/// What happens when the guard cannot judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Refuse the request (503 `guard_unavailable`).
    Closed,
    /// Let it through, its verdict "pass" with the error beside it.
    Open,
}

impl FailureMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    pub threshold: f32,
}

/// When a stream's output is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamWindow {
    /// Judge again after this many new characters.
    pub every_chars: usize,
    /// Over the last this many characters.
    pub window_chars: usize,
}

/// One direction's rules, as the file spells them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    physical: Rule,
    ethical: Rule,
    emotional: Rule,
    factual: Rule,
    theological: Rule,
    security: Rule,
}

impl RulesFile {
    fn rules(&self) -> [Rule; 6] {
        [
            self.physical,
            self.ethical,
            self.emotional,
            self.factual,
            self.theological,
            self.security,
        ]
    }
}

/// A table of refusal texts: per dimension, and `any` for the rest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Texts {
    any: Option<String>,
    physical: Option<String>,
    ethical: Option<String>,
    emotional: Option<String>,
    factual: Option<String>,
    theological: Option<String>,
    security: Option<String>,
}

impl Texts {
    fn for_dimension(&self, d: Option<Dimension>) -> Option<&str> {
        let own = match d {
            Some(Dimension::Physical) => &self.physical,
            Some(Dimension::Ethical) => &self.ethical,
            Some(Dimension::Emotional) => &self.emotional,
            Some(Dimension::Factual) => &self.factual,
            Some(Dimension::Theological) => &self.theological,
            Some(Dimension::Security) => &self.security,
            None => &None,
        };
        own.as_deref().or(self.any.as_deref())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    on_guard_failure: FailureMode,
    stream: StreamWindow,
    input: RulesFile,
    output: RulesFile,
    refusal: BTreeMap<String, Texts>,
}

/// The tables `[refusal.*]` may name: `default` and the perspective layers'.
const REFUSAL_TABLES: [&str; 5] = ["default", "general", "evangelical", "catholic", "mainline"];

#[derive(Debug, Clone)]
pub struct Policy {
    pub on_guard_failure: FailureMode,
    pub stream: StreamWindow,
    input: [Rule; 6],
    output: [Rule; 6],
    refusal: BTreeMap<String, Texts>,
}

impl Policy {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("the built-in safety.toml is valid")
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read safety policy {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in safety policy {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: PolicyFile = toml::from_str(text)?;
        for (direction, rules) in [("input", &file.input), ("output", &file.output)] {
            for (d, rule) in DIMENSIONS.iter().zip(rules.rules()) {
                if !(0.0..=1.0).contains(&rule.threshold) {
                    bail!(
                        "[{direction}] {}: threshold must be within 0..=1, not {}",
                        d.name(),
                        rule.threshold
                    );
                }
            }
        }
        if file.stream.every_chars == 0 || file.stream.window_chars < file.stream.every_chars {
            bail!("[stream]: every_chars must be > 0 and window_chars at least every_chars");
        }
        for name in file.refusal.keys() {
            if !REFUSAL_TABLES.contains(&name.as_str()) {
                bail!(
                    "[refusal.{name}]: expected one of {}",
                    REFUSAL_TABLES.map(|t| format!("[refusal.{t}]")).join(", ")
                );
            }
        }
        if file
            .refusal
            .get("default")
            .and_then(|t| t.any.as_ref())
            .is_none()
        {
            bail!("[refusal.default] needs `any`, the text of a refusal no other text covers");
        }
        Ok(Self {
            on_guard_failure: file.on_guard_failure,
            stream: file.stream,
            input: file.input.rules(),
            output: file.output.rules(),
            refusal: file.refusal,
        })
    }

    fn rules(&self, direction: Direction) -> &[Rule; 6] {
        match direction {
            Direction::Input => &self.input,
            Direction::Output => &self.output,
        }
    }

    /// The verdict on one direction's scores, and the dimension behind a refusal: the most
    /// likely of those whose rule refuses.
    pub fn decide(&self, direction: Direction, scores: &Scores) -> (Verdict, Option<Dimension>) {
        let mut verdict = Verdict::Pass;
        let mut cause: Option<(Dimension, f32)> = None;
        for (d, rule) in DIMENSIONS.iter().zip(self.rules(direction)) {
            let p = scores.get(*d);
            if p < rule.threshold {
                continue;
            }
            match rule.action {
                Action::Allow => {}
                Action::Annotate => verdict = verdict.max(Verdict::Annotate),
                Action::Refuse => {
                    verdict = Verdict::Refuse;
                    if cause.is_none_or(|(_, q)| p > q) {
                        cause = Some((*d, p));
                    }
                }
            }
        }
        (verdict, cause.map(|(d, _)| d))
    }

    /// Each dimension, and whether its score reached a threshold whose action is not
    /// `allow` (what /metrics counts per dimension).
    pub fn flagged(
        &self,
        direction: Direction,
        scores: &Scores,
    ) -> impl Iterator<Item = (Dimension, bool)> + '_ {
        let scores = *scores;
        DIMENSIONS
            .into_iter()
            .zip(self.rules(direction))
            .map(move |(d, rule)| {
                (
                    d,
                    rule.action != Action::Allow && scores.get(d) >= rule.threshold,
                )
            })
    }

    /// The refusal text for a refusal on `cause` (None: the guard failed closed) in a
    /// request of `tradition` (`general` when /v2 named none: the same choice as the
    /// perspective layer's, src/routing/tradition.rs).
    pub fn refusal_text(&self, cause: Option<Dimension>, tradition: Option<&str>) -> &str {
        let from = |table: &str| self.refusal.get(table).and_then(|t| t.for_dimension(cause));
        tradition
            .and_then(from)
            .or_else(|| from("default"))
            .unwrap_or("I can't help with that request.")
    }
}

/// The refusal table a request's tradition reads: its own, `general` for a /v2 request
/// that names none, none for `not_faith_specific` or a /v1 request that names none.
pub fn refusal_table(tradition: Option<Tradition>, default_general: bool) -> Option<&'static str> {
    match tradition {
        Some(Tradition::NotFaithSpecific) => None,
        Some(t) => Some(t.name()),
        None if default_general => Some("general"),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(pairs: &[(Dimension, f32)]) -> Scores {
        let mut s = Scores::default();
        for &(d, p) in pairs {
            s.set(d, p);
        }
        s
    }

    #[test]
    fn the_builtin_policy_loads() {
        let p = Policy::builtin();
        assert_eq!(p.on_guard_failure, FailureMode::Closed);
        assert!(p.stream.every_chars > 0);
    }

    #[test]
    fn the_strongest_action_wins_and_the_likeliest_refusal_is_the_cause() {
        let p = Policy::builtin();
        let s = scores(&[
            (Dimension::Factual, 0.9),
            (Dimension::Physical, 0.6),
            (Dimension::Security, 0.8),
        ]);
        assert_eq!(
            p.decide(Direction::Input, &s),
            (Verdict::Refuse, Some(Dimension::Security))
        );
        let s = scores(&[(Dimension::Factual, 0.9), (Dimension::Physical, 0.4)]);
        assert_eq!(p.decide(Direction::Input, &s), (Verdict::Annotate, None));
        assert_eq!(
            p.decide(Direction::Output, &Scores::default()),
            (Verdict::Pass, None)
        );
    }

    #[test]
    fn refusal_texts_follow_the_tradition_then_the_dimension() {
        let p = Policy::builtin();
        let catholic = p.refusal_text(Some(Dimension::Emotional), Some("catholic"));
        assert!(catholic.contains("priest"), "{catholic}");
        let plain = p.refusal_text(Some(Dimension::Emotional), None);
        assert!(plain.contains("988") && !plain.contains("God"), "{plain}");
        // A tradition without a text of its own for this dimension falls back to default.
        let physical = p.refusal_text(Some(Dimension::Physical), Some("catholic"));
        assert!(physical.contains("physical danger"), "{physical}");
        assert_eq!(
            p.refusal_text(None, None),
            "I can't help with that request."
        );
    }

    #[test]
    fn a_malformed_policy_says_what_is_wrong() {
        let good = BUILTIN;
        let bad_threshold = good.replacen("threshold = 0.5", "threshold = 1.5", 1);
        let e = format!("{:#}", Policy::parse(&bad_threshold).unwrap_err());
        assert!(e.contains("threshold must be within 0..=1"), "{e}");
        let bad_action = good.replacen("action = \"refuse\"", "action = \"block\"", 1);
        let e = format!("{:#}", Policy::parse(&bad_action).unwrap_err());
        assert!(e.contains("block"), "{e}");
        let missing = good.replacen(
            "security    = { action = \"refuse\",   threshold = 0.6 }\n",
            "",
            1,
        );
        let e = format!("{:#}", Policy::parse(&missing).unwrap_err());
        assert!(e.contains("security"), "{e}");
        let bad_table = good.replacen("[refusal.mainline]", "[refusal.orthodox]", 1);
        let e = format!("{:#}", Policy::parse(&bad_table).unwrap_err());
        assert!(e.contains("refusal.orthodox"), "{e}");
    }
}
