//! The pieces of a search's answer shared by the full, the streamed and the plain
//! replies: the response id, the `w2s` object and usage, the ignored-fields header.

use std::sync::atomic::Ordering;

use axum::response::Response;
use serde_json::Value;

use crate::api::{CheckedRequest, Endpoint};
use crate::openai::{BeamFacts, GuideLogprobs, SearchFacts, Timings, Usage, W2s};
use crate::worker::Finished;
use crate::App;

/// The `x-w2s-ignored-fields` header: the ignored names, comma-separated, each cut to
/// 64 visible ASCII characters, at most 32 of them.
pub(super) fn with_ignored(mut resp: Response, ignored: &[String]) -> Response {
    if ignored.is_empty() {
        return resp;
    }
    let shown: Vec<String> = ignored
        .iter()
        .take(32)
        .map(|n| {
            n.chars()
                .take(64)
                .map(|c| {
                    if c.is_ascii_graphic() && c != ',' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect()
        })
        .collect();
    let mut value = shown.join(", ");
    if ignored.len() > shown.len() {
        value.push_str(&format!(", +{} more", ignored.len() - shown.len()));
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
        resp.headers_mut().insert("x-w2s-ignored-fields", v);
    }
    resp
}

/// A fresh response id (`cmpl-…` or `chatcmpl-…`).
pub(super) fn id(app: &App, req: &CheckedRequest) -> String {
    let prefix = if req.endpoint == Endpoint::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!(
        "{prefix}-w2s-{:x}",
        app.next_seed.fetch_add(1, Ordering::SeqCst)
    )
}

/// The facts of one search for the `w2s` object: the search that ran, and its beams if
/// asked for. With `logprobs`, the guide's log-probabilities of each returned choice, and
/// why the strong model's are missing if they are.
pub(super) fn search_facts(req: &CheckedRequest, fin: &Finished) -> SearchFacts {
    let beams = &fin.output.beams;
    let unavailable = match &fin.strong_logprobs {
        Some(Err(why)) if req.logprobs => Some(crate::error::truncate(why, 300)),
        _ => None,
    };
    SearchFacts {
        beams: req
            .return_beams
            .then(|| beams.iter().map(BeamFacts::from).collect()),
        logprobs: req
            .logprobs
            .then(|| beams.iter().take(req.n).map(GuideLogprobs::from).collect()),
        logprobs_unavailable: unavailable,
        method: req.config.method().to_string(),
        score: fin.output.best().score,
        seed: req.config.seed(),
        timings: Timings::from(&fin.output.stats),
        trace: fin
            .output
            .trace
            .as_ref()
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null)),
    }
}

/// The `w2s` object of a whole answer: one search's facts, or each prompt's.
pub(super) fn w2s_object(req: &CheckedRequest, done: &[Finished]) -> W2s {
    match done {
        [one] => W2s::One(Box::new(search_facts(req, one))),
        many => W2s::Many {
            method: req.config.method().to_string(),
            results: many.iter().map(|f| search_facts(req, f)).collect(),
            seed: req.config.seed(),
        },
    }
}

/// The usage of searches whose choices hold `completion` tokens: their prompts, and the
/// work of the searches behind them.
pub(super) fn search_usage(done: &[Finished], completion: usize) -> Usage {
    let (mut prompt, mut sampled, mut scored) = (0, 0, 0);
    for fin in done {
        let s = &fin.output.stats;
        prompt += fin.prompt_tokens;
        sampled += s.strong_tokens_sampled;
        scored += s.tuned_tokens_evaluated + s.untuned_tokens_evaluated;
    }
    Usage {
        completion_tokens: completion,
        guide_tokens_scored: Some(scored),
        prompt_tokens: prompt,
        strong_tokens_sampled: Some(sampled),
        total_tokens: prompt + completion,
    }
}
