//! What a search gives back: the finished candidates, its counters and timings, and what
//! it reports after each selection.

use std::time::Duration;

use serde::Serialize;

use crate::backend::Finish;
use crate::trace::Trace;

/// One finished candidate, with its guide value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Beam {
    /// The response text (prompt excluded).
    pub text: String,
    /// Guide value: beta * (tuned_logprob - untuned_logprob), or another [`crate::Guide`]'s value.
    pub score: f64,
    /// log pi_tuned(response | prompt), EOS included when the row ended (NaN when the
    /// guide is not the tuned / untuned pair).
    pub tuned_logprob: f64,
    /// log pi_untuned(response | prompt), EOS included when the row ended (NaN when the
    /// guide is not the tuned / untuned pair).
    pub untuned_logprob: f64,
    /// Why it ended.
    pub finish: Finish,
    /// Strong-model tokens in this response.
    pub strong_tokens: usize,
}

/// Counters and timings of one search.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SearchStats {
    /// Strong-model tokens sampled over all rows (the search's main cost).
    pub strong_tokens_sampled: usize,
    /// Chunks (sampling steps) run.
    pub chunks: usize,
    /// Tokens the tuned model evaluated.
    pub tuned_tokens_evaluated: u64,
    /// Tokens the untuned model evaluated.
    pub untuned_tokens_evaluated: u64,
    /// Time in the strong model (prompt encoding included).
    #[serde(serialize_with = "secs")]
    pub strong_time: Duration,
    /// Time in the tuned model.
    #[serde(serialize_with = "secs")]
    pub tuned_time: Duration,
    /// Time in the untuned model.
    #[serde(serialize_with = "secs")]
    pub untuned_time: Duration,
    /// Time in a guide other than the tuned / untuned pair (see [`crate::Guide`]).
    #[serde(serialize_with = "secs", skip_serializing_if = "Duration::is_zero")]
    pub guide_time: Duration,
    /// Wall time of the whole search.
    #[serde(serialize_with = "secs")]
    pub total_time: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The result: every finished row of the final pool, best first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchOutput {
    /// Finished candidates, best guide value first (never empty).
    pub beams: Vec<Beam>,
    /// Counters and timings.
    pub stats: SearchStats,
    /// Every selection step, when asked for ([`crate::SearchConfig::with_trace`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
}

impl SearchOutput {
    /// The best response.
    pub fn best(&self) -> &Beam {
        &self.beams[0]
    }
}

/// What the search reports after each selection.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Chunks done so far.
    pub chunk: usize,
    /// The text every kept beam starts with: it can no longer change.
    pub settled_text: &'a str,
    /// Rows still being extended.
    pub live_rows: usize,
}
