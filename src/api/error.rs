//! Every error the API returns, in OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status; on the
//! Anthropic Messages API (/v1/messages), the same errors in Anthropic's shape:
//! `{"type": "error", "error": {"type", "message"}}` ([`ApiError::into_anthropic`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 for a request that is malformed or asks for something invalid.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn model_not_found(model: &str, detail: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model '{model}' does not exist{detail}."),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "The request body is larger than this server's limit of {limit} bytes."
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 408 for a request body that stopped arriving (`--header-timeout` with no bytes).
    pub fn body_timeout() -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            message: "The request body stopped arriving before it was complete.".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_timeout"),
        }
    }

    pub fn busy(message: String) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message,
            kind: "server_busy",
            param: None,
            code: Some("queue_full"),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("internal_error"),
        }
    }

    /// A model that exists in the catalog but cannot be served now (its files could not be
    /// fetched, or it failed to load).
    pub fn unavailable(message: String) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
            kind: "server_error",
            param: Some("model".into()),
            code: Some("model_unavailable"),
        }
    }

    /// An upstream engine's refusal or failure before anything was streamed: 502, 503 or
    /// 504 when the upstream failed (`server_error`), its own 4xx when it rejected the
    /// request itself.
    pub fn upstream(status: u16, code: &'static str, message: String) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        Self {
            status,
            message,
            kind: if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            },
            param: None,
            code: Some(code),
        }
    }

    pub fn not_found_route(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("Unknown endpoint: {path}"),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            message: self.message.clone(),
            kind: self.kind,
            param: self.param.clone(),
            code: self.code,
        }
    }
}

impl ApiError {
    /// Anthropic's error type for this error's status (its documented status codes: 400,
    /// 401, 403, 404, 413, 429, 500, 529 overloaded).
    pub fn anthropic_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The body of this error in Anthropic's shape (also an `error` event of a stream).
    pub fn anthropic_body(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "error",
            "error": { "type": self.anthropic_type(), "message": self.message },
        })
    }

    /// This error as the Anthropic Messages API returns it, with the same status.
    pub fn into_anthropic(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(self.anthropic_body())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response =
            (status, Json(serde_json::json!({ "error": self.body() }))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
