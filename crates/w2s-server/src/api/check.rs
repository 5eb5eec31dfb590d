//! The steps of [`parse`](super::parse), each turning part of a read body into checked
//! values. They run in a fixed order, so that a body with several faults always gets the
//! same error.

use serde_json::Value;
use w2s_core::{ChatTurn, Method, SamplingParams, SearchConfig};

use super::body::{chat_prompt, search_object, SharedFields};
use super::{Endpoint, Policy};
use crate::error::ApiError;
use crate::fields::{completion_prompts, stop_list, Field};

/// The model name, which is required.
pub(super) fn model(field: &Field) -> Result<String, ApiError> {
    match field.get() {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None => Err(ApiError::invalid(
            "model",
            "`model` is required; GET /v1/models lists them",
        )),
        Some(_) => Err(ApiError::invalid("model", "`model` must be a string")),
    }
}

/// The earlier chat turns and the prompts (for chat: the last user message, one), each
/// non-empty and within the size limit.
pub(super) fn prompts(
    endpoint: Endpoint,
    prompt: Field,
    ignored: &mut Vec<String>,
    policy: &Policy,
) -> Result<(Vec<ChatTurn>, Vec<String>), ApiError> {
    let (history, prompts) = match endpoint {
        Endpoint::Completions => (Vec::new(), completion_prompts(&prompt)?),
        Endpoint::Chat => {
            let (history, p) = chat_prompt(prompt, ignored)?;
            (history, vec![p])
        }
    };
    let param = prompt_param(endpoint);
    let many = prompts.len() > 1;
    let limit = policy.max_prompt_bytes;
    for (i, p) in prompts.iter().enumerate() {
        let which = if many {
            format!("prompt[{i}]")
        } else {
            "the prompt".into()
        };
        if p.trim().is_empty() {
            return Err(ApiError::invalid(param, format!("{which} is empty")));
        }
        if p.len() > limit {
            return Err(ApiError::invalid(
                param,
                format!("{which} is {} bytes; the limit is {limit}", p.len()),
            ));
        }
    }
    let history_bytes: usize = history.iter().map(|t| t.content.len()).sum();
    let total = history_bytes + prompts[0].len();
    if total > limit {
        return Err(ApiError::invalid(
            param,
            format!("the messages are {total} bytes; the limit is {limit}"),
        ));
    }
    Ok((history, prompts))
}

/// Refuses the standard options the search cannot honour, unless given their neutral
/// values.
pub(super) fn unsupported_options(
    echo: &Field,
    suffix: &Field,
    s: &SharedFields,
) -> Result<(), ApiError> {
    unsupported("echo", echo, |v| v == &Value::Bool(false))?;
    unsupported("suffix", suffix, Value::is_null)?;
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
    })
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

/// Whether the strong model's token log-probabilities are asked for: `logprobs: 0` on
/// completions, `logprobs: true` on chat. Top alternatives (`logprobs` over 0,
/// `top_logprobs` over 0) are refused: the search does not keep them.
pub(super) fn logprobs_wanted(
    endpoint: Endpoint,
    logprobs: &Field,
    top: &Field,
) -> Result<bool, ApiError> {
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

/// The generation settings of a body, each checked alone (the server's defaults where
/// absent).
pub(super) struct Settings {
    pub(super) max_tokens: usize,
    temperature: f64,
    top_p: f64,
    top_k: u32,
    stop: Vec<String>,
    pub(super) client_seed: Option<u64>,
    pub(super) stream: bool,
    pub(super) n: usize,
}

impl Settings {
    /// Reads the settings; `max_tokens` is the field with the name the body sent it under.
    pub(super) fn read(
        (max_tokens_key, max_tokens): (&'static str, Field),
        s: &SharedFields,
        policy: &Policy,
    ) -> Result<Self, ApiError> {
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
        Ok(Settings {
            max_tokens,
            temperature,
            top_p,
            top_k,
            stop: stop_list(&s.stop)?,
            client_seed: s.seed.uint("seed")?.map(|s| s as u64),
            stream: s.stream.flag("stream")?.unwrap_or(false),
            n: s.n.uint("n")?.unwrap_or(1),
        })
    }

    /// The checked search configuration; `seed` is used when the client gave none.
    pub(super) fn into_config(
        self,
        search: &Search,
        seed: u64,
        d: &SearchConfig,
    ) -> Result<SearchConfig, ApiError> {
        let sampling = SamplingParams::new(self.temperature as f32, self.top_k, self.top_p as f32)
            .map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
        let method = search.method;
        Ok(SearchConfig::new(
            method,
            self.max_tokens,
            search.beta,
            self.client_seed.unwrap_or(seed),
            sampling,
            self.stop,
        )
        .map_err(|e| ApiError::invalid("search", e.to_string()))?
        // The server's adaptive chunk ends apply to searches that have chunks.
        .with_chunk_end(d.chunk_end().filter(|_| method.chunk_len().is_some()))
        .map_err(|e| ApiError::invalid("search.l", e.to_string()))?
        .with_trace(search.trace))
    }
}

/// The search asked for: the `search` object, with `best_of` as Best-of-N.
pub(super) struct Search {
    pub(super) method: Method,
    beta: f64,
    pub(super) return_beams: bool,
    pub(super) trace: bool,
}

impl Search {
    /// Reads the `search` object and `best_of`, which must agree.
    pub(super) fn read(search: Field, best_of: &Field, policy: &Policy) -> Result<Self, ApiError> {
        let method_given = search
            .get()
            .and_then(|v| v.get("method"))
            .is_some_and(|m| !m.is_null());
        let (mut method, beta, return_beams, trace) =
            search_object(search, &policy.defaults, policy)?;
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
        Ok(Search {
            method,
            beta,
            return_beams,
            trace,
        })
    }
}

/// Checks what the settings and the search ask for together: `n` within the final beams,
/// and streaming only of one plain choice of one prompt.
pub(super) fn choices(
    settings: &Settings,
    search: &Search,
    logprobs: bool,
    many: bool,
) -> Result<(), ApiError> {
    let (n, stream, rows) = (settings.n, settings.stream, search.method.rows());
    if n == 0 || n > rows {
        return Err(ApiError::invalid(
            "n",
            format!("must be between 1 and W*K = {rows} (the best n final beams)"),
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
    if stream && search.trace {
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
    Ok(())
}
