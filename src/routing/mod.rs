//! The V2 routing contract (shared/ROUTING.md): which routing mechanism a request uses,
//! the tier its query needs, which catalog model serves it, and the tradition layer
//! added to its system prompt. Plain functions: no HTTP, no model.

pub mod analyser;
pub mod features;
pub mod learned;
pub mod mechanism;
pub mod select;
pub mod tradition;

use std::time::Instant;

use crate::catalog::Catalog;
use crate::template::ChatMessage;
pub use mechanism::{Family, Mechanism, RoutingError, RoutingFields};
pub use tradition::{Tradition, TraditionLayers};

/// Where a /v2 request goes, and what its response says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The catalog id to serve (for direct selection, as the caller wrote it: it may not exist).
    pub model: String,
    pub mechanism: Mechanism,
    /// The tier of the model chosen by analysis (`None` for direct selection).
    pub tier: Option<String>,
    /// The analyser's confidence (`None` for direct selection).
    pub confidence: Option<f32>,
}

/// How the tier of an analysed request (auto routing, family) is estimated.
pub enum Router {
    /// Hand-tuned keyword cues (src/routing/analyser.rs).
    Analyser,
    /// A model learned from measured answers (src/routing/learned.rs).
    Learned(learned::LearnedRouter),
}

/// What a request offers besides its messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    pub has_tools: bool,
    /// `response_format` asks for structured output.
    pub has_schema: bool,
}

/// Choose the model for a /v2 request. `auto_local_only` (`--auto-routing-local-only`) keeps
/// auto routing to the models this server runs itself; a family or a direct model still
/// reaches an upstream.
pub fn route(
    catalog: &Catalog,
    router: &Router,
    fields: &RoutingFields,
    messages: &[ChatMessage],
    extras: Extras,
    auto_local_only: bool,
) -> Result<Route, RoutingError> {
    let mechanism = mechanism::mechanism(fields)?;
    let family = match &mechanism {
        Mechanism::Direct(model) => {
            return Ok(Route {
                model: model.clone(),
                mechanism,
                tier: None,
                confidence: None,
            })
        }
        Mechanism::Auto => None,
        Mechanism::Family(f) => Some(*f),
    };
    let candidates: Vec<_> = catalog
        .models
        .iter()
        .filter(|m| !m.embedding)
        .filter(|m| family.is_none_or(|f| f.matches(&m.family)))
        .filter(|m| family.is_some() || !(auto_local_only && m.is_upstream()))
        .collect();
    if family.is_some() && candidates.is_empty() {
        return Err(RoutingError {
            message: format!(
                "model_family '{}' is not served by this server: it serves {}.",
                fields.model_family.unwrap_or_default(),
                served_families(catalog)
            ),
            param: "model_family".into(),
        });
    }
    let started = Instant::now();
    let query = analyser::Query {
        messages,
        has_tools: extras.has_tools,
    };
    let mut tiers: Vec<u8> = candidates
        .iter()
        .map(|m| select::tier_number(&m.tier))
        .collect();
    tiers.sort_unstable();
    tiers.dedup();
    let decision = match router {
        // One tier to choose from: nothing to estimate, and no doubt about where it goes.
        _ if tiers.len() == 1 => analyser::Decision {
            tier: tiers[0],
            confidence: 1.0,
            reasons: vec!["the candidates have one tier".into()],
        },
        Router::Analyser => analyser::analyse(&query),
        Router::Learned(learned) => {
            let verdict = learned.decide(&query, extras.has_schema, &tiers);
            analyser::Decision {
                tier: verdict.tier,
                confidence: verdict.confidence,
                reasons: verdict.reasons,
            }
        }
    };
    let chosen = select::select(&candidates, decision.tier).ok_or_else(|| RoutingError {
        message: "This server's catalog holds no model auto routing may use".into(),
        param: "model_family".into(),
    })?;
    tracing::debug!(
        needed = decision.tier,
        confidence = decision.confidence,
        reasons = %decision.reasons.join("; "),
        model = %chosen.id,
        micros = started.elapsed().as_micros() as u64,
        "routed"
    );
    Ok(Route {
        model: chosen.id.clone(),
        mechanism,
        tier: Some(chosen.tier.clone()),
        confidence: Some(decision.confidence),
    })
}

/// The families the catalog holds, as requests name them ("'open source' (also written
/// open_source or open-source)").
fn served_families(catalog: &Catalog) -> String {
    let held: Vec<String> = Family::ALL
        .into_iter()
        .filter(|f| catalog.models.iter().any(|m| f.matches(&m.family)))
        .map(|f| match f {
            Family::OpenSource => {
                "the 'open source' family (also written open_source or open-source)".into()
            }
            f => format!("the '{}' family", f.request_name()),
        })
        .collect();
    if held.is_empty() {
        "no family".into()
    } else {
        held.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = r#"
default = "local"

[[model]]
id = "local"
family = "open source"
tier = "tier_1"
context_length = 2048
file = "a.gguf"
[[model.source]]
type = "local"
path = "a.gguf"

[[model]]
id = "hosted"
family = "openai"
tier = "tier_4"
[model.upstream]
url = "http://127.0.0.1:9/v1"
"#;

    fn catalog() -> Catalog {
        Catalog::parse(CATALOG, std::path::Path::new(".")).unwrap()
    }

    fn hard() -> Vec<ChatMessage> {
        vec![ChatMessage::new(
            "user",
            "Prove step by step that the square root of 2 is irrational, then write a Rust \
             function that checks such a proof, and analyse its time complexity in detail.",
        )]
    }

    fn fields(auto: Option<bool>, family: Option<&str>) -> RoutingFields<'_> {
        RoutingFields {
            auto_routing: auto,
            model: None,
            model_family: family,
        }
    }

    #[test]
    fn families_reach_upstream_models_and_absent_ones_say_what_is_served() {
        let c = catalog();
        let r = route(
            &c,
            &Router::Analyser,
            &fields(None, Some("openai")),
            &hard(),
            Extras::default(),
            true,
        )
        .unwrap();
        assert_eq!(
            r.model, "hosted",
            "a family reaches its upstream even when auto is local"
        );
        let e = route(
            &c,
            &Router::Analyser,
            &fields(None, Some("google")),
            &hard(),
            Extras::default(),
            false,
        )
        .unwrap_err();
        assert_eq!(e.param, "model_family");
        assert!(e.message.contains("google") && e.message.contains("'open source'"));
        assert!(e.message.contains("'openai'"), "{}", e.message);
    }

    #[test]
    fn auto_routing_considers_upstreams_unless_kept_local() {
        let c = catalog();
        let everywhere = route(
            &c,
            &Router::Analyser,
            &fields(Some(true), None),
            &hard(),
            Extras::default(),
            false,
        )
        .unwrap();
        assert_eq!(everywhere.model, "hosted");
        let local = route(
            &c,
            &Router::Analyser,
            &fields(Some(true), None),
            &hard(),
            Extras::default(),
            true,
        )
        .unwrap();
        assert_eq!(local.model, "local");
        assert_eq!(
            local.confidence,
            Some(1.0),
            "one candidate tier leaves no doubt"
        );
    }
}
