//! The learned router: per measured tier, a logistic model of "this tier's model answers
//! the query acceptably", trained by scripts/routing/train.py on the ground truth that
//! scripts/routing/grade.py measured with the catalog's own models (data/routing/), and
//! calibrated there (Platt scaling on out-of-fold scores). The model file is JSON, loaded
//! with `--router-model` (data/routing/router.json is the one trained here).
//!
//! Decision: among the tiers the candidate models have, the smallest whose probability of
//! an acceptable answer is within `margin` of the most capable tier's, where
//! `margin = 1 - quality` (`--routing-quality`: 1 routes down only when the smaller model
//! is predicted as good, 0 always takes the smallest). The confidence reported is the
//! calibrated probability that the chosen tier answers acceptably: the chosen tier's own
//! probability, recalibrated for having been chosen (`confidence_platt`, fitted by the
//! trainer on out-of-fold decisions at the default operating point: a tier is picked
//! when its probability reads high, so its raw probability runs optimistic).

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::analyser::Query;
use super::features;

const FORMAT: &str = "wick-router-1";

/// The smallest tier a request with tools goes to when the model file does not say
/// (`tools_floor`): the analyser's (src/routing/analyser.rs: tier 3 is the smallest whose
/// catalog model calls tools reliably), for files trained without tool-call queries.
const DEFAULT_TOOLS_FLOOR: u8 = 3;

#[derive(Deserialize)]
struct ModelFile {
    format: String,
    dense: Vec<String>,
    buckets: usize,
    default_quality: f32,
    tiers: Vec<TierModel>,
    /// `confidence = sigmoid(a · logit(p) + b)` of the chosen tier's `p`; none: `p`.
    #[serde(default)]
    confidence_platt: Option<[f32; 2]>,
    /// Each dense feature's `[lowest, highest]` on the training rows; a request's features
    /// are clamped into it, so one far outside what was measured (a 4 MiB prompt, where
    /// training saw at most a few KB) reads as the nearest measured value instead of being
    /// extrapolated by the linear model into a probability of 0 for every tier. None: no
    /// clamping (files written before the trainer recorded it).
    #[serde(default)]
    dense_range: Option<Vec<[f32; 2]>>,
    /// The smallest tier a request with tools goes to, measured: the trainer writes the
    /// smallest tier whose tool calls graded right at least half as often as the top
    /// tier's on the training split (scripts/routing/train.py); among the tiers from there
    /// up the probabilities and the quality setting choose, as for any request. None:
    /// [`DEFAULT_TOOLS_FLOOR`].
    #[serde(default)]
    tools_floor: Option<u8>,
}

#[derive(Deserialize)]
struct TierModel {
    /// 1 = tier_1.
    tier: u8,
    weights: Vec<f32>,
    bias: f32,
    /// `p = sigmoid(a · score + b)`.
    platt: [f32; 2],
}

/// A loaded router and its operating point.
pub struct LearnedRouter {
    tiers: Vec<TierModel>,
    quality: f32,
    confidence_platt: [f32; 2],
    dense_range: Option<Vec<[f32; 2]>>,
    tools_floor: u8,
}

/// The router's verdict for the candidates it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// One of the candidate tiers (1 = tier_1).
    pub tier: u8,
    /// Calibrated probability that `tier` answers acceptably, in [0, 1].
    pub confidence: f32,
    /// For the debug log: each candidate tier's probability.
    pub reasons: Vec<String>,
}

impl LearnedRouter {
    /// A router from a model file written by scripts/routing/train.py.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading router model {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("router model {}", path.display()))
    }

    /// The model trained on this catalog's measured answers (data/routing/router.json,
    /// written by scripts/routing/train.py), built into the binary.
    pub fn builtin() -> Self {
        Self::parse(include_str!("../../data/routing/router.json"))
            .expect("the built-in router model matches this build's features")
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: ModelFile = serde_json::from_str(text)?;
        if file.format != FORMAT {
            bail!("format {:?}, expected {FORMAT:?}", file.format);
        }
        // A model trained on another feature layout would read the wrong slots.
        if file.dense != features::DENSE || file.buckets != features::BUCKETS {
            bail!("trained on other features than this build computes; retrain it");
        }
        if file.tiers.is_empty() {
            bail!("no tier models");
        }
        for t in &file.tiers {
            if t.weights.len() != features::LEN {
                bail!(
                    "tier {} has {} weights, expected {}",
                    t.tier,
                    t.weights.len(),
                    features::LEN
                );
            }
        }
        if let Some(range) = &file.dense_range {
            if range.len() != features::DENSE.len() || range.iter().any(|[lo, hi]| lo > hi) {
                bail!(
                    "dense_range needs one [lowest, highest] pair per dense feature ({})",
                    features::DENSE.len()
                );
            }
        }
        let mut tiers = file.tiers;
        tiers.sort_by_key(|t| t.tier);
        Ok(Self {
            tiers,
            quality: file.default_quality.clamp(0.0, 1.0),
            confidence_platt: file.confidence_platt.unwrap_or([1.0, 0.0]),
            dense_range: file.dense_range,
            tools_floor: file.tools_floor.unwrap_or(DEFAULT_TOOLS_FLOOR),
        })
    }

    /// Set the operating point (`--routing-quality`, 0..=1).
    pub fn with_quality(mut self, quality: f32) -> Self {
        self.quality = quality.clamp(0.0, 1.0);
        self
    }

    pub fn quality(&self) -> f32 {
        self.quality
    }

    /// Calibrated probability that a model of `tier` answers acceptably. A tier above the
    /// measured ones is taken as the most capable measured one; below, as the least.
    pub fn probability(&self, x: &[f32], tier: u8) -> f32 {
        let model = self
            .tiers
            .iter()
            .rev()
            .find(|t| t.tier <= tier)
            .unwrap_or(&self.tiers[0]);
        let score = model
            .weights
            .iter()
            .zip(x)
            .fold(model.bias, |acc, (w, v)| w.mul_add(*v, acc));
        sigmoid(model.platt[0].mul_add(score, model.platt[1]))
    }

    /// Choose among `candidate_tiers` (any order, at least one).
    pub fn decide(&self, query: &Query, has_schema: bool, candidate_tiers: &[u8]) -> Verdict {
        let mut tiers = candidate_tiers.to_vec();
        tiers.sort_unstable();
        tiers.dedup();
        if query.has_tools {
            // Below the floor only when nothing else is there: then the most capable.
            let top = tiers.last().copied();
            tiers.retain(|&t| t >= self.tools_floor);
            if tiers.is_empty() {
                tiers.extend(top);
            }
        }
        let Some(&top) = tiers.last() else {
            return Verdict {
                tier: 1,
                confidence: 1.0,
                reasons: vec!["no candidates".into()],
            };
        };
        if tiers.len() == 1 {
            return Verdict {
                tier: top,
                confidence: 1.0,
                reasons: vec!["one tier".into()],
            };
        }
        let mut x = features::features(query, has_schema);
        if let Some(range) = &self.dense_range {
            for (v, [lo, hi]) in x.iter_mut().zip(range) {
                *v = v.clamp(*lo, *hi);
            }
        }
        let p: Vec<f32> = tiers.iter().map(|&t| self.probability(&x, t)).collect();
        let best = p[p.len() - 1];
        let margin = 1.0 - self.quality;
        let at = p
            .iter()
            .position(|&pt| pt >= best - margin)
            .unwrap_or(p.len() - 1);
        let [a, b] = self.confidence_platt;
        let confidence = sigmoid(a.mul_add(logit(p[at]), b));
        Verdict {
            tier: tiers[at],
            confidence: (confidence * 1000.0).round() / 1000.0,
            reasons: tiers
                .iter()
                .zip(&p)
                .map(|(t, p)| format!("p(tier_{t}) {p:.3}"))
                .collect(),
        }
    }
}

/// The inverse of [`sigmoid`], finite at 0 and 1.
fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::ChatMessage;

    /// A model file made here (not trained): tier 1 grows less likely to answer as the
    /// last turn grows (`log_chars`, the first dense feature); tier 2 answers at 0.88.
    fn model(dense: &[&str]) -> String {
        let mut small = vec![0.0f32; features::LEN];
        small[0] = -1.0;
        let big = vec![0.0f32; features::LEN];
        serde_json::json!({
            "format": FORMAT,
            "dense": dense,
            "buckets": features::BUCKETS,
            "default_quality": 0.9,
            "tiers": [
                {"tier": 2, "weights": big, "bias": 2.0, "platt": [1.0, 0.0]},
                {"tier": 1, "weights": small, "bias": 6.0, "platt": [1.0, 0.0]},
            ],
        })
        .to_string()
    }

    fn decide(router: &LearnedRouter, text: &str, tiers: &[u8]) -> Verdict {
        let messages = [ChatMessage::new("user", text)];
        let query = Query {
            messages: &messages,
            has_tools: false,
        };
        router.decide(&query, false, tiers)
    }

    #[test]
    fn short_queries_go_small_long_ones_up_and_quality_moves_the_point() {
        let router = LearnedRouter::parse(&model(&features::DENSE)).unwrap();
        assert_eq!(router.quality(), 0.9);
        // ln(1 + 2) ≈ 1.1: p1 = σ(4.9) ≈ 0.99 ≥ p2 - 0.1.
        let short = decide(&router, "hi", &[1, 2]);
        assert_eq!(short.tier, 1, "{short:?}");
        assert!(short.confidence > 0.95, "{short:?}");
        // 3,000 characters: p1 = σ(6 - 8.0) ≈ 0.12, far below p2 ≈ 0.88.
        let long = "word ".repeat(600);
        let verdict = decide(&router, &long, &[2, 1]);
        assert_eq!(verdict.tier, 2, "{verdict:?}");
        assert!((verdict.confidence - 0.881).abs() < 0.002, "{verdict:?}");
        // Quality 0 always takes the smallest tier.
        let cheap = LearnedRouter::parse(&model(&features::DENSE))
            .unwrap()
            .with_quality(0.0);
        assert_eq!(decide(&cheap, &long, &[1, 2]).tier, 1);
    }

    #[test]
    fn the_confidence_is_recalibrated_for_the_choice() {
        let mut file: serde_json::Value = serde_json::from_str(&model(&features::DENSE)).unwrap();
        // logit(0.881) = 2.0: a = 0.5, b = -0.5 gives σ(0.5) ≈ 0.622.
        file["confidence_platt"] = serde_json::json!([0.5, -0.5]);
        let router = LearnedRouter::parse(&file.to_string()).unwrap();
        let verdict = decide(&router, &"word ".repeat(600), &[1, 2]);
        assert_eq!(verdict.tier, 2, "{verdict:?}");
        assert!((verdict.confidence - 0.622).abs() < 0.002, "{verdict:?}");
    }

    #[test]
    fn tiers_beyond_the_measured_ones_and_a_single_tier() {
        let router = LearnedRouter::parse(&model(&features::DENSE)).unwrap();
        let long = "word ".repeat(600);
        // tier_3 and tier_4 were not measured: they read as tier 2, the most capable one.
        let verdict = decide(&router, &long, &[1, 3, 4]);
        assert_eq!(verdict.tier, 3, "{verdict:?}");
        // One candidate tier: it is certain.
        let one = decide(&router, &long, &[2]);
        assert_eq!((one.tier, one.confidence), (2, 1.0));
    }

    #[test]
    fn requests_with_tools_start_at_the_tools_floor() {
        let router = LearnedRouter::parse(&model(&features::DENSE)).unwrap();
        let messages = [ChatMessage::new("user", "hi")];
        let query = Query {
            messages: &messages,
            has_tools: true,
        };
        // "hi" alone goes to tier 1 (above); with tools, tier 3 is the smallest allowed.
        assert_eq!(router.decide(&query, false, &[1, 2, 3, 4]).tier, 3);
        // A catalog without a tier at the floor: its most capable model, with certainty.
        let verdict = router.decide(&query, false, &[1, 2]);
        assert_eq!((verdict.tier, verdict.confidence), (2, 1.0));
        // A model file that measured tool calls sets its own floor.
        let mut file: serde_json::Value = serde_json::from_str(&model(&features::DENSE)).unwrap();
        file["tools_floor"] = serde_json::json!(2);
        let measured = LearnedRouter::parse(&file.to_string()).unwrap();
        assert_eq!(measured.decide(&query, false, &[1, 2, 3]).tier, 2);
        file["tools_floor"] = serde_json::json!(1);
        let measured = LearnedRouter::parse(&file.to_string()).unwrap();
        assert_eq!(measured.decide(&query, false, &[1, 2, 3]).tier, 1);
    }

    #[test]
    fn features_beyond_the_training_range_read_as_its_edge() {
        let mut file: serde_json::Value = serde_json::from_str(&model(&features::DENSE)).unwrap();
        // Training saw log_chars up to ln(1 + 5) ≈ 1.79: p1 = σ(6 - 1.79) ≈ 0.985 at most.
        let mut range = vec![[0.0f32, 100.0]; features::DENSE.len()];
        range[0] = [0.0, 1.8];
        file["dense_range"] = serde_json::json!(range);
        let router = LearnedRouter::parse(&file.to_string()).unwrap();
        // 3,000 characters would read p1 ≈ 0.12 unclamped (above); clamped it reads as the
        // longest measured query, which tier 1 answered.
        let verdict = decide(&router, &"word ".repeat(600), &[1, 2]);
        assert_eq!(verdict.tier, 1, "{verdict:?}");
        assert_eq!(verdict, decide(&router, &"word ".repeat(60_000), &[1, 2]));
        // A range per dense feature, lowest first, or the file is refused.
        file["dense_range"] = serde_json::json!([[0.0, 1.0]]);
        assert!(LearnedRouter::parse(&file.to_string()).is_err());
        range[0] = [2.0, 1.0];
        file["dense_range"] = serde_json::json!(range);
        assert!(LearnedRouter::parse(&file.to_string()).is_err());
    }

    #[test]
    fn the_built_in_model_loads_and_sends_word_problems_above_greetings() {
        let router = LearnedRouter::builtin();
        assert!((0.0..=1.0).contains(&router.quality()));
        let problem = "A store sells pencils at 3 for $1.20 and pens at $2.50 each. Maria \
                       buys 12 pencils and 4 pens and pays with a $20 bill. How much change \
                       does she get?";
        let hard = decide(&router, problem, &[1, 2, 3]);
        assert!(
            hard.tier > 1,
            "the 135M model fails word problems: {hard:?}"
        );
        let hello = decide(&router, "Hello! How are you today?", &[1, 2, 3]);
        assert!(hello.tier <= hard.tier, "{hello:?} vs {hard:?}");
        let p = |text: &str, tier| {
            let messages = [ChatMessage::new("user", text)];
            let query = Query {
                messages: &messages,
                has_tools: false,
            };
            router.probability(&features::features(&query, false), tier)
        };
        assert!(p(problem, 1) < p("Hello! How are you today?", 1));
        // The 135M model never called a tool in the measurement (data/routing/report.md):
        // a request with tools, even a greeting, goes above it.
        let messages = [ChatMessage::new("user", "Hello! How are you today?")];
        let with_tools = Query {
            messages: &messages,
            has_tools: true,
        };
        assert!(router.decide(&with_tools, false, &[1, 2, 3]).tier >= 2);
        // A prompt far longer than any measured one reads as the longest measured ones
        // (dense_range), not as a certain failure of every tier.
        let huge = decide(&router, &problem.repeat(20_000), &[1, 2, 3]);
        assert!(huge.confidence > 0.05, "{huge:?}");
    }

    #[test]
    fn a_model_of_another_feature_layout_is_refused() {
        let mut names = features::DENSE.to_vec();
        names.swap(0, 1);
        let err = LearnedRouter::parse(&model(&names)).err().expect("refused");
        assert!(err.to_string().contains("retrain"), "{err}");
        assert!(LearnedRouter::parse("{\"format\": \"other\"}").is_err());
    }
}
