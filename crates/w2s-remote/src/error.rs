//! Errors of the remote backend. Each message says what went wrong and what to do.

use std::time::Duration;

use thiserror::Error;

/// Why a remote model call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// An endpoint setting that cannot work.
    #[error("remote endpoint: {0}")]
    Config(String),
    /// The API key's environment variable is not set.
    #[error("the API key variable {0} is not set (or not valid UTF-8): export {0}=... before running, or remove api_key_env for a server that needs no key")]
    MissingApiKey(String),
    /// The backend was called from inside an async runtime.
    #[error("the remote backend blocks on its own runtime and must not be called from inside an async runtime; call it from a blocking thread (e.g. tokio::task::spawn_blocking)")]
    InsideAsync,
    /// Could not build the HTTP client or runtime.
    #[error("cannot start the HTTP client: {0}")]
    Init(String),
    /// The engine does not serve the configured model.
    #[error("{url} does not serve model '{model}'; it serves: {available}. Fix the name after '#' (or `model = ...`)")]
    UnknownModel {
        /// The server.
        url: String,
        /// The name asked for.
        model: String,
        /// What it serves.
        available: String,
    },
    /// The engine refused the request (4xx other than 429).
    #[error("{url} rejected the request (HTTP {status}): {message}")]
    Rejected {
        /// The endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The engine's own message.
        message: String,
    },
    /// The engine said the prompt plus requested tokens exceed its context.
    #[error("{url} says the request is too long for the model's context (HTTP {status}): {message}. Lower max_new_tokens, shorten the prompt, or serve the model with a longer context (vLLM: --max-model-len; llama-cpp-python: --n_ctx)")]
    TooLong {
        /// The endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The engine's own message.
        message: String,
    },
    /// Retryable failures (429, 5xx, timeouts, broken connections) went on past the
    /// bounded number of attempts.
    #[error("{url}: gave up after {attempts} attempts in {:.1} s; last failure: {last}. Check that the server is up and not overloaded", elapsed.as_secs_f64())]
    GaveUp {
        /// The endpoint.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
    /// The server asked to wait longer than this backend waits.
    #[error("{url} asked to retry after {} s (Retry-After), longer than the {} s this backend waits at most; try again later or raise max_backoff_s", wait.as_secs(), max.as_secs())]
    RetryTooLate {
        /// The endpoint.
        url: String,
        /// What the server asked for.
        wait: Duration,
        /// Our bound.
        max: Duration,
    },
    /// A response that is not the JSON the API defines, or misses a field.
    #[error("{url} sent a malformed response ({what}); is it an OpenAI-compatible /v1 endpoint? Start of the body: {body}")]
    Malformed {
        /// The endpoint.
        url: String,
        /// What was wrong.
        what: String,
        /// The beginning of the body.
        body: String,
    },
    /// The engine returned no log-probabilities.
    #[error("{url} returned no log-probabilities for the scored text; start the engine with log-probabilities enabled (llama-cpp-python: --logits_all true; vLLM: --max-logprobs 1 or more, the default 20 is fine, and for score_api = \"prompt-logprobs\" nothing else; hosted APIs: use a model whose completions endpoint supports echo with logprobs)")]
    NoLogprobs {
        /// The endpoint.
        url: String,
    },
    /// An ended row cannot be scored without knowing the model's end-of-sequence text.
    #[error("cannot score the end of a response on {url}: set eos_text to the scoring model's end token as text (e.g. \"<|im_end|>\" for ChatML models such as SmolLM2 and Qwen, \"<end_of_turn>\" for Gemma chat, \"<eos>\" for Gemma plain text, \"</s>\" for Llama-2/Mistral), or eos_text = \"\" to leave the end-of-sequence term out on purpose")]
    NoEosText {
        /// The endpoint.
        url: String,
    },
    /// The engine's echoed tokens cannot be matched with the text.
    #[error("{url}: cannot find the response among the engine's echoed tokens: {reason}")]
    Misaligned {
        /// The endpoint.
        url: String,
        /// What did not match.
        reason: String,
    },
    /// A template or API choice the remote engine cannot serve.
    #[error("{0}")]
    Unsupported(String),
    /// Called out of order (e.g. extend before begin, a row that does not exist).
    #[error("remote backend used wrongly: {0}")]
    Usage(String),
}

impl RemoteError {
    /// Whose fault it is: the input's for settings the user must fix (an endpoint that
    /// cannot work, a missing key, a model the engine does not serve, a template or API it
    /// cannot serve, a request too long for its context); the engine's for the rest.
    pub fn kind(&self) -> w2s_core::ErrorKind {
        use w2s_core::ErrorKind;
        match self {
            RemoteError::Config(_)
            | RemoteError::MissingApiKey(_)
            | RemoteError::UnknownModel { .. }
            | RemoteError::Unsupported(_)
            | RemoteError::NoEosText { .. }
            | RemoteError::TooLong { .. } => ErrorKind::Input,
            RemoteError::InsideAsync | RemoteError::Init(_) | RemoteError::Usage(_) => {
                ErrorKind::Internal
            }
            RemoteError::Rejected { .. }
            | RemoteError::GaveUp { .. }
            | RemoteError::RetryTooLate { .. }
            | RemoteError::Malformed { .. }
            | RemoteError::NoLogprobs { .. }
            | RemoteError::Misaligned { .. } => ErrorKind::Remote,
        }
    }
}

impl From<RemoteError> for w2s_core::BackendError {
    fn from(e: RemoteError) -> Self {
        w2s_core::BackendError::new(e.kind(), e)
    }
}
