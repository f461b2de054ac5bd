//! GET /health: whether each loaded model's engine is alive, and how busy it is.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

pub async fn health(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let loaded = state.models.loaded();
    let models: Vec<Value> = loaded
        .iter()
        .map(|m| {
            let h = m.backend.health();
            json!({ "id": m.entry.id, "state": if h.alive { "ok" } else { "stopped" }, "engine": h })
        })
        .collect();
    // A model whose engine stopped is reloaded on its next request, but until then the
    // server is not healthy.
    let ok = loaded.iter().all(|m| m.backend.health().alive);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "status": if ok { "ok" } else { "error" }, "models": models })),
    )
}
