//! `POST /v1/completions` and `POST /v1/chat/completions`: search requests, answered
//! whole or (with `stream`) as server-sent events. A completion body naming one of the
//! loaded models goes to that model plainly instead.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use w2s_core::Beam;

use super::plain;
use super::{
    accepting, check_prompt, created, failure_error, finish_reason, read_body, stream, submit,
    InFlight,
};
use crate::api::PLAIN_MODELS;
use crate::api::{self, CheckedRequest, Endpoint};
use crate::error::ApiError;
use crate::worker::{Event, Failure, Finished, Outcome, Work};
use crate::App;

pub(super) async fn completions(State(app): State<Arc<App>>, body: Body) -> Response {
    handle(app, Endpoint::Completions, body).await
}

pub(super) async fn chat(State(app): State<Arc<App>>, body: Body) -> Response {
    handle(app, Endpoint::Chat, body).await
}

async fn handle(app: Arc<App>, endpoint: Endpoint, body: Body) -> Response {
    let in_flight = InFlight::new(&app.metrics);
    match start(&app, endpoint, body, in_flight).await {
        Ok(resp) => resp,
        Err(e) => {
            app.metrics.request(e.status.as_u16(), e.metric_kind());
            e.into_response()
        }
    }
}

async fn start(
    app: &Arc<App>,
    endpoint: Endpoint,
    body: Body,
    in_flight: InFlight,
) -> Result<Response, ApiError> {
    let info = accepting(app)?;
    let bytes = read_body(body, app.cfg.max_body_bytes).await?;
    let seed = app
        .next_seed
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst);
    if endpoint == Endpoint::Completions {
        let plain_role =
            api::model_of(&bytes).and_then(|m| PLAIN_MODELS.iter().position(|p| *p == m));
        if let Some(role) = plain_role {
            let req = api::parse_plain(&bytes, role, &app.cfg.policy, seed)?;
            return plain::answer(app, info.clone(), req, in_flight).await;
        }
    }
    let req = api::parse(&bytes, endpoint, &app.cfg.policy, seed)?;
    if req.model != app.cfg.model_name {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "no model `{}` here; this server serves `{}`",
                crate::error::truncate(&req.model, 64),
                app.cfg.model_name
            ),
        );
        e.param = Some("model".into());
        return Err(e);
    }
    let param = if endpoint == Endpoint::Chat {
        "messages"
    } else {
        "prompt"
    };
    let (prompt, max_tokens) = (req.prompt.clone(), req.config.max_new_tokens());
    let info = info.clone();
    check_prompt(param, move || {
        info.check_prompt(&prompt, max_tokens).map(|_| ())
    })
    .await?;
    let (rx, guard) = submit(app, Work::Search(req.clone()), req.cost(), in_flight)?;
    let started = Instant::now();
    if req.stream {
        app.metrics.request(200, "ok");
        return Ok(stream::response(app.clone(), req, rx, guard, started));
    }
    let mut rx = rx;
    let mut guard = guard;
    let mut first = false;
    loop {
        match rx.recv().await {
            Some(Event::Settled(_)) => {
                if !first {
                    first = true;
                    app.metrics.first_token(started.elapsed());
                }
            }
            Some(Event::Done(result)) => {
                guard.done = true;
                if !first {
                    app.metrics.first_token(started.elapsed());
                }
                let Outcome::Search(fin) = result.map_err(failure_error)? else {
                    return Err(failure_error(Failure::Internal("unexpected answer".into())));
                };
                app.metrics.request(200, "ok");
                return Ok(Json(full_body(app, &req, &fin)).into_response());
            }
            None => {
                guard.done = true;
                return Err(failure_error(Failure::Internal(
                    "the model worker stopped".into(),
                )));
            }
        }
    }
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
pub(super) fn w2s_json(req: &CheckedRequest, fin: &Finished) -> Value {
    let mut v = json!({"method": req.config.method().to_string(), "seed": req.config.seed(),
                       "score": fin.output.best().score});
    if req.return_beams {
        v["beams"] = Value::Array(fin.output.beams.iter().map(beam_json).collect());
    }
    v
}

fn full_body(app: &App, req: &CheckedRequest, fin: &Finished) -> Value {
    let beams: Vec<&Beam> = fin.output.beams.iter().take(req.n).collect();
    let s = &fin.output.stats;
    let completion: usize = beams.iter().map(|b| b.strong_tokens).sum();
    let choices: Vec<Value> = beams.iter().enumerate().map(|(i, b)| match req.endpoint {
        Endpoint::Completions => json!({"index": i, "text": b.text, "logprobs": null, "finish_reason": finish_reason(b.finish)}),
        Endpoint::Chat => json!({"index": i, "message": {"role": "assistant", "content": b.text},
                                 "logprobs": null, "finish_reason": finish_reason(b.finish)}),
    }).collect();
    json!({
        "id": id(app, req),
        "object": if req.endpoint == Endpoint::Chat { "chat.completion" } else { "text_completion" },
        "created": created(app),
        "model": app.cfg.model_name,
        "choices": choices,
        "usage": {
            "prompt_tokens": fin.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": fin.prompt_tokens + completion,
            "strong_tokens_sampled": s.strong_tokens_sampled,
            "guide_tokens_scored": s.tuned_tokens_evaluated + s.untuned_tokens_evaluated,
        },
        "w2s": w2s_json(req, fin),
    })
}
