//! The chat page at `/`: plain HTML, CSS and JavaScript from `ui/`, compiled into the binary
//! so it works offline, with no build step and nothing fetched from elsewhere. It talks to
//! the same API any client uses (`/v1/models`, `/v2/chat/completions`).
//!
//! Every file goes out with a Content-Security-Policy that allows only this server's own
//! scripts, styles and connections (no inline script or style, no remote source), so even a
//! rendering mistake in `ui/app.js` could not run model text as script.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");
const ICON: &str = include_str!("../../ui/icon.svg");

/// What the page may load: its own files and API only (`data:` images need no network), no
/// plugins, no `<base>` to redirect its relative URLs, and no framing by other sites.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; object-src 'none'; \
                       base-uri 'none'; frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { file("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/icon.svg",
            get(|| async { file("image/svg+xml", ICON) }),
        )
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ),
        // A new binary may bring a new page: revalidate rather than run a stale script
        // against a newer API.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}
