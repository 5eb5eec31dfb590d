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
use w2s_core::{SamplingParams, SearchConfig};

use self::body::{chat_prompt, search_object, SearchBody};
pub(crate) use self::plain::PLAIN_MODELS;
pub use self::plain::{model_of, parse_plain, PlainRequest, MAX_PLAIN_N};
use crate::error::ApiError;
use crate::fields::{completion_prompt, stop_list, Field};

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
    /// The prompt (for chat: the user message).
    pub prompt: String,
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
}

impl CheckedRequest {
    /// The admission cost: W*K rows times max tokens.
    pub fn cost(&self) -> u64 {
        (self.config.method().rows() as u64).saturating_mul(self.config.max_new_tokens() as u64)
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
    let prompt = match endpoint {
        Endpoint::Completions => completion_prompt(&prompt)?,
        Endpoint::Chat => chat_prompt(prompt)?,
    };
    if prompt.trim().is_empty() {
        return Err(ApiError::invalid(
            prompt_param(endpoint),
            "the prompt is empty",
        ));
    }
    if prompt.len() > policy.max_prompt_bytes {
        return Err(ApiError::invalid(
            prompt_param(endpoint),
            format!(
                "the prompt is {} bytes; the limit is {}",
                prompt.len(),
                policy.max_prompt_bytes
            ),
        ));
    }
    unsupported("echo", &echo, |v| v == &Value::Bool(false))?;
    unsupported("logprobs", &s.logprobs, |v| {
        v.is_null() || v == &Value::Bool(false)
    })?;
    unsupported("top_logprobs", &top_logprobs, Value::is_null)?;
    unsupported("suffix", &suffix, Value::is_null)?;
    unsupported("best_of", &best_of, |v| {
        v.as_u64() == Some(1) || v.is_null()
    })?;
    for (p, f) in [
        ("presence_penalty", &s.presence_penalty),
        ("frequency_penalty", &s.frequency_penalty),
    ] {
        unsupported(p, f, |v| v.as_f64() == Some(0.0) || v.is_null())?;
    }
    s.user.string("user")?;
    if let Some(v) = s.stream_options.get() {
        if !(v.is_object() || v.is_null()) {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    }

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

    let (method, beta, return_beams) = search_object(s.search, d, policy)?;
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
    .map_err(|e| ApiError::invalid("search", e.to_string()))?;
    Ok(CheckedRequest {
        endpoint,
        model,
        prompt,
        config,
        seeded: client_seed.is_some(),
        stream,
        n,
        return_beams,
    })
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
mod tests {
    use super::*;
    use w2s_core::Method;

    fn policy() -> Policy {
        Policy {
            defaults: SearchConfig::default(),
            max_width: 16,
            max_successors: 16,
            max_chunk: 64,
            max_rows_per_request: 64,
            max_tokens: 512,
            max_prompt_bytes: 100_000,
        }
    }

    fn ok(body: &str) -> CheckedRequest {
        parse(body.as_bytes(), Endpoint::Completions, &policy(), 7).unwrap()
    }

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes(), Endpoint::Completions, &policy(), 7).unwrap_err()
    }

    #[test]
    fn defaults_and_overrides() {
        let r = ok(r#"{"model": "w2s", "prompt": "hi"}"#);
        assert_eq!(r.config.method(), Method::Cbs { w: 4, k: 4, l: 5 });
        assert_eq!(r.config.seed(), 7);
        assert!(!r.seeded);
        let r = ok(
            r#"{"model": "w2s", "prompt": ["hi"], "seed": 3, "max_tokens": 9,
                      "search": {"method": "cbs", "w": 2, "k": 3, "l": 4, "beta": 0.5}, "n": 2}"#,
        );
        assert_eq!(r.config.method(), Method::Cbs { w: 2, k: 3, l: 4 });
        assert_eq!((r.config.seed(), r.config.max_new_tokens(), r.n), (3, 9, 2));
        assert!(r.seeded);
        assert_eq!(r.cost(), 6 * 9);
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (r#"[1]"#, ""),
            (r#"{"prompt": "x"}"#, "model"),
            (r#"{"model": "w2s"}"#, "prompt"),
            (r#"{"model": "w2s", "prompt": ""}"#, "prompt"),
            (r#"{"model": "w2s", "prompt": 5}"#, "prompt"),
            (
                r#"{"model": "w2s", "prompt": "x", "max_tokens": 0}"#,
                "max_tokens",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "max_tokens": 1.5}"#,
                "max_tokens",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "max_tokens": 99999999999999999999}"#,
                "max_tokens",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "temperature": -1}"#,
                "temperature",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "temperature": "hot"}"#,
                "temperature",
            ),
            (r#"{"model": "w2s", "prompt": "x", "top_p": 0}"#, "top_p"),
            (r#"{"model": "w2s", "prompt": "x", "stop": [1]}"#, "stop"),
            (
                r#"{"model": "w2s", "prompt": "x", "stream": "yes"}"#,
                "stream",
            ),
            (r#"{"model": "w2s", "prompt": "x", "bogus": 1}"#, "bogus"),
            (
                r#"{"model": "w2s", "prompt": "x", "search": {"method": "beam"}}"#,
                "search.method",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "search": {"w": 0}}"#,
                "search.w",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "search": {"w": 16, "k": 16}}"#,
                "search.w*k",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "search": {"extra": 1}}"#,
                "search.extra",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "search": {"beta": 1e300}}"#,
                "search.beta",
            ),
            (r#"{"model": "w2s", "prompt": "x", "n": 17}"#, "n"),
            (r#"{"model": "w2s", "prompt": "x", "echo": true}"#, "echo"),
            (
                r#"{"model": "w2s", "prompt": "x", "logprobs": 2}"#,
                "logprobs",
            ),
        ];
        for (body, param) in cases {
            let e = err(body);
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(
                e.param.as_deref().unwrap_or(""),
                param,
                "{body}: {}",
                e.message
            );
        }
        assert!(err("{not json").message.contains("not valid JSON"));
        assert!(err(&"[".repeat(1000)).message.contains("not valid JSON"));
        assert!(
            err(r#"{"model": "w2s", "prompt": "x", "max_tokens": 1e400}"#)
                .message
                .contains("not valid JSON")
        );
    }

    #[test]
    fn chat_takes_one_user_message() {
        let p = policy();
        let r = parse(
            br#"{"model": "w2s", "messages": [{"role": "user", "content": "hello"}]}"#,
            Endpoint::Chat,
            &p,
            1,
        )
        .unwrap();
        assert_eq!(r.prompt, "hello");
        for body in [
            r#"{"model": "w2s", "messages": []}"#,
            r#"{"model": "w2s", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}"#,
            r#"{"model": "w2s", "messages": [{"role": "user", "content": [1]}]}"#,
            r#"{"model": "w2s", "messages": [{"role": "user", "content": "y", "x": 1}]}"#,
            r#"{"model": "w2s", "messages": "hi"}"#,
        ] {
            assert!(
                parse(body.as_bytes(), Endpoint::Chat, &p, 1).is_err(),
                "{body}"
            );
        }
    }
}
