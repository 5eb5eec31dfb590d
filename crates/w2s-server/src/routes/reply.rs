//! The pieces of a search's answer shared by the full, the streamed and the plain
//! replies: the response id, the `w2s` object, the ignored-fields header.

use std::sync::atomic::Ordering;

use axum::response::Response;
use serde_json::{json, Value};
use w2s_core::Beam;

use super::finish_reason;
use crate::api::{CheckedRequest, Endpoint};
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

fn beam_json(b: &Beam) -> Value {
    json!({"text": b.text, "score": b.score, "tuned_logprob": b.tuned_logprob,
           "untuned_logprob": b.untuned_logprob, "finish_reason": finish_reason(b.finish),
           "strong_tokens": b.strong_tokens})
}

/// The `w2s` object of a response: the search that ran, and its beams if asked for.
/// With `logprobs`, the guide's log-probabilities of each returned choice, and why the
/// strong model's are missing if they are.
pub(super) fn w2s_json(req: &CheckedRequest, fin: &Finished) -> Value {
    let st = &fin.output.stats;
    let mut v = json!({"method": req.config.method().to_string(), "seed": req.config.seed(),
                       "score": fin.output.best().score,
                       "timings": {"strong_s": st.strong_time.as_secs_f64(), "tuned_s": st.tuned_time.as_secs_f64(),
                                   "untuned_s": st.untuned_time.as_secs_f64(), "total_s": st.total_time.as_secs_f64()}});
    if req.return_beams {
        v["beams"] = Value::Array(fin.output.beams.iter().map(beam_json).collect());
    }
    if let Some(trace) = &fin.output.trace {
        v["trace"] = serde_json::to_value(trace).unwrap_or(Value::Null);
    }
    if req.logprobs {
        v["logprobs"] = fin.output.beams.iter().take(req.n).map(|b| {
            json!({"score": b.score, "tuned_logprob": b.tuned_logprob, "untuned_logprob": b.untuned_logprob})
        }).collect();
        if let Some(Err(why)) = &fin.strong_logprobs {
            v["logprobs_unavailable"] = json!(crate::error::truncate(why, 300));
        }
    }
    v
}
