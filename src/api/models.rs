//! GET /v1/models and /v1/models/{id}: the catalog, in OpenAI's list shape, with wick's
//! own facts (family, tier, context length, loaded) beside the standard fields.

use std::sync::Arc;

use async_openai::types::models::Model;
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::catalog::ModelEntry;

#[derive(Serialize)]
pub struct ModelCard {
    #[serde(flatten)]
    base: Model,
    family: String,
    tier: String,
    /// Unknown (left out) for an upstream model whose entry does not give it.
    #[serde(skip_serializing_if = "Option::is_none")]
    context_length: Option<usize>,
    loaded: bool,
    /// `local` (this server runs it) or `upstream` (it forwards to another server).
    served_by: &'static str,
    /// An embedding model (for /v1/embeddings); left out for chat models.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    embedding: bool,
    /// A chat model whose operator turned /v1/embeddings on, and how it pools; left out
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pooled_embeddings: Option<crate::model::bert::Pooling>,
}

#[derive(Serialize)]
pub struct ModelList {
    object: &'static str,
    data: Vec<ModelCard>,
}

fn card(state: &AppState, entry: &ModelEntry) -> ModelCard {
    ModelCard {
        base: Model {
            id: entry.id.clone(),
            object: "model".into(),
            created: state.started as u32,
            // The server that runs it: this one, or an upstream it forwards to.
            owned_by: if entry.is_upstream() {
                "upstream".into()
            } else {
                "wick".into()
            },
            shutdown_date: None,
        },
        family: entry.family.clone(),
        tier: entry.tier.clone(),
        context_length: Some(state.models.context_length(entry)).filter(|&c| c > 0),
        loaded: state.models.is_loaded(&entry.id),
        served_by: if entry.is_upstream() {
            "upstream"
        } else {
            "local"
        },
        embedding: entry.embedding,
        pooled_embeddings: entry.pooled_embeddings,
    }
}

pub async fn list(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let data = state
        .models
        .catalog
        .models
        .iter()
        .map(|entry| card(&state, entry))
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

pub async fn one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let entry = state
        .models
        .catalog
        .get(&id)
        .ok_or_else(|| ApiError::model_not_found(&id, ""))?;
    Ok(Json(card(&state, entry)))
}
