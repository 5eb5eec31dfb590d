//! The one error type of the engine, with the kind every front end reads: a CLI's exit
//! code and a server's HTTP status both come from [`EngineError::kind`].

use thiserror::Error;
use w2s_core::{ConfigError, ErrorKind, Role, SearchError};
use w2s_llama::LlamaError;
use w2s_remote::RemoteError;

/// Why settings could not be checked, models could not be built, or a search failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Settings that cannot work; the message names the setting and the fix.
    #[error("{0}")]
    Input(String),
    /// A setting out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A local model could not be loaded or used.
    #[error("{role} model: {source}")]
    Local {
        /// The role whose model failed.
        role: Role,
        /// What llama.cpp's backend said.
        source: LlamaError,
    },
    /// A remote model could not be set up or used.
    #[error("{role} model: {source}")]
    Remote {
        /// The role whose model failed.
        role: Role,
        /// What the remote backend said.
        source: RemoteError,
    },
    /// A search failed.
    #[error(transparent)]
    Search(#[from] SearchError),
}

impl EngineError {
    /// Whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Input(_) | EngineError::Config(_) => ErrorKind::Input,
            EngineError::Local { source, .. } => source.kind(),
            EngineError::Remote { source, .. } => source.kind(),
            EngineError::Search(e) => e.kind(),
        }
    }

    /// Bad input with this message.
    pub fn input(message: impl Into<String>) -> Self {
        EngineError::Input(message.into())
    }
}
