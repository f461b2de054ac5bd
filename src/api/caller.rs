//! Who sent a request, for sharing the queue fairly (src/engine/admission.rs): the API key
//! when keys are on (so one key's many connections count as one client), else the
//! connection it came on (a client's pooled connections then count apart, which still
//! keeps one connection's backlog from starving the others).

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::AppState;
use crate::engine::{ClientId, ANONYMOUS};

/// The client a request counts for.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub ClientId);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        if let Some(owner) = state.api_keys.owner(&parts.headers) {
            ("key", owner).hash(&mut hasher);
        } else if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            ("connection", peer).hash(&mut hasher);
        } else {
            return Ok(Self(ANONYMOUS));
        }
        // 0 is the anonymous client; a hash landing there moves over.
        Ok(Self(hasher.finish().max(1)))
    }
}
