//! Errors of the search and of its settings.

use thiserror::Error;

/// Whose fault a failure is: what a front end needs to pick an exit code or an HTTP
/// status without looking inside the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The user's input or settings cannot work (a missing file, a prompt too long for a
    /// model, a template an engine cannot serve): fix the input.
    Input,
    /// A remote engine failed or could not be reached (after retries).
    Remote,
    /// A failure inside w2s or a local model while running.
    Internal,
    /// The caller cancelled the work.
    Cancelled,
}

/// An error from a model backend (local or remote), with its [`ErrorKind`]. Any error
/// type converts into it; backends implement `From` for their own error types so that
/// the kind is decided once, where the error is made.
#[derive(Debug)]
pub struct BackendError {
    kind: ErrorKind,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl BackendError {
    /// An error of the given kind.
    pub fn new(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        BackendError {
            kind,
            source: source.into(),
        }
    }
    /// An internal failure with this message.
    pub fn internal(message: impl Into<String>) -> Self {
        BackendError::new(ErrorKind::Internal, message.into())
    }
    /// Whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The backend's own error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
    /// The backend's own error, by value (e.g. to downcast it in a test).
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.source
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl From<&str> for BackendError {
    fn from(message: &str) -> Self {
        BackendError::internal(message)
    }
}

impl From<String> for BackendError {
    fn from(message: String) -> Self {
        BackendError::internal(message)
    }
}

impl From<ConfigError> for BackendError {
    fn from(e: ConfigError) -> Self {
        BackendError::new(ErrorKind::Input, e)
    }
}

/// A setting that is out of range. Each message names the setting and what it accepts.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count that must be at least 1 was 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// W*K too large.
    #[error("W*K (or N) = {rows} rows is more than the {max} a search may keep; lower W, K or N")]
    TooManyRows {
        /// Rows asked for.
        rows: usize,
        /// The most a search may keep.
        max: usize,
    },
    /// Temperature negative or not a number.
    #[error("temperature must be a number >= 0 (0 = greedy), got {0}")]
    Temperature(f32),
    /// top-p out of range.
    #[error("top-p must be in (0, 1], got {0}")]
    TopP(f32),
    /// beta not finite.
    #[error("beta must be a finite number, got {0}")]
    Beta(f64),
    /// An empty stop string would end every response at once.
    #[error("a stop string must not be empty")]
    EmptyStop,
    /// A method string that does not parse.
    #[error("unknown search method '{0}': use cbs:WxKxL (e.g. cbs:4x4x5), bon:N (e.g. bon:16) or sample")]
    MethodSyntax(String),
    /// A template without `{{prompt}}`.
    #[error("template '{0}' has no {{prompt}} placeholder; add {{prompt}} where the prompt goes")]
    TemplateWithoutPrompt(String),
    /// An empty prompt.
    #[error("the prompt is empty; give the text the response should follow")]
    EmptyPrompt,
    /// Earlier chat turns for a template that takes a single user message.
    #[error("template '{0}' takes a single user message: earlier turns need a chat template with {{prompt}} in its user part, e.g. 'chat:{{prompt}}'")]
    SingleTurnTemplate(String),
    /// Adaptive chunk ends that cannot work with these settings.
    #[error("adaptive chunk ends: {0}")]
    ChunkEnd(String),
    /// Guide weights that are not finite, or all zero.
    #[error("guide weights: {0}")]
    Weights(String),
}

/// Which model a backend error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The large model that samples.
    Strong,
    /// The small tuned model.
    Tuned,
    /// The small untuned model.
    Untuned,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Strong => "strong",
            Role::Tuned => "tuned",
            Role::Untuned => "untuned",
        })
    }
}

/// Why a search failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SearchError {
    /// Bad settings or input.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A model backend failed.
    #[error("{role} model: {source}")]
    Backend {
        /// The model that failed.
        role: Role,
        /// What it said.
        source: BackendError,
    },
    /// A backend broke the trait's contract (wrong number of results, no progress).
    #[error("{role} model backend misbehaved: {message}")]
    Contract {
        /// The model whose backend misbehaved.
        role: Role,
        /// What was wrong.
        message: String,
    },
    /// A guide other than the tuned / untuned pair failed (see [`crate::Guide`]).
    #[error("guide: {source}")]
    Guide {
        /// What it said.
        source: BackendError,
    },
    /// A guide broke the trait's contract (wrong number of values, a NaN value).
    #[error("guide misbehaved: {0}")]
    GuideContract(String),
    /// The caller asked the search to stop.
    #[error("the search was cancelled")]
    Cancelled,
    /// A driver fed a [`crate::SearchState`] something it had not asked for.
    #[error("the search was driven out of turn: {0}")]
    OutOfTurn(String),
}

impl SearchError {
    /// Whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SearchError::Config(_) => ErrorKind::Input,
            SearchError::Backend { source, .. } => source.kind(),
            SearchError::Contract { .. } => ErrorKind::Internal,
            SearchError::Guide { source } => source.kind(),
            SearchError::GuideContract(_) => ErrorKind::Internal,
            SearchError::Cancelled => ErrorKind::Cancelled,
            SearchError::OutOfTurn(_) => ErrorKind::Internal,
        }
    }
}
