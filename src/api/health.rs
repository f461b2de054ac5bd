//! GET /health: `ok` when every loaded model's engine is alive, `loading` while the first
//! model is still loading, `error` when an engine has stopped, `degraded` (still 200: it
//! serves) when an engine caught a fault in the last few minutes; each model with its
//! state, and the device they run on; each upstream model with its replicas' state, which
//! never changes the status; the safety guard's state (src/safety/guard.rs) when it is on.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

pub async fn health(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let loaded = state.models.loaded();
    let loading = state.models.loading();
    let mut models: Vec<Value> = loaded
        .iter()
        .map(|m| {
            let h = m.backend.health();
            let state = match (h.alive, h.recent_fault) {
                (false, _) => "stopped",
                (true, true) => "degraded",
                (true, false) => "ok",
            };
            json!({ "id": m.entry.id, "state": state, "engine": h })
        })
        .collect();
    models.extend(
        loading
            .iter()
            .filter(|id| !loaded.iter().any(|m| &m.entry.id == *id))
            .map(|id| json!({ "id": id, "state": "loading" })),
    );
    // A model whose engine stopped is reloaded on its next request, but until then the
    // server is not healthy.
    let (status, code) = if !loaded.iter().all(|m| m.backend.health().alive) {
        ("error", StatusCode::SERVICE_UNAVAILABLE)
    } else if loaded.is_empty() && !loading.is_empty() {
        ("loading", StatusCode::SERVICE_UNAVAILABLE)
    } else if loaded.iter().any(|m| m.backend.health().recent_fault) {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    };
    let device = state.device.to_string();
    // Upstreams are reported, never counted against the status: a replica that is down
    // fails only the requests for its model (502/503), not this server.
    let upstreams: Vec<Value> = state
        .models
        .upstreams()
        .iter()
        .map(|m| {
            let replicas = m.backend.health().replicas;
            let healthy = replicas.iter().filter(|r| r.healthy).count();
            let state = match healthy {
                0 => "down",
                n if n < replicas.len() => "degraded",
                _ => "ok",
            };
            json!({ "id": m.entry.id, "state": state, "replicas": replicas })
        })
        .collect();
    let mut body = json!({
        "status": status,
        "device": device,
        "models": models,
        "upstreams": upstreams,
    });
    // The guard is reported, never counted against the status: a guard that cannot judge
    // fails requests closed or lets them through, as the safety policy says.
    if let Some(safety) = &state.safety {
        body["guard"] = json!(safety.guard.state());
    }
    (code, Json(body))
}
