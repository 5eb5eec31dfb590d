//! Request validation: a raw body becomes a checked request, or a 400/413 that says
//! which field is wrong. Nothing here touches a model.
//!
//! A body becomes a typed struct of its endpoint (see `body`), whose fields are read in a
//! fixed order so that a body with several faults always gets the same error; keys the
//! struct does not know are rejected by name, and so are standard options the search
//! cannot honour. Its fields then pass through the steps in `check`, each turning part of
//! the body into checked values.

mod body;
mod check;
mod plain;

use w2s_core::{ChatTurn, SearchConfig};

use self::body::{stream_options, SearchBody};
use self::check::{Search, Settings};
pub(crate) use self::plain::PLAIN_MODELS;
pub use self::plain::{model_of, parse_plain, PlainRequest, MAX_PLAIN_N};
use crate::error::ApiError;
pub use crate::fields::MAX_PROMPTS;

/// Which endpoint a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/chat/completions`
    Chat,
}

/// Server-side defaults and caps.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Defaults (the server's configured search).
    pub defaults: SearchConfig,
    /// Largest W, K and N.
    pub max_width: usize,
    /// Largest K (and N for Best-of-N).
    pub max_successors: usize,
    /// Largest L.
    pub max_chunk: usize,
    /// Largest W*K.
    pub max_rows_per_request: usize,
    /// Largest max_tokens.
    pub max_tokens: usize,
    /// Largest prompt, in bytes.
    pub max_prompt_bytes: usize,
}

/// A checked request.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRequest {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The model name the client asked for.
    pub model: String,
    /// The prompts, one search each (for chat: the last user message, one).
    pub prompts: Vec<String>,
    /// Earlier chat turns, rendered before the prompt through each model's chat template.
    pub history: Vec<ChatTurn>,
    /// The search to run.
    pub config: SearchConfig,
    /// Whether the seed came from the client.
    pub seeded: bool,
    /// Stream server-sent events.
    pub stream: bool,
    /// Choices to return (the best n finished beams).
    pub n: usize,
    /// Return every final beam with its guide value.
    pub return_beams: bool,
    /// Return the strong model's log-probabilities of each returned token.
    pub logprobs: bool,
    /// Stream a last chunk with the usage (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Fields the server does not know, ignored (reported in `x-w2s-ignored-fields`).
    pub ignored: Vec<String>,
}

impl CheckedRequest {
    /// The admission cost: W*K rows times max tokens, for every prompt.
    pub fn cost(&self) -> u64 {
        (self.config.method().rows() as u64)
            .saturating_mul(self.config.max_new_tokens() as u64)
            .saturating_mul(self.prompts.len() as u64)
    }
}

/// Parses and checks a body. `seed` is used when the client gives none.
pub fn parse(
    body: &[u8],
    endpoint: Endpoint,
    policy: &Policy,
    seed: u64,
) -> Result<CheckedRequest, ApiError> {
    let SearchBody {
        prompt,
        max_tokens,
        echo,
        best_of,
        suffix,
        top_logprobs,
        shared: s,
        unknown: mut ignored,
    } = SearchBody::read(body, endpoint)?;
    let model = check::model(&s.model)?;
    let (history, prompts) = check::prompts(endpoint, prompt, &mut ignored, policy)?;
    check::unsupported_options(&echo, &suffix, &s)?;
    s.user.string("user")?;
    let include_usage = stream_options(&s.stream_options, &mut ignored)?;
    let logprobs = check::logprobs_wanted(endpoint, &s.logprobs, &top_logprobs)?;
    let settings = Settings::read(max_tokens, &s, policy)?;
    let search = Search::read(s.search, &best_of, policy)?;
    check::choices(&settings, &search, logprobs, prompts.len() > 1)?;
    let (seeded, stream, n) = (settings.client_seed.is_some(), settings.stream, settings.n);
    let config = settings.into_config(&search, seed, &policy.defaults)?;
    Ok(CheckedRequest {
        endpoint,
        model,
        prompts,
        history,
        config,
        seeded,
        stream,
        n,
        return_beams: search.return_beams,
        logprobs,
        include_usage,
        ignored,
    })
}

#[cfg(test)]
mod tests;
