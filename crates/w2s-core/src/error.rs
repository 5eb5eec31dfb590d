//! Errors of the search and of its settings.

use thiserror::Error;

/// An error from a model backend (local or remote), boxed so any backend can plug in.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A setting that is out of range. Each message names the setting and what it accepts.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count that must be at least 1 was 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// W*K too large.
    #[error("W*K (or N) = {0} rows is more than the {max} a search may keep; lower W, K or N", max = crate::config::MAX_ROWS)]
    TooManyRows(usize),
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
    /// The caller asked the search to stop.
    #[error("the search was cancelled")]
    Cancelled,
}
