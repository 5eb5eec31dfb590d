//! The streamed answer to a search request: server-sent events in the OpenAI chunk
//! shape, ending with `[DONE]`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};

use super::reply::{id, w2s_json};
use super::{created, failure_error, finish_reason, Guard};
use crate::api::{CheckedRequest, Endpoint};
use crate::worker::{Event, Outcome};
use crate::App;

struct StreamState {
    app: Arc<App>,
    req: Arc<CheckedRequest>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    guard: Guard,
    sent: usize,
    started: Instant,
    id: String,
    first: bool,
    ended: bool,
}

fn chunk(st: &StreamState, delta: &str, finish: Option<&str>, extra: Option<Value>) -> SseEvent {
    let choice = match st.req.endpoint {
        Endpoint::Completions => {
            json!({"index": 0, "text": delta, "logprobs": null, "finish_reason": finish})
        }
        Endpoint::Chat => {
            let mut d = json!({});
            if !st.first || !delta.is_empty() {
                d["content"] = json!(delta);
            }
            if !st.first {
                d["role"] = json!("assistant");
            }
            json!({"index": 0, "delta": d, "logprobs": null, "finish_reason": finish})
        }
    };
    let object = if st.req.endpoint == Endpoint::Chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let mut v = json!({"id": st.id, "object": object, "created": created(&st.app),
                       "model": st.app.cfg.model_name, "choices": [choice]});
    if let Some(Value::Object(m)) = extra {
        for (k, val) in m {
            v[k] = val;
        }
    }
    SseEvent::default().data(v.to_string())
}

/// The last chunk of `stream_options.include_usage`: no choices, the usage.
fn usage_chunk(st: &StreamState, usage: Value) -> SseEvent {
    let object = if st.req.endpoint == Endpoint::Chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let v = json!({"id": st.id, "object": object, "created": created(&st.app),
                   "model": st.app.cfg.model_name, "choices": [], "usage": usage});
    SseEvent::default().data(v.to_string())
}

/// Streams the text every surviving beam shares as soon as it is settled, then the rest
/// of the best beam when the search ends, then `[DONE]`.
pub(super) fn response(
    app: Arc<App>,
    req: Arc<CheckedRequest>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    guard: Guard,
    started: Instant,
) -> Response {
    let id = id(&app, &req);
    let st = StreamState {
        app,
        req,
        rx,
        guard,
        sent: 0,
        started,
        id,
        first: false,
        ended: false,
    };
    let events = stream::unfold(st, |mut st| async move {
        if st.ended {
            return None;
        }
        let out: Vec<SseEvent> = match st.rx.recv().await {
            Some(Event::Settled(text)) => {
                let delta = text.get(st.sent..).unwrap_or("").to_string();
                if delta.is_empty() {
                    Vec::new()
                } else {
                    if !st.first {
                        st.app.metrics.first_token(st.started.elapsed());
                    }
                    let e = chunk(&st, &delta, None, None);
                    st.first = true;
                    st.sent = text.len();
                    vec![e]
                }
            }
            Some(Event::Done(Ok(Outcome::Search(fin)))) => {
                st.guard.done = true;
                st.ended = true;
                let best = fin.output.best();
                let rest = if best.text.is_char_boundary(st.sent) {
                    &best.text[st.sent..]
                } else {
                    ""
                };
                let mut evs = Vec::new();
                if !rest.is_empty() || !st.first {
                    if !st.first {
                        st.app.metrics.first_token(st.started.elapsed());
                    }
                    evs.push(chunk(&st, rest, None, None));
                    st.first = true;
                }
                let s = &fin.output.stats;
                let usage = json!({"prompt_tokens": fin.prompt_tokens, "completion_tokens": best.strong_tokens,
                    "total_tokens": fin.prompt_tokens + best.strong_tokens, "strong_tokens_sampled": s.strong_tokens_sampled,
                    "guide_tokens_scored": s.tuned_tokens_evaluated + s.untuned_tokens_evaluated});
                // With `include_usage` the usage comes alone in a last chunk with no
                // choices, as OpenAI sends it; otherwise it rides on the finish chunk.
                let mut extra = json!({"w2s": w2s_json(&st.req, &fin)});
                if !st.req.include_usage {
                    extra["usage"] = usage.clone();
                }
                evs.push(chunk(
                    &st,
                    "",
                    Some(finish_reason(best.finish)),
                    Some(extra),
                ));
                if st.req.include_usage {
                    evs.push(usage_chunk(&st, usage));
                }
                evs.push(SseEvent::default().data("[DONE]"));
                evs
            }
            Some(Event::Done(Ok(_))) => {
                st.guard.done = true;
                st.ended = true;
                vec![SseEvent::default().data("[DONE]")]
            }
            Some(Event::Done(Err(f))) => {
                st.guard.done = true;
                st.ended = true;
                let e = failure_error(&st.app, f);
                st.app.metrics.request(e.status.as_u16(), e.metric_kind());
                vec![
                    SseEvent::default().data(e.body().to_string()),
                    SseEvent::default().data("[DONE]"),
                ]
            }
            None => {
                st.guard.done = true;
                st.ended = true;
                Vec::new()
            }
        };
        Some((stream::iter(out.into_iter().map(Ok::<_, Infallible>)), st))
    });
    let flat: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(futures_util::StreamExt::flatten(events));
    Sse::new(flat)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
