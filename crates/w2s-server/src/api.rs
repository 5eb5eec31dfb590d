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
    let (mut method, beta, return_beams) = search_object(s.search, d, policy)?;
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
    .map_err(|e| ApiError::invalid("search", e.to_string()))?;
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
    fn unknown_fields_are_ignored_and_listed_but_unhonourable_ones_are_refused() {
        let r = ok(
            r#"{"model": "w2s", "prompt": "x", "bogus": 1, "store": false, "metadata": {"a": 1},
                       "stream_options": {"include_usage": true, "extra": 1}, "logprobs": null,
                       "frequency_penalty": 0, "presence_penalty": 0, "n": 1, "seed": null,
                       "temperature": 0.7, "top_p": 1, "logit_bias": {}, "tools": [],
                       "response_format": {"type": "text"}}"#,
        );
        assert_eq!(
            r.ignored,
            vec!["bogus", "metadata", "store", "stream_options.extra"]
        );
        assert!(r.include_usage);
        assert!(!r.seeded);
        for (body, param) in [
            (
                r#"{"model": "w2s", "prompt": "x", "logit_bias": {"50256": -100}}"#,
                "logit_bias",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "tools": [{"type": "function"}]}"#,
                "tools",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "tool_choice": "auto"}"#,
                "tool_choice",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "response_format": {"type": "json_object"}}"#,
                "response_format",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "modalities": ["text", "audio"]}"#,
                "modalities",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "suffix": "end"}"#,
                "suffix",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "logprobs": 3}"#,
                "logprobs",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "stream_options": 3}"#,
                "stream_options",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "search": {"typo": 1}}"#,
                "search.typo",
            ),
        ] {
            let e = err(body);
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
            assert!(e.message.len() < 400, "{}", e.message);
        }
        assert!(ok(r#"{"model": "w2s", "prompt": "x", "logprobs": 0}"#).logprobs);
    }

    #[test]
    fn prompt_lists_are_one_search_each_and_best_of_is_best_of_n() {
        let r = ok(r#"{"model": "w2s", "prompt": ["a", "b", "c"], "n": 2, "max_tokens": 4}"#);
        assert_eq!(r.prompts, vec!["a", "b", "c"]);
        assert_eq!(r.cost(), 3 * 16 * 4);
        let many = format!(
            r#"{{"model": "w2s", "prompt": [{}]}}"#,
            vec!["\"p\""; 10_000].join(",")
        );
        let e = err(&many);
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert!(e.message.contains("10000 prompts"), "{}", e.message);
        for (body, needle) in [
            (
                r#"{"model": "w2s", "prompt": ["a", ""]}"#,
                "prompt[1] is empty",
            ),
            (r#"{"model": "w2s", "prompt": []}"#, "empty array"),
            (r#"{"model": "w2s", "prompt": [1, 2]}"#, "token-id"),
            (r#"{"model": "w2s", "prompt": [[1, 2]]}"#, "token-id"),
            (
                r#"{"model": "w2s", "prompt": ["a", "b"], "stream": true}"#,
                "streaming takes one prompt",
            ),
        ] {
            let e = err(body);
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        let r = ok(r#"{"model": "w2s", "prompt": "x", "best_of": 8, "n": 2}"#);
        assert_eq!(r.config.method(), Method::Bon { n: 8 });
        assert_eq!(r.n, 2);
        assert_eq!(
            ok(r#"{"model": "w2s", "prompt": "x", "best_of": 1}"#)
                .config
                .method(),
            Method::Cbs { w: 4, k: 4, l: 5 }
        );
        for (body, param) in [
            (
                r#"{"model": "w2s", "prompt": "x", "best_of": 2, "n": 3}"#,
                "n",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "best_of": 0}"#,
                "best_of",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "best_of": 99}"#,
                "best_of",
            ),
            (
                r#"{"model": "w2s", "prompt": "x", "best_of": 4, "search": {"method": "cbs"}}"#,
                "best_of",
            ),
        ] {
            assert_eq!(err(body).param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn chat_takes_a_conversation_ending_with_the_user() {
        let p = policy();
        let chat = |body: &str| parse(body.as_bytes(), Endpoint::Chat, &p, 1);
        let r = chat(r#"{"model": "w2s", "messages": [{"role": "user", "content": "hello"}]}"#)
            .unwrap();
        assert_eq!(
            (r.prompts.as_slice(), r.history.len()),
            (&["hello".to_string()][..], 0)
        );
        let r = chat(
            r#"{"model": "w2s", "max_completion_tokens": 7, "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": "Hello!", "refusal": null, "name": "bot"},
                {"role": "developer", "content": "Be brief.", "x-extra": 1},
                {"role": "user", "content": [{"type": "text", "text": "Why?"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.prompts, vec!["Why?"]);
        assert_eq!(r.config.max_new_tokens(), 7);
        let roles: Vec<_> = r
            .history
            .iter()
            .map(|t| (t.role.as_str(), t.content.as_str()))
            .collect();
        assert_eq!(
            roles,
            vec![
                ("system", "Be kind."),
                ("user", "Hi\nthere"),
                ("assistant", "Hello!"),
                ("system", "Be brief.")
            ]
        );
        assert_eq!(r.ignored, vec!["messages[3].x-extra"]);
        for (body, needle) in [
            (r#"{"model": "w2s", "messages": []}"#, "is empty"),
            (
                r#"{"model": "w2s", "messages": [{"role": "wizard", "content": "x"}]}"#,
                "role must be",
            ),
            (
                r#"{"model": "w2s", "messages": [{"role": "tool", "content": "x"}]}"#,
                "tool messages",
            ),
            (
                r#"{"model": "w2s", "messages": [{"role": "user", "content": []}]}"#,
                "empty array",
            ),
            (
                r#"{"model": "w2s", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}"#,
                "only text parts",
            ),
            (
                r#"{"model": "w2s", "messages": [{"role": "user", "content": [1]}]}"#,
                "type",
            ),
            (
                r#"{"model": "w2s", "messages": [{"role": "user", "content": 5}]}"#,
                "string or an array",
            ),
            (
                r#"{"model": "w2s", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}"#,
                "last message",
            ),
            (
                r#"{"model": "w2s", "messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}, {"role": "user", "content": "x"}]}"#,
                "tool calls",
            ),
            (
                r#"{"model": "w2s", "messages": [{"role": "user", "content": "   "}]}"#,
                "empty",
            ),
            (r#"{"model": "w2s", "messages": "hi"}"#, "must be an array"),
            (
                r#"{"model": "w2s", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2, "logprobs": true}"#,
                "top alternatives",
            ),
        ] {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
            assert!(e.message.len() < 400, "{}", e.message);
        }
    }
}
