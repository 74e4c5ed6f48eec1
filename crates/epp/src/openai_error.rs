//! OpenAI-style error responses of the proxy and the sidecar.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::frontend::route::RouteError;

/// An error the proxy answers with, in the OpenAI `{"error": {...}}` shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ProxyError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn no_endpoint() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_endpoint",
            "no healthy model server can serve this request",
        )
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }

    /// The JSON body (also used as the final SSE event when a stream breaks).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.code, "code": self.status.as_u16()}})
    }
}

impl From<RouteError> for ProxyError {
    fn from(e: RouteError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        ProxyError::new(status, e.error_type(), e.to_string())
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
