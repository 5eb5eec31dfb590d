//! Request validation: a raw body becomes a checked request, or a 400/413 that says
//! which field is wrong. Nothing here touches a model.
//!
//! A body becomes a typed struct of its endpoint (see `body`), whose fields are read in a
//! fixed order so that a body with several faults always gets the same error; keys the
//! struct does not know are rejected by name, and so are standard options the search
//! cannot honour.

mod body;
mod plain;

use serde_json::Value;
use w2s_core::{ChatTurn, Method, SamplingParams, SearchConfig};

use self::body::{chat_prompt, search_object, stream_options, SearchBody};
pub(crate) use self::plain::PLAIN_MODELS;
pub use self::plain::{model_of, parse_plain, PlainRequest, MAX_PLAIN_N};
use crate::error::ApiError;
pub use crate::fields::MAX_PROMPTS;
use crate::fields::{completion_prompts, stop_list, Field};

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
        max_tokens: (max_tokens_key, max_tokens),
        echo,
        best_of,
        suffix,
        top_logprobs,
        shared: s,
        unknown: mut ignored,
    } = SearchBody::read(body, endpoint)?;
    let model = match s.model.get() {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(ApiError::invalid(
                "model",
                "`model` is required; GET /v1/models lists them",
            ))
        }
        Some(_) => return Err(ApiError::invalid("model", "`model` must be a string")),
    };
    let (history, prompts) = match endpoint {
        Endpoint::Completions => (Vec::new(), completion_prompts(&prompt)?),
        Endpoint::Chat => {
            let (history, p) = chat_prompt(prompt, &mut ignored)?;
            (history, vec![p])
        }
    };
    let param = prompt_param(endpoint);
    let many = prompts.len() > 1;
    for (i, p) in prompts.iter().enumerate() {
        let which = if many {
            format!("prompt[{i}]")
        } else {
            "the prompt".into()
        };
        if p.trim().is_empty() {
            return Err(ApiError::invalid(param, format!("{which} is empty")));
        }
        if p.len() > policy.max_prompt_bytes {
            return Err(ApiError::invalid(
                param,
                format!(
                    "{which} is {} bytes; the limit is {}",
                    p.len(),
                    policy.max_prompt_bytes
                ),
            ));
        }
    }
    let history_bytes: usize = history.iter().map(|t| t.content.len()).sum();
    if history_bytes + prompts[0].len() > policy.max_prompt_bytes {
        return Err(ApiError::invalid(
            param,
            format!(
                "the messages are {} bytes; the limit is {}",
                history_bytes + prompts[0].len(),
                policy.max_prompt_bytes
            ),
        ));
    }
    unsupported("echo", &echo, |v| v == &Value::Bool(false))?;
    unsupported("suffix", &suffix, Value::is_null)?;
    for (p, f) in [
        ("presence_penalty", &s.presence_penalty),
        ("frequency_penalty", &s.frequency_penalty),
    ] {
        unsupported(p, f, |v| v.as_f64() == Some(0.0) || v.is_null())?;
    }
    unsupported("logit_bias", &s.logit_bias, |v| {
        v.is_null() || v.as_object().is_some_and(|o| o.is_empty())
    })?;
    for (p, f) in [
        ("tools", &s.tools),
        ("functions", &s.functions),
        ("prediction", &s.prediction),
        ("audio", &s.audio),
    ] {
        unsupported(p, f, |v| {
            v.is_null() || v.as_array().is_some_and(|a| a.is_empty())
        })?;
    }
    for (p, f) in [
        ("tool_choice", &s.tool_choice),
        ("function_call", &s.function_call),
    ] {
        unsupported(p, f, |v| v.is_null() || v == "none")?;
    }
    unsupported("response_format", &s.response_format, |v| {
        v.is_null() || v.get("type").and_then(Value::as_str) == Some("text")
    })?;
    unsupported("modalities", &s.modalities, |v| {
        v.is_null() || v == &serde_json::json!(["text"])
    })?;
    s.user.string("user")?;
    let include_usage = stream_options(&s.stream_options, &mut ignored)?;
    let logprobs = logprobs_wanted(endpoint, &s.logprobs, &top_logprobs)?;

    let d = &policy.defaults;
    let max_tokens = max_tokens
        .uint(max_tokens_key)?
        .unwrap_or(d.max_new_tokens());
    if max_tokens == 0 || max_tokens > policy.max_tokens {
        return Err(ApiError::invalid(
            max_tokens_key,
            format!("must be between 1 and {}", policy.max_tokens),
        ));
    }
    let temperature = s.temperature.temperature(d.sampling().temperature())?;
    let top_p = s.top_p.top_p(d.sampling().top_p())?;
    let top_k = s
        .top_k
        .uint("top_k")?
        .map_or(Ok(d.sampling().top_k()), |k| {
            u32::try_from(k).map_err(|_| ApiError::invalid("top_k", "too large"))
        })?;
    let stop = stop_list(&s.stop)?;
    let client_seed = s.seed.uint("seed")?.map(|s| s as u64);
    let stream = s.stream.flag("stream")?.unwrap_or(false);
    let n = s.n.uint("n")?.unwrap_or(1);

    let method_given = s
        .search
        .get()
        .and_then(|v| v.get("method"))
        .is_some_and(|m| !m.is_null());
    let (mut method, beta, return_beams, trace) = search_object(s.search, d, policy)?;
    match best_of.uint("best_of")? {
        None | Some(1) => {}
        Some(0) => return Err(ApiError::invalid("best_of", "must be at least 1")),
        Some(b) if method_given && !matches!(method, Method::Bon { .. }) => {
            return Err(ApiError::invalid(
                "best_of",
                format!("best_of {b} asks for Best-of-N, but search.method is {method}; send one of them"),
            ))
        }
        Some(b) if b > policy.max_successors => {
            return Err(ApiError::invalid(
                "best_of",
                format!("must be between 1 and {}", policy.max_successors),
            ))
        }
        Some(b) => method = Method::Bon { n: b },
    }
    if n == 0 || n > method.rows() {
        return Err(ApiError::invalid(
            "n",
            format!(
                "must be between 1 and W*K = {} (the best n final beams)",
                method.rows()
            ),
        ));
    }
    if stream && n > 1 {
        return Err(ApiError::invalid(
            "n",
            "streaming returns one choice; use n = 1",
        ));
    }
    if stream && logprobs {
        return Err(ApiError::invalid(
            "logprobs",
            "log-probabilities are not streamed (the search settles text before its tokens are final); send the request without `stream`",
        ));
    }
    if stream && trace {
        return Err(ApiError::invalid(
            "search.trace",
            "the trace is not streamed; send the request without `stream`",
        ));
    }
    if stream && many {
        return Err(ApiError::invalid(
            "prompt",
            "streaming takes one prompt; send a list of prompts without `stream`",
        ));
    }
    let sampling = SamplingParams::new(temperature as f32, top_k, top_p as f32)
        .map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
    let config = SearchConfig::new(
        method,
        max_tokens,
        beta,
        client_seed.unwrap_or(seed),
        sampling,
        stop,
    )
    .map_err(|e| ApiError::invalid("search", e.to_string()))?
    // The server's adaptive chunk ends apply to searches that have chunks.
    .with_chunk_end(d.chunk_end().filter(|_| method.chunk_len().is_some()))
    .map_err(|e| ApiError::invalid("search.l", e.to_string()))?
    .with_trace(trace);
    Ok(CheckedRequest {
        endpoint,
        model,
        prompts,
        history,
        config,
        seeded: client_seed.is_some(),
        stream,
        n,
        return_beams,
        logprobs,
        include_usage,
        ignored,
    })
}

/// Whether the strong model's token log-probabilities are asked for: `logprobs: 0` on
/// completions, `logprobs: true` on chat. Top alternatives (`logprobs` over 0,
/// `top_logprobs` over 0) are refused: the search does not keep them.
fn logprobs_wanted(endpoint: Endpoint, logprobs: &Field, top: &Field) -> Result<bool, ApiError> {
    let no_top = |key: &str| {
        ApiError::invalid(
            key,
            format!("`{key}` over 0 asks for top alternatives, which the w2s search does not keep; use 0 for the chosen tokens' log-probabilities"),
        )
    };
    match endpoint {
        Endpoint::Completions => match logprobs.get() {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(false),
            Some(Value::Number(k)) if k.as_u64() == Some(0) => Ok(true),
            Some(Value::Number(k)) if k.as_u64().is_some() => Err(no_top("logprobs")),
            Some(_) => Err(ApiError::invalid(
                "logprobs",
                "`logprobs` must be an integer",
            )),
        },
        Endpoint::Chat => {
            let on = logprobs.flag("logprobs")?.unwrap_or(false);
            match top.uint("top_logprobs")? {
                None | Some(0) => Ok(on),
                Some(_) => Err(no_top("top_logprobs")),
            }
        }
    }
}

fn prompt_param(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Completions => "prompt",
        Endpoint::Chat => "messages",
    }
}

/// A standard option the search cannot honour: only its neutral values are taken.
fn unsupported(key: &str, field: &Field, ok: impl Fn(&Value) -> bool) -> Result<(), ApiError> {
    match field.get() {
        Some(v) if !ok(v) => Err(ApiError::invalid(
            key,
            format!("`{key}` is not supported by the w2s search; leave it out"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
