//! # w2s-remote: any OpenAI-compatible engine as a w2s model
//!
//! [`RemoteProposer`] runs the strong model behind `/v1/completions` (or
//! `/v1/chat/completions`, continuing the assistant's message where the engine allows it);
//! [`RemoteScorer`] scores text with a small model through echoed log-probabilities
//! (`echo: true, logprobs: 0`) or vLLM's `prompt_logprobs`. Any of strong / tuned /
//! untuned may be remote while the others run locally.
//!
//! ```no_run
//! use w2s_core::PromptTemplate;
//! use w2s_remote::{RemoteProposer, RemoteSpec};
//!
//! let endpoint = RemoteSpec::parse("http://127.0.0.1:8000/v1#meta-llama/Llama-3.1-70B")?.check()?;
//! let strong = RemoteProposer::new(endpoint, PromptTemplate::new("Review: {prompt}")?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Blocking calls
//! The [`w2s_core`] traits are synchronous. Each backend owns a small tokio runtime and
//! blocks on it: call it from an ordinary thread (a server calls it from a blocking
//! worker, e.g. `tokio::task::spawn_blocking`), never from inside an async runtime
//! ([`RemoteError::InsideAsync`]). Within one call every row's request is in flight at
//! once, at most `max_concurrency` per backend, over one pooled HTTP client (rustls).
//!
//! ## The strong model as a black box
//! Each step sends, per beam, the template-filled prompt plus the beam's text as a text
//! prompt and asks for at most L tokens (`n`, `max_tokens`, `temperature`, `top_p`,
//! `top_k` where the engine takes it, `seed`, `stop`). The engine re-tokenises that text,
//! so at a chunk edge it may split the text differently from how it sampled it (e.g. a
//! word continued across two chunks); this is the paper's black-box setting and the
//! continuation is still sampled from the model given that text. Each row draws
//! `rng.next_u64()` once per step for the request's `seed`, so a seeded run is
//! reproducible against an engine that is deterministic for a given seed.
//!
//! Token counts: the number of tokens in each choice's `logprobs` when present (asked for
//! whenever a request has `n > 1`), else `usage.completion_tokens` of a one-choice reply,
//! else the request's `max_tokens` (exact when `finish_reason` is `length`, an upper bound
//! for a sample that stopped, whose row has ended anyway). A count above `max_tokens` is a
//! [`RemoteError::Malformed`] reply. `finish_reason: "stop"` is an end-of-sequence unless
//! the engine names a stop string (`stop_reason`, vLLM) or stop strings were set.
//!
//! ## Scoring
//! One request per row and step with the whole "prompt + response so far" (`max_tokens:
//! 1`, `temperature: 0`); prompt caching is left to the engine. The response's tokens are
//! found among the echoed tokens from the end by their text (see `align.rs`), never by a
//! character-count guess of where the prompt ends; a reply whose tokens do not spell the
//! response is an error. An ended row is scored with `eos_text` appended: the engine must
//! read it as the one special token (engines that parse special tokens in completion
//! prompts do; vLLM and llama-cpp-python do), which is checked on every reply. Without
//! `eos_text` an ended row is an error ([`RemoteError::NoEosText`]); `eos_text = ""` leaves
//! the term out on purpose.
//!
//! llama-cpp-python 0.3.x pairs each echoed token with the logits *after* it unless it
//! dropped a leading BOS token, so its echo log-probs are right only for models that add
//! a BOS token (Gemma, Llama, Mistral; not SmolLM2 or Qwen). The scorer asks its
//! `/extras/tokenize` once whether the model adds one and otherwise fails with
//! [`RemoteError::Misaligned`] rather than return shifted numbers.
//!
//! ## Failures
//! Connect and request timeouts; retries with jittered exponential backoff on 429, 5xx,
//! timeouts and broken connections, bounded by `max_retries` (a `Retry-After` in seconds
//! is obeyed up to `max_backoff_s`); a 4xx shows the engine's message (a context overflow
//! says how to fix it); malformed JSON, missing fields and missing log-probs are final
//! errors that name the cause. One failed row fails the whole call.
#![deny(missing_docs)]

mod align;
mod client;
mod endpoint;
mod error;
mod proposer;
mod retry;
mod scorer;

pub use endpoint::{is_remote, Api, Endpoint, Engine, RemoteSpec, ScoreApi};
pub use error::RemoteError;
pub use proposer::RemoteProposer;
pub use retry::RetryPolicy;
pub use scorer::RemoteScorer;
