//! API errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`.
//! Messages are short, never echo large input, and never name files or addresses.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::openai::{ErrorDetail, ErrorResponse};

/// Longest message an error body carries (the whole body stays under 4 KB).
const MAX_MESSAGE: usize = 1024;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What was wrong and what to do.
    pub message: String,
    /// OpenAI error type, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A short machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 for a bad field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: (!param.is_empty()).then(|| param.to_string()),
            code: Some("invalid_value"),
            retry_after: None,
        }
    }

    /// Any status with a type and code.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: Some(code),
            retry_after: None,
        }
    }

    /// Adds a Retry-After.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The error's type for metrics.
    pub fn metric_kind(&self) -> &'static str {
        self.code.unwrap_or(self.kind)
    }

    /// The body (its `Display` is the JSON text).
    pub fn body(&self) -> ErrorResponse {
        ErrorResponse {
            error: ErrorDetail {
                code: self.code,
                message: truncate(&self.message, MAX_MESSAGE),
                param: self.param.as_deref().map(|p| truncate(p, 64)),
                kind: self.kind,
            },
        }
    }
}

/// Cuts `s` to at most `max` bytes at a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_small_and_cut_at_char_boundaries() {
        let e = ApiError::invalid("prompt", "é".repeat(5000));
        let body = e.body().to_string();
        assert!(body.len() < 4096, "{}", body.len());
        assert_eq!(truncate("aé", 2), "a...");
    }
}
