//! The streamed answer to a search request: server-sent events in the OpenAI chunk
//! shape, ending with `[DONE]`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Serialize;

use super::reply::{id, search_facts, search_usage};
use super::{created, failure_error, Guard};
use crate::api::{CheckedRequest, Endpoint};
use crate::openai::{
    finish_reason, ChatChunkChoice, ChatDelta, CompletionChunk, TextChoice, Usage, W2s,
};
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

/// A chunk with one choice: `delta` is the new text, `finish` ends the stream's choice,
/// with the search's facts and (unless it comes alone in a last chunk) its usage.
fn chunk(
    st: &StreamState,
    delta: &str,
    finish: Option<&'static str>,
    usage: Option<Usage>,
    w2s: Option<W2s>,
) -> SseEvent {
    match st.req.endpoint {
        Endpoint::Completions => {
            let choice = TextChoice {
                finish_reason: finish,
                index: 0,
                logprobs: None,
                text: delta.to_string(),
            };
            event(&chunk_of(st, vec![choice], usage, w2s))
        }
        Endpoint::Chat => {
            let choice = ChatChunkChoice {
                delta: ChatDelta {
                    content: (!st.first || !delta.is_empty()).then(|| delta.to_string()),
                    role: (!st.first).then_some("assistant"),
                },
                finish_reason: finish,
                index: 0,
                logprobs: (),
            };
            event(&chunk_of(st, vec![choice], usage, w2s))
        }
    }
}

/// The last chunk of `stream_options.include_usage`: no choices, the usage.
fn usage_chunk(st: &StreamState, usage: Usage) -> SseEvent {
    event(&chunk_of::<TextChoice>(st, Vec::new(), Some(usage), None))
}

fn chunk_of<C>(
    st: &StreamState,
    choices: Vec<C>,
    usage: Option<Usage>,
    w2s: Option<W2s>,
) -> CompletionChunk<C> {
    let object = match st.req.endpoint {
        Endpoint::Chat => "chat.completion.chunk",
        Endpoint::Completions => "text_completion",
    };
    CompletionChunk {
        choices,
        created: created(&st.app),
        id: st.id.clone(),
        model: st.app.cfg.model_name.clone(),
        object,
        usage,
        w2s,
    }
}

/// A server-sent event carrying `body` as JSON.
fn event(body: &impl Serialize) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(body).unwrap_or_default())
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
                    let e = chunk(&st, &delta, None, None, None);
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
                    evs.push(chunk(&st, rest, None, None, None));
                    st.first = true;
                }
                let usage = search_usage(std::slice::from_ref(&fin), best.strong_tokens);
                // With `include_usage` the usage comes alone in a last chunk with no
                // choices, as OpenAI sends it; otherwise it rides on the finish chunk.
                let w2s = W2s::One(Box::new(search_facts(&st.req, &fin)));
                evs.push(chunk(
                    &st,
                    "",
                    Some(finish_reason(best.finish)),
                    (!st.req.include_usage).then_some(usage),
                    Some(w2s),
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
                vec![event(&e.body()), SseEvent::default().data("[DONE]")]
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
