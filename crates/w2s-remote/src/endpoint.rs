//! Where a remote model lives and how to talk to it: the raw settings ([`RemoteSpec`],
//! read from a config file or a `URL#MODEL` spec) and their checked form ([`Endpoint`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RemoteError;
use crate::retry::RetryPolicy;

/// Which engine serves the endpoint; it decides a few request details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// Ask `GET /v1/models` once: vLLM, SGLang and w2s name themselves in `owned_by`,
    /// llama.cpp's `llama-server` answers `owned_by: "llamacpp"` and llama-cpp-python
    /// `owned_by: "me"`; anything else is [`EngineKind::OpenAi`].
    #[default]
    Auto,
    /// The OpenAI API as documented (hosted APIs): no `top_k`.
    OpenAi,
    /// vLLM: `top_k`, `n`, `seed`, echo log-probs, `prompt_logprobs`,
    /// `continue_final_message`.
    Vllm,
    /// SGLang: `top_k`, `n`, `seed`, echo log-probs.
    Sglang,
    /// llama-cpp-python's server: `top_k` and `seed`; it ignores `n` (one request per
    /// sample is sent) and its echo log-probs need the checks described in the crate docs.
    LlamaCppPython,
    /// llama.cpp's own server, `llama-server`: `top_k`, `seed`, and `n` up to its slot
    /// count (`--parallel`, read from `GET /props` as `total_slots`; larger groups are
    /// split into several requests); the sampler chain is sent as `samplers` so that it is
    /// w2s's (temperature, top-k, top-p) rather than the server's default. No echo: it
    /// cannot be a remote scorer.
    LlamaServer,
    /// Another w2s (`w2s serve`): its per-model endpoints `strong`, `tuned`, `untuned`
    /// take `top_k`, `n` (sampled as one batch), `seed` and echo log-probs.
    W2s,
}

impl EngineKind {
    /// Whether the engine takes `top_k`.
    pub(crate) fn takes_top_k(self) -> bool {
        !matches!(self, EngineKind::OpenAi | EngineKind::Auto)
    }
    /// Whether the engine honours `n` (if it does not, missing samples are fetched with
    /// parallel requests anyway). An engine may still cap `n` (llama-server at its slot
    /// count): larger groups are split, see [`crate::RemoteProposer`].
    pub(crate) fn honours_n(self) -> bool {
        !matches!(self, EngineKind::LlamaCppPython)
    }
    /// The engine named by a `/v1/models` entry's `owned_by`.
    pub(crate) fn from_owned_by(owned_by: &str) -> EngineKind {
        match owned_by {
            "vllm" => EngineKind::Vllm,
            "sglang" => EngineKind::Sglang,
            "me" | "llama-cpp-python" => EngineKind::LlamaCppPython,
            "llamacpp" | "llama.cpp" | "llama-server" => EngineKind::LlamaServer,
            "w2s" => EngineKind::W2s,
            _ => EngineKind::OpenAi,
        }
    }
}

/// Which endpoint the strong model samples through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// `/v1/completions` with a text prompt (template-filled prompt + beam text).
    #[default]
    Completions,
    /// `/v1/chat/completions`, continuing the assistant's message
    /// (`continue_final_message`, vLLM); needs a `chat:` template.
    Chat,
}

/// How a scorer asks for log-probabilities of given text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreApi {
    /// `echo: true, logprobs: 0, max_tokens: 1` (OpenAI legacy, vLLM, SGLang,
    /// llama-cpp-python).
    #[default]
    Echo,
    /// vLLM's `prompt_logprobs: 0`.
    PromptLogprobs,
}

/// The raw settings of one remote model, as written in a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8000/v1`.
    pub url: String,
    /// The model name the engine serves.
    pub model: String,
    /// Name of the environment variable that holds the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect")]
    pub connect_timeout_s: f64,
    /// Seconds one attempt may take, response body included.
    #[serde(default = "default_request")]
    pub request_timeout_s: f64,
    /// Retries after a 429, 5xx, timeout or broken connection.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Longest wait between attempts in seconds (and the longest `Retry-After` obeyed).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_s: f64,
    /// Requests in flight at once at most.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Which engine serves it.
    #[serde(default)]
    pub engine: EngineKind,
    /// The strong model's endpoint kind.
    #[serde(default)]
    pub api: Api,
    /// A scorer's way to get log-probabilities.
    #[serde(default)]
    pub score_api: ScoreApi,
    /// A scorer's end-of-sequence token as text (see [`RemoteError::NoEosText`]); `""`
    /// leaves the end-of-sequence term out on purpose.
    #[serde(default)]
    pub eos_text: Option<String>,
    /// This role's prompt template (front ends use it when no other is given).
    #[serde(default)]
    pub template: Option<String>,
}

fn default_connect() -> f64 {
    10.0
}
fn default_request() -> f64 {
    300.0
}
fn default_retries() -> u32 {
    RetryPolicy::default().max_retries
}
fn default_max_backoff() -> f64 {
    RetryPolicy::default().max_backoff.as_secs_f64()
}
fn default_concurrency() -> usize {
    16
}

/// Whether a model argument names a remote endpoint (`http://` or `https://`).
pub fn is_remote(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

impl RemoteSpec {
    /// A spec with default settings for `url` and `model`.
    pub fn new(url: &str, model: &str) -> Self {
        RemoteSpec {
            url: url.to_string(),
            model: model.to_string(),
            api_key_env: None,
            connect_timeout_s: default_connect(),
            request_timeout_s: default_request(),
            max_retries: default_retries(),
            max_backoff_s: default_max_backoff(),
            max_concurrency: default_concurrency(),
            engine: EngineKind::Auto,
            api: Api::Completions,
            score_api: ScoreApi::Echo,
            eos_text: None,
            template: None,
        }
    }

    /// Parses `URL#MODEL`, e.g. `http://127.0.0.1:8000/v1#meta-llama/Llama-3.1-70B`.
    pub fn parse(spec: &str) -> Result<Self, RemoteError> {
        let (url, model) = spec.split_once('#').ok_or_else(|| {
            RemoteError::Config(format!(
                "'{spec}' names no model: write URL#MODEL, e.g. http://127.0.0.1:8000/v1#my-model"
            ))
        })?;
        Ok(RemoteSpec::new(url, model))
    }

    /// Checks the settings and reads the API key from its environment variable.
    pub fn check(&self) -> Result<Endpoint, RemoteError> {
        let bad = |m: String| Err(RemoteError::Config(m));
        let parsed = reqwest::Url::parse(&self.url)
            .map_err(|e| RemoteError::Config(format!("url '{}' does not parse: {e}", self.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return bad(format!(
                "url '{}' must be http:// or https:// with a host",
                self.url
            ));
        }
        if self.model.trim().is_empty() {
            return bad(format!("no model name for {}: write URL#MODEL", self.url));
        }
        let secs = |v: f64, name: &str| -> Result<Duration, RemoteError> {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(RemoteError::Config(format!(
                    "{name} must be in (0, 86400] seconds, got {v}"
                )))
            }
        };
        if self.max_concurrency == 0 {
            return bad("max_concurrency must be at least 1".into());
        }
        if self.max_retries > 20 {
            return bad(format!(
                "max_retries must be at most 20, got {}",
                self.max_retries
            ));
        }
        let api_key = match &self.api_key_env {
            None => None,
            Some(var) if var.trim().is_empty() => return bad("api_key_env is empty".into()),
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.is_empty() => Some(ApiKey(key)),
                _ => return Err(RemoteError::MissingApiKey(var.clone())),
            },
        };
        Ok(Endpoint {
            base: self.url.trim_end_matches('/').to_string(),
            model: self.model.clone(),
            api_key,
            connect_timeout: secs(self.connect_timeout_s, "connect_timeout_s")?,
            request_timeout: secs(self.request_timeout_s, "request_timeout_s")?,
            retry: RetryPolicy {
                max_retries: self.max_retries,
                base: Duration::from_millis(250),
                max_backoff: secs(self.max_backoff_s, "max_backoff_s")?,
            },
            max_concurrency: self.max_concurrency,
            engine: self.engine,
            api: self.api,
            score_api: self.score_api,
            eos_text: self.eos_text.clone(),
        })
    }
}

/// An API key; its `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct ApiKey(pub(crate) String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// Checked endpoint settings.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub(crate) base: String,
    pub(crate) model: String,
    pub(crate) api_key: Option<ApiKey>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_concurrency: usize,
    pub(crate) engine: EngineKind,
    pub(crate) api: Api,
    pub(crate) score_api: ScoreApi,
    pub(crate) eos_text: Option<String>,
}

impl Endpoint {
    /// The base URL (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }
    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_are_told_apart_by_owned_by() {
        for (owner, engine) in [
            ("vllm", EngineKind::Vllm),
            ("sglang", EngineKind::Sglang),
            ("me", EngineKind::LlamaCppPython),
            ("llama-cpp-python", EngineKind::LlamaCppPython),
            ("llamacpp", EngineKind::LlamaServer),
            ("w2s", EngineKind::W2s),
            ("openai", EngineKind::OpenAi),
            ("", EngineKind::OpenAi),
        ] {
            assert_eq!(EngineKind::from_owned_by(owner), engine, "{owner}");
        }
        assert!(EngineKind::W2s.takes_top_k() && EngineKind::W2s.honours_n());
        assert!(!EngineKind::OpenAi.takes_top_k() && !EngineKind::LlamaCppPython.honours_n());
        assert!(EngineKind::LlamaServer.takes_top_k() && EngineKind::LlamaServer.honours_n());
    }

    #[test]
    fn parses_url_hash_model() {
        let s = RemoteSpec::parse("http://127.0.0.1:8000/v1/#org/model-7b").unwrap();
        assert_eq!(s.model, "org/model-7b");
        let e = s.check().unwrap();
        assert_eq!(e.base(), "http://127.0.0.1:8000/v1");
        assert!(is_remote("https://x/v1#m") && !is_remote("gemma-3-270m"));
    }

    #[test]
    fn bad_specs_say_what_to_write() {
        let e = RemoteSpec::parse("http://127.0.0.1:8000/v1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("URL#MODEL"), "{e}");
        let e = RemoteSpec::parse("ftp://x/v1#m")
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://"), "{e}");
        let mut s = RemoteSpec::new("http://x/v1", "m");
        s.request_timeout_s = 0.0;
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("request_timeout_s"));
    }

    #[test]
    fn api_key_comes_from_the_named_variable_and_is_not_printed() {
        let mut s = RemoteSpec::new("http://x/v1", "m");
        s.api_key_env = Some("W2S_TEST_SURELY_UNSET_KEY".into());
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("W2S_TEST_SURELY_UNSET_KEY"), "{e}");
        s.api_key_env = Some("PATH".into()); // set in every test environment
        let ep = s.check().unwrap();
        assert!(!format!("{ep:?}").contains(&std::env::var("PATH").unwrap()));
    }

    #[test]
    fn config_tables_parse_with_defaults() {
        let s: RemoteSpec = serde_json::from_str(
            r#"{"url":"http://h:1/v1","model":"m","engine":"llama-cpp-python","eos_text":"<|im_end|>"}"#,
        )
        .unwrap();
        assert_eq!(s.engine, EngineKind::LlamaCppPython);
        assert_eq!(s.max_retries, 4);
        let s: RemoteSpec =
            serde_json::from_str(r#"{"url":"http://h:1/v1","model":"m","engine":"llama-server"}"#)
                .unwrap();
        assert_eq!(s.engine, EngineKind::LlamaServer);
        assert!(
            serde_json::from_str::<RemoteSpec>(r#"{"url":"u","model":"m","key":"x"}"#).is_err()
        );
    }
}
