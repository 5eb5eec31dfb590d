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
//! `rng.next_u64()` once per step; a request's `seed` is the draw of its first row (with
//! `n > 1` the engine derives the other samples' seeds: llama-server uses `seed + i`), so
//! a seeded run is reproducible against an engine that is deterministic for a given seed.
//!
//! **Engines that cap `n`.** llama.cpp's `llama-server` takes `n` up to its slot count
//! (`--parallel`) and answers more with HTTP 400 ("Field 'n': Value must be between 1 <=
//! value <= 4, but got 16"). The copies of one beam are then sent as several requests of
//! at most the cap, each seeded by the draw of its own first row. The cap is read once
//! from llama-server's `GET /props` (`total_slots`; at the server root, not under `/v1`);
//! for any other engine, a 400 about `n` that names a bound is remembered and the refused
//! step is sent again, split, with the same seeds (so the samples do not depend on how the
//! cap was learnt). See [`RemoteProposer::n_cap`].
//!
//! **Stop strings across chunks.** The engine gets the stop strings too, but it matches
//! only inside its new completion, so a stop string that straddles two chunks (a chunk
//! ending in `"\n"`, the next starting with `"\nQ:"`, stop `"\n\n"`) would be missed. The
//! proposer therefore looks for stop strings in the row's whole text, as the local
//! proposer does, cuts the row before the first one, and ends it. A possible stop-string
//! start at the end of a chunk is held back from the search (the guides do not score it)
//! until the next chunk decides it; it stays in the beam text sent as the next prompt and
//! is returned later if no stop string follows, or when the row ends.
//!
//! **Characters cut at `max_tokens`.** An engine whose chunk ends inside a multi-byte
//! UTF-8 character (a character sampled as several byte tokens: rare CJK, newer emoji)
//! cannot send the partial bytes in JSON and sends U+FFFD instead (llama-server does, and
//! `w2s serve`'s plain endpoints do; llama-cpp-python 0.3.x instead samples up to 3 tokens
//! past `max_tokens` to complete the character, counted in its `usage`, or, when its check
//! misses, drops the partial bytes).
//! Appended as is, the character would be lost for good: the next prompt would hold
//! U+FFFD. So trailing U+FFFD of a chunk that ended by length (`finish_reason: "length"`)
//! are dropped; their tokens still count against the budget, and the next request
//! re-samples from the clean text. The row text is thus always exactly what the engine
//! is given next. A character needs all its tokens in one chunk: with L = 1 such
//! characters never appear. U+FFFD inside a chunk, or at the end of one that ended, is
//! kept (the local backend keeps it too).
//!
//! Token counts: `usage.completion_tokens` of a one-choice reply (exact); else the
//! request's `max_tokens` for a choice that ended by length (exact); else the number of
//! tokens in the choice's `logprobs` when present (asked for whenever a request has `n >
//! 1`; llama-server lists a character split over several tokens once, so it is a lower
//! bound there), else `max_tokens` (an upper bound for a sample that stopped, whose row
//! has ended anyway). A count up to 3 above `max_tokens` (llama-cpp-python completing a
//! character) is taken as `max_tokens`; more is a [`RemoteError::Malformed`] reply.
//! `finish_reason: "stop"` is an end-of-sequence unless the engine names a stop string
//! (`stop_reason`, vLLM) or stop strings were set.
//!
//! ## llama.cpp's `llama-server`
//! Detected by `owned_by: "llamacpp"` in `GET /v1/models` ([`EngineKind::LlamaServer`]). It
//! takes `top_k` (sent always, 0 = off) and `seed`, and is given the sampler chain
//! (`samplers: ["temperature", "top_k", "top_p"]`) so that its default min-p and top-k
//! do not apply. It does not echo prompt log-probabilities, so it cannot be a remote
//! scorer ([`RemoteError::Unsupported`]). All requests of a step are in flight together
//! and its slots decode them in one batch. Reproducibility (measured with the build of
//! `scripts/install-llama-cpp-server`): a sample for a given seed depends on the slot's
//! prompt cache (what it evaluated before) and on which requests share a batch; one
//! request at a time with `--no-cache-prompt` repeats exactly, so a search is
//! reproducible on `llama-server --parallel 1 --no-cache-prompt`, and not with several
//! slots serving a step's requests together (nor, in general, with the prompt cache on).
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
mod reply;
mod retry;
mod scorer;
mod tokens;

pub use endpoint::{is_remote, Api, Endpoint, EngineKind, RemoteSpec, ScoreApi};
pub use error::RemoteError;
pub use proposer::RemoteProposer;
pub use retry::RetryPolicy;
pub use scorer::RemoteScorer;
