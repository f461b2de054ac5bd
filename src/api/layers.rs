//! The layers every route shares, innermost first: a handler panic turned into an
//! OpenAI-shaped 500, request counting for /metrics, CORS, request-id propagation, the
//! tracing span, and the request id itself (outermost, so the span and the response both
//! carry it).

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn around<S: Clone + Send + Sync + 'static>(
    app: Router<S>,
    cors_origins: &[String],
) -> Router<S> {
    let mut app = app
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(count_request));
    if let Some(cors) = cors(cors_origins) {
        app = app.layer(cors);
    }
    app.layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        id,
                        method = %request.method(),
                        path = request.uri().path(),
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        // A client's own x-request-id is kept; otherwise wick makes one.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// CORS for the configured origins; `None` (no CORS headers, so browsers refuse
/// cross-origin calls) when there are none.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| match HeaderValue::from_str(o.trim_end_matches('/')) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = %o, "ignoring a --cors-origin that is not a valid origin");
                    None
                }
            })
            .collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(Any)
            .expose_headers([REQUEST_ID])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Count each answered request by its route (the pattern, not the raw path, so ids in
/// paths do not explode the label set) and status.
async fn count_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let response = next.run(request).await;
    crate::metrics::record_request(&route, response.status().as_u16());
    response
}

/// What a client gets when its handler panicked: a 500 in OpenAI's shape, not a dropped
/// connection. (A panic inside a stream, after its headers went out, ends the stream.)
fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = crate::faults::panic_message(&*payload);
    tracing::error!(panic = message, "a request handler panicked");
    axum::response::IntoResponse::into_response(crate::api::error::ApiError::internal(
        "The server had an error while processing your request.",
    ))
}
