//! The six safety dimensions of the Completions V2 contract (docs/safety.md): a guard model
//! judges a request's input before generation and its output as it streams and once
//! complete; an operator's policy (safety.toml) turns the guard's probabilities into a
//! verdict per direction: pass, annotate or refuse.
//!
//! The pieces: [`policy`] (the operator's file), [`guard`] (running the guard model and
//! reading its verdict), [`formats`] (dedicated guard models' own output formats), and
//! [`transcript`] (what the guard reads). The api layer (src/api/guarded.rs) puts them in
//! the request flow.

pub mod formats;
pub mod guard;
pub mod policy;
pub mod transcript;

use serde_json::{json, Value};

pub use guard::{Guard, GuardState};
pub use policy::{Action, FailureMode, Policy};

/// The contract's six dimensions, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Physical,
    Ethical,
    Emotional,
    Factual,
    Theological,
    Security,
}

pub const DIMENSIONS: [Dimension; 6] = [
    Dimension::Physical,
    Dimension::Ethical,
    Dimension::Emotional,
    Dimension::Factual,
    Dimension::Theological,
    Dimension::Security,
];

impl Dimension {
    pub fn name(self) -> &'static str {
        match self {
            Self::Physical => "physical",
            Self::Ethical => "ethical",
            Self::Emotional => "emotional",
            Self::Factual => "factual",
            Self::Theological => "theological",
            Self::Security => "security",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        DIMENSIONS.into_iter().find(|d| d.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which way the judged text travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The conversation as the model will see it, before generation.
    Input,
    /// The model's answer, as it streams and once complete.
    Output,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// The guard's probability that a text is unsafe, per dimension, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores([f32; 6]);

impl Scores {
    pub fn get(&self, d: Dimension) -> f32 {
        self.0[d.index()]
    }

    pub fn set(&mut self, d: Dimension, p: f32) {
        self.0[d.index()] = p.clamp(0.0, 1.0);
    }

    /// The larger of the two per dimension (a stream's windows and its whole text).
    pub fn max(self, other: Scores) -> Scores {
        let mut out = self;
        for d in DIMENSIONS {
            out.set(d, self.get(d).max(other.get(d)));
        }
        out
    }

    fn to_json(self) -> Value {
        let map: serde_json::Map<String, Value> = DIMENSIONS
            .iter()
            .map(|&d| {
                // Three decimals, as routing_confidence: more would be noise.
                let p = (f64::from(self.get(d)) * 1000.0).round() / 1000.0;
                (d.name().to_string(), json!(p))
            })
            .collect();
        Value::Object(map)
    }
}

/// What the policy makes of one direction's scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    Annotate,
    Refuse,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Annotate => "annotate",
            Self::Refuse => "refuse",
        }
    }
}

/// One direction's judgement as a response reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    /// None when the guard could not judge and the policy fails open.
    pub scores: Option<Scores>,
    /// The dimension behind a refusal (the most likely of those the policy refuses on);
    /// None for a refusal because the guard failed closed.
    pub cause: Option<Dimension>,
    /// How long the guard took, milliseconds.
    pub guard_ms: u64,
    /// Why the guard could not judge.
    pub error: Option<String>,
}

impl Assessment {
    /// The `safety.input` / `safety.output` object of a response.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "verdict": self.verdict.name() });
        if let Some(scores) = self.scores {
            v["dimensions"] = scores.to_json();
        }
        if let Some(cause) = self.cause {
            v["cause"] = cause.name().into();
        }
        v["guard_ms"] = self.guard_ms.into();
        if let Some(error) = &self.error {
            v["error"] = error.clone().into();
        }
        v
    }
}

/// The `safety` field of a /v2 response: the input's assessment, and the output's once
/// there is one.
pub fn metadata(input: Option<&Assessment>, output: Option<&Assessment>) -> Value {
    let mut v = json!({});
    if let Some(a) = input {
        v["input"] = a.to_json();
    }
    if let Some(a) = output {
        v["output"] = a.to_json();
    }
    v
}

/// Recall on unsafe prompts a model needs to be the default guard (issue text, README).
pub const DEFAULT_GUARD_RECALL: f32 = 0.8;

/// The models that may judge: chat models run here.
fn can_guard(entry: &crate::catalog::ModelEntry) -> bool {
    !entry.embedding && !entry.is_upstream()
}

/// The default guard: the cheapest catalog model (lowest tier, then smallest file) whose
/// measured `guard_recall` is at least [`DEFAULT_GUARD_RECALL`]; with none, the measured
/// one of highest recall; with none measured, the most capable model run here.
pub fn default_guard_model(catalog: &crate::catalog::Catalog) -> Option<String> {
    let local = || catalog.models.iter().filter(|e| can_guard(e));
    let cost = |e: &&crate::catalog::ModelEntry| (e.tier.clone(), e.size.unwrap_or(u64::MAX));
    if let Some(e) = local()
        .filter(|e| e.guard_recall.is_some_and(|r| r >= DEFAULT_GUARD_RECALL))
        .min_by_key(cost)
    {
        return Some(e.id.clone());
    }
    let measured = local().filter(|e| e.guard_recall.is_some()).max_by(|a, b| {
        a.guard_recall
            .partial_cmp(&b.guard_recall)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    measured
        .or_else(|| local().max_by_key(cost))
        .map(|e| e.id.clone())
}

/// `--guard-model`'s id names a chat model this server runs.
pub fn check_guard_model(catalog: &crate::catalog::Catalog, id: &str) -> anyhow::Result<()> {
    match catalog.get(id) {
        None => anyhow::bail!("--guard-model '{id}' is not in the catalog"),
        Some(e) if !can_guard(e) => anyhow::bail!(
            "--guard-model '{id}' cannot judge: the guard must be a chat model run here \
             (not an embedding model or an upstream)"
        ),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_clamped_and_reported_per_dimension() {
        let mut s = Scores::default();
        s.set(Dimension::Security, 1.7);
        s.set(Dimension::Physical, 0.12345);
        let j = s.to_json();
        assert_eq!(j["security"], 1.0);
        assert_eq!(j["physical"], 0.123);
        assert_eq!(j.as_object().unwrap().len(), 6);
    }

    fn catalog(entries: &str) -> crate::catalog::Catalog {
        toml::from_str(&format!("default = \"a\"\n{entries}")).expect("catalog")
    }

    #[test]
    fn the_default_guard_is_the_cheapest_with_enough_recall() {
        let entry = |id: &str, tier: &str, size: u64, recall: Option<f32>| {
            let recall = recall.map_or(String::new(), |r| format!("guard_recall = {r}\n"));
            format!(
                "[[model]]\nid = \"{id}\"\nfamily = \"open source\"\ntier = \"{tier}\"\n\
                 context_length = 2048\nfile = \"{id}.gguf\"\nsize = {size}\n{recall}"
            )
        };
        let c = catalog(
            &[
                entry("a", "tier_1", 100, Some(0.5)),
                entry("b", "tier_3", 900, Some(0.93)),
                entry("c", "tier_2", 400, Some(0.81)),
                entry("d", "tier_2", 300, None),
            ]
            .concat(),
        );
        assert_eq!(default_guard_model(&c).as_deref(), Some("c"));
        // None good enough: the best measured.
        let c = catalog(
            &[
                entry("a", "tier_1", 100, Some(0.5)),
                entry("b", "tier_3", 900, Some(0.7)),
            ]
            .concat(),
        );
        assert_eq!(default_guard_model(&c).as_deref(), Some("b"));
        // None measured: the most capable.
        let c = catalog(
            &[
                entry("a", "tier_1", 100, None),
                entry("b", "tier_2", 900, None),
            ]
            .concat(),
        );
        assert_eq!(default_guard_model(&c).as_deref(), Some("b"));
        assert!(check_guard_model(&c, "a").is_ok());
        assert!(check_guard_model(&c, "z").is_err());
    }

    #[test]
    fn every_dimension_parses_back_from_its_name() {
        for d in DIMENSIONS {
            assert_eq!(Dimension::parse(d.name()), Some(d));
        }
        assert_eq!(Dimension::parse("spiritual"), None);
    }
}
