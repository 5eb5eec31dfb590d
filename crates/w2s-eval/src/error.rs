//! The harness's error type, with the kind every front end reads.

use thiserror::Error;
use w2s_core::ErrorKind;
use w2s_engine::EngineError;

/// Why an evaluation or a report failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// Bad input (flags, files, an output directory holding another run); the message
    /// says what to do.
    #[error("{0}")]
    Input(String),
    /// A failure while running (a write that failed, a gold reward that failed).
    #[error("{0}")]
    Internal(String),
    /// Models could not be built, or a search failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl EvalError {
    /// Whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EvalError::Input(_) => ErrorKind::Input,
            EvalError::Internal(_) => ErrorKind::Internal,
            EvalError::Engine(e) => e.kind(),
        }
    }
}

impl From<w2s_core::ConfigError> for EvalError {
    fn from(e: w2s_core::ConfigError) -> Self {
        EvalError::Input(e.to_string())
    }
}

impl From<w2s_llama::LlamaError> for EvalError {
    fn from(e: w2s_llama::LlamaError) -> Self {
        match e.kind() {
            ErrorKind::Input => EvalError::Input(e.to_string()),
            _ => EvalError::Internal(e.to_string()),
        }
    }
}

/// Bad input with this message.
pub(crate) fn usage(message: impl Into<String>) -> EvalError {
    EvalError::Input(message.into())
}
