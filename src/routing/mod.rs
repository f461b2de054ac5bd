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

/// Choose the model for a /v2 request.
pub fn route(
    catalog: &Catalog,
    router: &Router,
    fields: &RoutingFields,
    messages: &[ChatMessage],
    extras: Extras,
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
        .filter(|m| family.is_none_or(|f| f.matches(&m.family)))
        .collect();
    let started = Instant::now();
    let query = analyser::Query {
        messages,
        has_tools: extras.has_tools,
    };
    let decision = match router {
        Router::Analyser => analyser::analyse(&query),
        Router::Learned(learned) => {
            let tiers: Vec<u8> = candidates
                .iter()
                .map(|m| select::tier_number(&m.tier))
                .collect();
            let verdict = learned.decide(&query, extras.has_schema, &tiers);
            analyser::Decision {
                tier: verdict.tier,
                confidence: verdict.confidence,
                reasons: verdict.reasons,
            }
        }
    };
    let chosen = select::select(&candidates, decision.tier).ok_or_else(|| RoutingError {
        message: "This server's catalog holds no model of the requested family".into(),
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
