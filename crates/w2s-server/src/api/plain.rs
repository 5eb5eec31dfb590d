//! Plain requests: a body sent to `/v1/completions` for one loaded model (`model:
//! "strong" | "tuned" | "untuned"`), parsed into a checked [`PlainRequest`].

use serde::Deserialize;
use serde_json::{Map, Value};
use w2s_core::SamplingParams;

use super::Policy;
use crate::error::ApiError;
use crate::fields::{completion_prompt, object, stop_list, Field};

/// The loaded models, served plainly on `/v1/completions` by role.
pub(crate) const PLAIN_MODELS: [&str; 3] = ["strong", "tuned", "untuned"];

/// Most continuations one plain request may ask for.
pub const MAX_PLAIN_N: usize = 64;

/// A plain completion request to one of the loaded models (no search).
#[derive(Debug, Clone, PartialEq)]
pub struct PlainRequest {
    /// Index of the model (0 strong, 1 tuned, 2 untuned).
    pub role: usize,
    /// The model name asked for.
    pub model: String,
    /// The raw prompt (no template).
    pub prompt: String,
    /// Continuations.
    pub n: usize,
    /// Tokens per continuation (0 only with echo).
    pub max_tokens: usize,
    /// The sampler.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Seed.
    pub seed: u64,
    /// Return the prompt with per-token log-probabilities.
    pub echo: bool,
    /// Return the chosen tokens' log-probabilities.
    pub logprobs: bool,
    /// Fields the server does not know, ignored (reported in `x-w2s-ignored-fields`).
    pub ignored: Vec<String>,
}

impl PlainRequest {
    /// The admission cost: rows times tokens.
    pub fn cost(&self) -> u64 {
        (self.n as u64).saturating_mul(self.max_tokens.max(1) as u64)
    }
}

/// A plain request body as sent.
#[derive(Deserialize, Default)]
#[serde(default)]
struct PlainBody {
    model: Field,
    prompt: Field,
    max_tokens: Field,
    temperature: Field,
    top_p: Field,
    top_k: Field,
    stop: Field,
    seed: Field,
    stream: Field,
    n: Field,
    user: Field,
    echo: Field,
    logprobs: Field,
    search: Field,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// Parses a body sent to `/v1/completions` for a plain model (`role`).
pub fn parse_plain(
    body: &[u8],
    role: usize,
    policy: &Policy,
    seed: u64,
) -> Result<PlainRequest, ApiError> {
    let b: PlainBody = object(body)?;
    let ignored = b.unknown.keys().cloned().collect();
    if b.search.is_given() {
        return Err(ApiError::invalid(
            "search",
            "a plain model request runs no search; send `search` with the search model",
        ));
    }
    let model = b
        .model
        .get()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let prompt = completion_prompt(&b.prompt)?;
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    if prompt.len() > policy.max_prompt_bytes {
        return Err(ApiError::invalid(
            "prompt",
            format!("the prompt is over {} bytes", policy.max_prompt_bytes),
        ));
    }
    let echo = b.echo.flag("echo")?.unwrap_or(false);
    if b.stream.flag("stream")?.unwrap_or(false) {
        return Err(ApiError::invalid(
            "stream",
            "plain model requests are not streamed",
        ));
    }
    b.user.string("user")?;
    let logprobs = match b.logprobs.uint("logprobs")? {
        None => false,
        Some(0) => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "logprobs",
                "only `logprobs: 0` (the chosen tokens' log-probabilities) is supported",
            ))
        }
    };
    let d = &policy.defaults;
    let max_tokens = b.max_tokens.uint("max_tokens")?.unwrap_or(16);
    if max_tokens > policy.max_tokens || (max_tokens == 0 && !echo) {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "must be between 1 and {} (0 only with echo)",
                policy.max_tokens
            ),
        ));
    }
    let temperature = b.temperature.temperature(d.sampling().temperature())?;
    let top_p = b.top_p.top_p(1.0)?;
    let top_k = b.top_k.uint("top_k")?.map_or(Ok(0), |k| {
        u32::try_from(k).map_err(|_| ApiError::invalid("top_k", "too large"))
    })?;
    let n = b.n.uint("n")?.unwrap_or(1);
    if n == 0 || n > MAX_PLAIN_N || (echo && n != 1) {
        return Err(ApiError::invalid(
            "n",
            format!("must be between 1 and {MAX_PLAIN_N} (1 with echo)"),
        ));
    }
    let sampling = SamplingParams::new(temperature as f32, top_k, top_p as f32)
        .map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
    Ok(PlainRequest {
        role,
        model,
        prompt,
        n,
        max_tokens,
        sampling,
        stop: stop_list(&b.stop)?,
        seed: b.seed.uint("seed")?.map_or(seed, |s| s as u64),
        echo,
        logprobs,
        ignored,
    })
}

/// The `model` field of a body, if it has one (to route it before full parsing).
pub fn model_of(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct M {
        model: Option<String>,
    }
    serde_json::from_slice::<M>(body).ok().and_then(|m| m.model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use w2s_core::SearchConfig;

    #[test]
    fn plain_requests_are_checked() {
        let p = Policy {
            defaults: SearchConfig::default(),
            max_width: 16,
            max_successors: 16,
            max_chunk: 64,
            max_rows_per_request: 64,
            max_tokens: 512,
            max_prompt_bytes: 1000,
        };
        let r = parse_plain(br#"{"model": "tuned", "prompt": "Hi there", "echo": true, "logprobs": 0, "max_tokens": 1, "temperature": 0}"#, 1, &p, 3).unwrap();
        assert!(r.echo && r.logprobs && r.max_tokens == 1 && r.role == 1);
        let r = parse_plain(
            br#"{"model": "tuned", "prompt": "Hi", "max_tokens": 1, "user_tag": 1}"#,
            1,
            &p,
            3,
        )
        .unwrap();
        assert_eq!(r.ignored, vec!["user_tag"]);
        for body in [
            r#"{"model": "tuned", "prompt": "x", "max_tokens": 0}"#,
            r#"{"model": "tuned", "prompt": "x", "echo": true, "n": 2}"#,
            r#"{"model": "tuned", "prompt": "x", "logprobs": 5}"#,
            r#"{"model": "tuned", "prompt": "x", "stream": true}"#,
            r#"{"model": "tuned", "prompt": "x", "search": {}}"#,
            r#"{"model": "tuned", "prompt": ""}"#,
        ] {
            assert!(parse_plain(body.as_bytes(), 1, &p, 3).is_err(), "{body}");
        }
        assert_eq!(
            model_of(br#"{"model": "strong", "x": 1}"#).as_deref(),
            Some("strong")
        );
        assert_eq!(model_of(b"{oops"), None);
    }
}
