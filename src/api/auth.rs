//! Bearer-key access control, as a tower-http `ValidateRequestHeaderLayer`: the keys are
//! compared in constant time (`subtle`), so response timing says nothing about how much of
//! a guessed key was right.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use subtle::ConstantTimeEq;
use tower_http::validate_request::ValidateRequestHeaderLayer;

use super::error::ApiError;

/// Who presented a key: a digest of the key (the key itself is never kept), used to tie
/// stored responses to the key that made them and to share the queue fairly between keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner([u8; 32]);

impl Owner {
    pub fn of(key: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(key).into())
    }
}

/// The key a request presents, if any: `Authorization: Bearer KEY`, or `x-api-key: KEY`
/// (the header Anthropic's clients send).
fn presented_key(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()))
        .map(<[u8]>::trim_ascii)
}

/// The keys that open a group of routes. Empty: the routes are open.
#[derive(Clone, Default)]
pub struct Keys(Arc<Vec<Vec<u8>>>);

impl Keys {
    pub fn new(keys: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(keys.into_iter().map(String::into_bytes).collect()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is one of the keys. Every key is compared, whatever matched, and
    /// each comparison takes the same time for keys of the same length.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.as_slice().ct_eq(presented)
            })
            .into()
    }

    /// The owner a request acts for: its key's digest when keys are on (the key layer has
    /// already checked it), None when they are off.
    pub fn owner(&self, headers: &axum::http::HeaderMap) -> Option<Owner> {
        if self.is_empty() {
            return None;
        }
        presented_key(headers).map(Owner::of)
    }

    /// Why the request may not pass (the message for the client), or `None` when no key is
    /// configured or it carries a right one.
    pub fn rejection(&self, request: &Request<Body>) -> Option<&'static str> {
        if self.is_empty() {
            return None;
        }
        match presented_key(request.headers()) {
            Some(key) if self.accepts(key) => None,
            Some(_) => Some(
                "Incorrect API key provided. Send one of this server's keys as \
                 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
            ),
            None => Some(
                "You didn't provide an API key. Send it in the Authorization header as \
                 'Authorization: Bearer KEY', or as 'x-api-key: KEY'.",
            ),
        }
    }

    /// A layer that answers 401 to requests without one of these keys.
    #[allow(clippy::result_large_err)] // the validator's signature is tower-http's
    pub fn layer(
        self,
    ) -> ValidateRequestHeaderLayer<
        impl FnMut(&mut Request<Body>) -> Result<(), Response<Body>> + Clone,
    > {
        self.layer_shaped(IntoResponse::into_response)
    }

    /// [`Keys::layer`] with the 401 in another API's error shape (Anthropic's, on
    /// /v1/messages).
    #[allow(clippy::result_large_err)] // the validator's signature is tower-http's
    pub fn layer_shaped(
        self,
        shape: fn(ApiError) -> Response<Body>,
    ) -> ValidateRequestHeaderLayer<
        impl FnMut(&mut Request<Body>) -> Result<(), Response<Body>> + Clone,
    > {
        ValidateRequestHeaderLayer::custom(move |request: &mut Request<Body>| {
            match self.rejection(request) {
                None => Ok(()),
                Some(message) => Err(unauthorized(message, shape)),
            }
        })
    }
}

fn unauthorized(message: &str, shape: fn(ApiError) -> Response<Body>) -> Response<Body> {
    let error = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_api_key"),
    };
    let mut response = shape(error);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let keys = Keys::new(["alpha".to_string(), "beta-key".to_string()]);
        assert!(keys.accepts(b"alpha"));
        assert!(keys.accepts(b"beta-key"));
        assert!(!keys.accepts(b"alph"));
        assert!(!keys.accepts(b"alphaa"));
        assert!(!keys.accepts(b""));
    }
}
