//! The HTTP API: an axum router speaking OpenAI's JSON and server-sent events. It knows
//! HTTP and JSON, not candle: generation goes through [`crate::engine::Backend`].

mod chat;
mod completions;
pub mod error;
mod fields;
mod generation;
mod health;
mod models;
pub mod request;
pub mod response_store;
mod responses;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::engine::{LoadError, ModelRegistry, ServedModel};
use crate::routing::TraditionLayers;
use error::ApiError;

pub struct AppState {
    /// The catalog's models, loaded on first use.
    pub models: Arc<ModelRegistry>,
    /// Answers /v1 requests that name no model.
    pub default_model: String,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Unix time the server started (reported as the models' `created`).
    pub started: u64,
    /// The `provider` of /v2 responses.
    pub provider: String,
    pub traditions: TraditionLayers,
    /// Responses kept for `GET /v1/responses/{id}` and `previous_response_id`.
    pub responses: response_store::ResponseStore,
}

impl AppState {
    /// The model a request names (the default one when it names none), loaded if need be.
    pub async fn resolve(&self, requested: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
        let id = match requested {
            Some(id) if !id.is_empty() => id,
            _ => self.default_model.as_str(),
        };
        self.models.get(id).await.map_err(|e| match e {
            LoadError::Unknown(_) => ApiError::model_not_found(
                id,
                " or you do not have access to it (see GET /v1/models)",
            ),
            LoadError::Failed { .. } => ApiError::unavailable(e.to_string()),
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.body_limit;
    Router::new()
        .route("/v1/chat/completions", post(chat::completions_v1))
        .route("/v2/chat/completions", post(chat::completions_v2))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        // The prefixes of the Gloo AI API, so its clients move by changing the host alone.
        .route("/ai/v1/chat/completions", post(chat::completions_v1))
        .route("/ai/v2/chat/completions", post(chat::completions_v2))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::one))
        .route("/health", get(health::health))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn unknown_route(uri: Uri) -> impl IntoResponse {
    ApiError::not_found_route(uri.path())
}

async fn method_not_allowed(uri: Uri) -> impl IntoResponse {
    let mut e = ApiError::not_found_route(uri.path());
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e.message = format!("Method not allowed for {}", uri.path());
    e.code = Some("method_not_allowed");
    e
}
