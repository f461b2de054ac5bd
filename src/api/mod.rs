//! The HTTP API: an axum router speaking OpenAI's JSON and server-sent events. It knows
//! HTTP and JSON, not candle: generation goes through [`crate::engine::Backend`].

mod answer;
pub mod auth;
mod caller;
mod chat;
mod completions;
pub mod cpu_work;
mod embeddings;
pub mod error;
pub mod fields;
mod generation;
pub mod guarded;
mod health;
mod layers;
mod messages;
mod metrics;
mod models;
pub mod request;
pub mod response_store;
mod responses;
mod stream;
mod tokenize;
mod ui;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::engine::{LoadError, ModelRegistry, ServedModel};
use crate::routing::TraditionLayers;
use error::ApiError;

pub struct AppState {
    /// The catalog's models, loaded on first use.
    pub models: Arc<ModelRegistry>,
    /// Answers /v1 requests that name no model.
    pub default_model: String,
    /// Where the models run (`--device`), reported by /health.
    pub device: crate::device::DeviceChoice,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Unix time the server started (reported as the models' `created`).
    pub started: u64,
    /// The `provider` of /v2 responses.
    pub provider: String,
    /// Auto routing considers only the models run here (`--auto-routing-local-only`).
    pub auto_routing_local_only: bool,
    pub traditions: TraditionLayers,
    /// Estimates the tier of /v2's analysed requests (`--router-model`).
    pub router: Arc<crate::routing::Router>,
    /// Responses kept for `GET /v1/responses/{id}` and `previous_response_id`.
    pub responses: response_store::ResponseStore,
    /// Keys for /v1, /v2 and /ai (`--api-key`); empty: open.
    pub api_keys: auth::Keys,
    /// Key for /metrics (`--metrics-key`); empty: open.
    pub metrics_key: auth::Keys,
    /// Browser origins CORS allows (`*` for any); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// How long one request may generate (`--request-timeout`).
    pub request_timeout: Option<std::time::Duration>,
    /// Cancelled when the shutdown grace is over: streams still running end then.
    pub end_streams: tokio_util::sync::CancellationToken,
    /// Faults tests inject (src/faults.rs); None outside tests.
    pub faults: Option<Arc<crate::faults::Faults>>,
    /// Where CPU-heavy request work runs (src/api/cpu_work.rs).
    pub cpu_work: cpu_work::CpuWork,
    /// Serve the chat page at `/` (off with `--no-ui`).
    pub ui: bool,
    /// The safety guard and where it judges (`--guard`); None: off.
    pub safety: Option<guarded::GuardSettings>,
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
    // Everything that generates or describes models needs an API key when one is set.
    let keyed = Router::new()
        .route("/v1/chat/completions", post(chat::completions_v1))
        .route("/v2/chat/completions", post(chat::completions_v2))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        // The prefixes of the Gloo AI API, so its clients move by changing the host alone.
        .route("/ai/v1/chat/completions", post(chat::completions_v1))
        .route("/ai/v2/chat/completions", post(chat::completions_v2))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::one))
        .route_layer(state.api_keys.clone().layer());
    // Anthropic's Messages API: its 401 in Anthropic's shape too.
    let anthropic = Router::new()
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route_layer(
            state
                .api_keys
                .clone()
                .layer_shaped(error::ApiError::into_anthropic),
        );
    let scraped = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route_layer(state.metrics_key.clone().layer());
    // The chat page is static and holds no secret, so it needs no key: it asks for one and
    // sends it with each API call (src/api/ui.rs).
    let page = if state.ui {
        ui::routes()
    } else {
        Router::new()
    };
    let app = Router::new()
        .merge(page)
        .merge(keyed)
        .merge(anthropic)
        .merge(scraped)
        .route("/health", get(health::health))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit));
    layers::around(app, &state.cors_origins).with_state(state)
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
