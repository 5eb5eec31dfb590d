//! Request validation: a raw body becomes a checked request, or a 400/413 that says
//! which field is wrong. Nothing here touches a model.

use serde_json::{Map, Value};
use w2s_core::{Method, SamplingParams, SearchConfig};

use crate::error::ApiError;
use crate::fields::{
    completion_prompt, object, opt_bool, opt_number, opt_uint, reject_unknown, stop_list,
};
pub use crate::plain_api::{model_of, parse_plain, PlainRequest, MAX_PLAIN_N};

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

const COMPLETION_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "stream",
    "n",
    "search",
    "user",
    "echo",
    "logprobs",
    "presence_penalty",
    "frequency_penalty",
    "best_of",
    "suffix",
    "stream_options",
];
const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "stream",
    "n",
    "search",
    "user",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "stream_options",
];
const SEARCH_FIELDS: &[&str] = &["method", "w", "k", "l", "n", "beta", "return_beams"];

/// Parses and checks a body. `seed` is used when the client gives none.
pub fn parse(
    body: &[u8],
    endpoint: Endpoint,
    policy: &Policy,
    seed: u64,
) -> Result<CheckedRequest, ApiError> {
    let allowed = match endpoint {
        Endpoint::Completions => COMPLETION_FIELDS,
        Endpoint::Chat => CHAT_FIELDS,
    };
    let obj = object(body, allowed)?;

    let model = match obj.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => {
            return Err(ApiError::invalid(
                "model",
                "`model` is required; GET /v1/models lists them",
            ))
        }
        Some(_) => return Err(ApiError::invalid("model", "`model` must be a string")),
    };
    let prompt = match endpoint {
        Endpoint::Completions => completion_prompt(obj.get("prompt"))?,
        Endpoint::Chat => chat_prompt(obj.get("messages"))?,
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
    unsupported(&obj, "echo", |v| v == &Value::Bool(false))?;
    unsupported(&obj, "logprobs", |v| {
        v.is_null() || v == &Value::Bool(false)
    })?;
    unsupported(&obj, "top_logprobs", Value::is_null)?;
    unsupported(&obj, "suffix", Value::is_null)?;
    unsupported(&obj, "best_of", |v| v.as_u64() == Some(1) || v.is_null())?;
    for p in ["presence_penalty", "frequency_penalty"] {
        unsupported(&obj, p, |v| v.as_f64() == Some(0.0) || v.is_null())?;
    }
    if let Some(v) = obj.get("user") {
        if !v.is_string() {
            return Err(ApiError::invalid("user", "`user` must be a string"));
        }
    }
    if let Some(v) = obj.get("stream_options") {
        if !(v.is_object() || v.is_null()) {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    }

    let d = &policy.defaults;
    let max_tokens_key = if obj.contains_key("max_completion_tokens") {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let max_tokens = opt_uint(&obj, max_tokens_key)?.unwrap_or(d.max_new_tokens());
    if max_tokens == 0 || max_tokens > policy.max_tokens {
        return Err(ApiError::invalid(
            max_tokens_key,
            format!("must be between 1 and {}", policy.max_tokens),
        ));
    }
    let temperature = opt_number(&obj, "temperature")?.unwrap_or(d.sampling().temperature() as f64);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid("temperature", "must be between 0 and 2"));
    }
    let top_p = opt_number(&obj, "top_p")?.unwrap_or(d.sampling().top_p() as f64);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p", "must be in (0, 1]"));
    }
    let top_k = opt_uint(&obj, "top_k")?.map_or(Ok(d.sampling().top_k()), |k| {
        u32::try_from(k).map_err(|_| ApiError::invalid("top_k", "too large"))
    })?;
    let stop = stop_list(obj.get("stop"))?;
    let client_seed = opt_uint(&obj, "seed")?.map(|s| s as u64);
    let stream = opt_bool(&obj, "stream")?.unwrap_or(false);
    let n = opt_uint(&obj, "n")?.unwrap_or(1);

    let (method, beta, return_beams) = search_object(obj.get("search"), d, policy)?;
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

fn unsupported(
    obj: &Map<String, Value>,
    key: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<(), ApiError> {
    match obj.get(key) {
        Some(v) if !ok(v) => Err(ApiError::invalid(
            key,
            format!("`{key}` is not supported by the w2s search; leave it out"),
        )),
        _ => Ok(()),
    }
}

/// One user message; the server's templates give the instructions.
fn chat_prompt(v: Option<&Value>) -> Result<String, ApiError> {
    let Some(Value::Array(messages)) = v else {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must be an array of {role, content} objects",
        ));
    };
    let mut user = None;
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(ApiError::invalid(
                "messages",
                format!("messages[{i}] must be an object"),
            ));
        };
        reject_unknown(m, &["role", "content", "name"], &format!("messages[{i}]."))?;
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "messages",
                    format!("messages[{i}].content must be a string"),
                ))
            }
        };
        match role {
            "user" if user.is_none() => user = Some(content),
            "user" => return Err(ApiError::invalid("messages", "one user message per request: the search continues a single turn")),
            "system" | "developer" | "assistant" => {
                return Err(ApiError::invalid(
                    "messages",
                    format!("`{role}` messages are not supported: the server's templates set the instructions; send one user message"),
                ))
            }
            _ => return Err(ApiError::invalid("messages", format!("messages[{i}].role must be \"user\""))),
        }
    }
    user.ok_or_else(|| ApiError::invalid("messages", "no user message"))
}

fn search_object(
    v: Option<&Value>,
    d: &SearchConfig,
    policy: &Policy,
) -> Result<(Method, f64, bool), ApiError> {
    let empty = Map::new();
    let obj = match v {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::invalid("search", "`search` must be an object")),
    };
    reject_unknown(obj, SEARCH_FIELDS, "search.")?;
    let mut method = match obj.get("method") {
        None | Some(Value::Null) => d.method(),
        Some(Value::String(s)) => {
            Method::parse(s).map_err(|e| ApiError::invalid("search.method", e.to_string()))?
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "search.method",
                "`search.method` must be a string",
            ))
        }
    };
    let get = |k: &str| {
        opt_uint(obj, k).map_err(|e| ApiError {
            param: Some(format!("search.{k}")),
            ..e
        })
    };
    match &mut method {
        Method::Cbs { w, k, l } => {
            *w = get("w")?.unwrap_or(*w);
            *k = get("k")?.unwrap_or(*k);
            *l = get("l")?.unwrap_or(*l);
        }
        Method::Bon { n } => *n = get("n")?.unwrap_or(*n),
        Method::Sample => {}
    }
    let (w, k) = (method.width(), method.successors());
    let checks = [
        ("search.w", w, policy.max_width),
        ("search.k", k, policy.max_successors),
        (
            "search.l",
            method.chunk_len().unwrap_or(1),
            policy.max_chunk,
        ),
        (
            "search.w*k",
            w.saturating_mul(k),
            policy.max_rows_per_request,
        ),
    ];
    for (param, v, max) in checks {
        if v == 0 || v > max {
            return Err(ApiError::invalid(
                param,
                format!("must be between 1 and {max}"),
            ));
        }
    }
    let beta = match obj.get("beta") {
        None | Some(Value::Null) => d.beta(),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|b| b.is_finite() && b.abs() <= 100.0)
            .ok_or_else(|| {
                ApiError::invalid("search.beta", "must be a number between -100 and 100")
            })?,
        Some(_) => return Err(ApiError::invalid("search.beta", "must be a number")),
    };
    let return_beams = opt_bool(obj, "return_beams")?.unwrap_or(false);
    Ok((method, beta, return_beams))
}

#[cfg(test)]
mod tests {
    use super::*;

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
