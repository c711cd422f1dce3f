//! The API error: an HTTP status plus Fly's error body `{"error": "...", "status": "..."}`
//! (reference §1, §8.19). Owns only the rendering of errors, not when they happen.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to an API client with Fly's body shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Fly's optional machine-readable `status` field (`insufficient_capacity`, `name_taken`).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            code: None,
        }
    }
    /// Attach Fly's `status` code string.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    pub fn precondition(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PRECONDITION_FAILED, message)
    }
    /// Fly's capacity failure (reference §2.3 create, §5).
    pub fn capacity(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).with_code("insufficient_capacity")
    }
    pub fn app_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "app not found")
    }
    pub fn machine_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "machine not found")
    }
    pub fn volume_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "volume not found")
    }
    /// The journal could not be written: the mutation is not durable, so it is not confirmed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(code) = self.code {
            body["status"] = code.into();
        }
        (self.status, axum::Json(body)).into_response()
    }
}
