//! # w2s-llama: the llama.cpp backend of w2s
//!
//! Runs GGUF models on llama.cpp (CPU by default; CUDA with the `cuda` feature):
//! - [`LlamaProposer`], the strong model: all live rows of a step are sampled in one
//!   batched decode; the prompt is encoded once and shared by every row; beams are
//!   reordered by copying KV-cache sequences, never by re-encoding.
//! - [`LlamaScorer`], a small model: scores each beam incrementally from its own KV cache,
//!   re-evaluating only from the first token whose id changed.
//! - [`LlamaTwinGuide`], a prompt-steered guide pair (one model file read under a tuned
//!   and an untuned template) as one [`w2s_core::Guide`]: both halves' rows on one
//!   context, their new tokens scored in one decode per call instead of two scorers'
//!   two.
//!
//! - [`LlamaProposerPool`], the strong model for several searches at once (driven by
//!   [`w2s_core::search_many`]): their rows on one context, sampled in one decode per token.
//! - [`ProxyTuner`], emulated fine-tuning (EFT): the strong model's logits moved by a tuned
//!   / untuned pair's difference at every token.
//! - The judges of the evaluation harness: [`Judge`] (a rubric score) and [`PairJudge`]
//!   (which of two answers is better, with the letters' probabilities).
//! - [`PlainModel`], plain completions for the server's non-search requests; the bench's
//!   raw batched sampling loop ([`raw_batch_sample`]); [`requantize`] (GGUF weight types) and
//!   [`fast_guide`] (a guide in a type with no fast CPU kernel scored through a Q8_0 copy);
//!   [`split_response`] (where a response starts in a joint tokenisation).
//!
//! The strong model and the small pair may use different tokenizers: text is handed over,
//! never token ids, and never split inside a UTF-8 character.
//!
//! ```no_run
//! use w2s_core::{search, Method, Models, PromptTemplate, SamplingParams, SearchConfig};
//! use w2s_llama::{resolve_model, LlamaProposer, LlamaScorer, LoadOptions, Model};
//!
//! let load = |name: &str| Model::load(&resolve_model(name), LoadOptions::default());
//! let (strong, small) = (load("gemma-3-270m")?, load("smollm2-135m-instruct")?);
//! let mut proposer = LlamaProposer::new(
//!     strong, PromptTemplate::new("Here is a movie review from imdb: {prompt}")?, 2);
//! let mut tuned = LlamaScorer::new(small.clone(),
//!     PromptTemplate::new("chat:Write a very positive movie review.||{prompt}")?, 2);
//! let mut untuned = LlamaScorer::new(small, PromptTemplate::bare(), 2);
//! let config = SearchConfig::new(Method::Cbs { w: 4, k: 4, l: 5 }, 50, 1.0, 1,
//!     SamplingParams::default(), vec![])?;
//! let out = search(&config, "I rented this movie last weekend and",
//!     Models { strong: &mut proposer, tuned: &mut tuned, untuned: &mut untuned })?;
//! println!("{} (guide value {:.2})", out.best().text, out.best().score);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod boundary;
mod chat;
mod eft;
mod error;
mod incremental;
mod judge;
mod model;
mod pairwise;
mod plain;
mod pool;
mod quantize;
mod raw;
mod scorer;
mod seqs;
mod strong;
mod threads;
mod twin;

use std::path::PathBuf;

pub use boundary::split_response;
pub use chat::{render_chat, Message};
pub use eft::{same_vocabulary, EftOutput, ProxyTuner};
pub use error::LlamaError;
pub use incremental::ScorerProfile;
pub use judge::{Judge, Rubric};
pub use model::{LoadOptions, Model};
pub use pairwise::{letter_probs, PairJudge, Verdict};
pub use plain::{EchoToken, PlainChoice, PlainModel, PlainSampling};
pub use pool::{templated_prompt_tokens, LlamaProposerPool};
pub use quantize::{fast_guide, guide_file, requantize, slow_weight_type, WeightType};
pub use raw::{raw_batch_sample, RawBatch, RawRun};
pub use scorer::{score_once, LlamaScorer};
pub use strong::{LlamaProposer, MAX_SEQUENCES};
pub use threads::release_cpu_threads;
pub use twin::{LlamaTwinGuide, MAX_TWIN_ROWS, TWIN_BATCH};

/// Models that `scripts/fetch-models` provides, by name.
pub const KNOWN_MODELS: &[&str] = &[
    "smollm2-135m-instruct",
    "gemma-3-270m",
    "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-coder-1.5b-instruct",
];

/// Where fetched models live: `$W2S_MODELS`, else `$HOME/.cache/w2s/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("W2S_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/w2s/models")
}

/// A model argument: a bare name of [`KNOWN_MODELS`] (or any name without a path
/// separator or `.gguf` ending) means `models_dir()/NAME.gguf`; anything else is a path.
pub fn resolve_model(spec: &str) -> PathBuf {
    let is_path = spec.contains('/') || spec.contains('\\') || spec.ends_with(".gguf");
    if is_path || std::path::Path::new(spec).exists() {
        PathBuf::from(spec)
    } else {
        models_dir().join(format!("{spec}.gguf"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_resolve_to_the_cache() {
        let p = resolve_model("gemma-3-270m");
        assert!(p.ends_with("gemma-3-270m.gguf"), "{p:?}");
        assert_eq!(resolve_model("./m.gguf"), PathBuf::from("./m.gguf"));
        assert_eq!(resolve_model("/x/y"), PathBuf::from("/x/y"));
    }
}
