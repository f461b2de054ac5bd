//! The HTTP API: an axum router speaking OpenAI's JSON and server-sent events. It knows
//! HTTP and JSON, not candle: generation goes through [`crate::engine::Backend`].

mod chat;
pub mod error;
mod health;
mod models;
pub mod request;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::catalog::{Catalog, ModelEntry};
use crate::engine::Backend;
use crate::model::ModelFrontend;
use error::ApiError;

/// A model this server has loaded: what the request path needs, and its engine.
pub struct ServedModel {
    pub entry: ModelEntry,
    pub frontend: Arc<ModelFrontend>,
    pub backend: Arc<dyn Backend>,
}

pub struct AppState {
    pub catalog: Catalog,
    pub served: Vec<ServedModel>,
    /// Answers requests that name no model.
    pub default_model: String,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Unix time the server started (reported as the models' `created`).
    pub started: u64,
}

impl AppState {
    /// The served model a request names, or the default one.
    pub fn resolve(&self, requested: Option<&str>) -> Result<&ServedModel, ApiError> {
        let id = match requested {
            Some(id) if !id.is_empty() => id,
            _ => self.default_model.as_str(),
        };
        if let Some(served) = self.served.iter().find(|m| m.entry.id == id) {
            return Ok(served);
        }
        let detail = if self.catalog.get(id).is_some() {
            let loaded: Vec<&str> = self.served.iter().map(|m| m.entry.id.as_str()).collect();
            format!(
                " on this server: it is in the catalog but not loaded (loaded: {})",
                loaded.join(", ")
            )
        } else {
            " or you do not have access to it (see GET /v1/models)".to_string()
        };
        Err(ApiError::model_not_found(id, &detail))
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.body_limit;
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
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
