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
use tokio::sync::mpsc::UnboundedReceiver;

use super::plain;
use super::reply::{id, search_usage, w2s_object, with_ignored};
use super::{
    accepting, check_prompt, created, failure_error, read_body, stream, submit_all, Cost, InFlight,
};
use crate::api::PLAIN_MODELS;
use crate::api::{self, CheckedRequest, Endpoint};
use crate::error::ApiError;
use crate::openai::{
    finish_reason, ChatChoice, ChatLogprobs, ChatMessage, Completion, TextChoice, TextLogprobs,
    Usage,
};
use crate::worker::{Event, Failure, Finished, ModelInfo, Outcome, SearchWork, Work};
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
    let bytes = read_body(body, app.cfg.max_body_bytes, app.cfg.body_timeout).await?;
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
    served_here(app, &req)?;
    let req = Arc::new(req);
    let prompt_cost = prompt_cost(app, info, &req).await?;
    note_ignored(app, &req.ignored);
    let works = (0..req.prompts.len())
        .map(|index| {
            Work::Search(SearchWork {
                req: req.clone(),
                index,
            })
        })
        .collect();
    // Admission charges the prompt work of every local model too.
    let cost = Cost {
        sampling: req.cost(),
        prompt: prompt_cost,
    };
    let (mut rxs, mut guard) = submit_all(app, works, cost, in_flight)?;
    let started = Instant::now();
    if req.stream {
        app.metrics.request(200, "ok");
        let resp = stream::response(app.clone(), req.clone(), rxs.remove(0), guard, started);
        return Ok(with_ignored(resp, &req.ignored));
    }
    let done = collect(app, rxs, started).await?;
    guard.done = true;
    app.metrics.request(200, "ok");
    let resp = full_reply(app, &req, &done);
    Ok(with_ignored(resp, &req.ignored))
}

/// A 404 unless the request names the model this server serves.
fn served_here(app: &App, req: &CheckedRequest) -> Result<(), ApiError> {
    if req.model == app.cfg.model_name {
        return Ok(());
    }
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
    Err(e)
}

/// Tokenizes each prompt (off the async threads), refusing one over the server's token
/// limit; the prompt work of every local model, for admission.
async fn prompt_cost(
    app: &App,
    info: &ModelInfo,
    req: &Arc<CheckedRequest>,
) -> Result<u64, ApiError> {
    let param = if req.endpoint == Endpoint::Chat {
        "messages"
    } else {
        "prompt"
    };
    let max_tokens = req.config.max_new_tokens();
    let (checked, info) = (req.clone(), info.clone());
    let cap = app.cfg.max_prompt_tokens;
    check_prompt(param, move || {
        let many = checked.prompts.len() > 1;
        let mut cost = 0u64;
        for (i, p) in checked.prompts.iter().enumerate() {
            let which = |m: String| if many { format!("prompt[{i}]: {m}") } else { m };
            let tokens = info
                .check_prompt(
                    &checked.history,
                    p,
                    max_tokens,
                    checked.endpoint == Endpoint::Chat,
                )
                .map_err(which)?;
            if tokens.largest > cap {
                return Err(which(format!(
                    "the prompt is {} tokens; this server takes prompts of at most {cap} tokens",
                    tokens.largest
                )));
            }
            cost += tokens.local_total as u64;
        }
        Ok(cost)
    })
    .await
}

/// Waits for each prompt's search to finish, in prompt order, noting the time to the
/// first settled text.
async fn collect(
    app: &App,
    rxs: Vec<UnboundedReceiver<Event>>,
    started: Instant,
) -> Result<Vec<Finished>, ApiError> {
    let mut first = false;
    let mut done = Vec::with_capacity(rxs.len());
    for mut rx in rxs {
        loop {
            match rx.recv().await {
                Some(Event::Settled(_)) => {
                    if !first {
                        first = true;
                        app.metrics.first_token(started.elapsed());
                    }
                }
                Some(Event::Done(result)) => {
                    let Outcome::Search(fin) = result.map_err(|f| failure_error(app, f))? else {
                        return Err(failure_error(
                            app,
                            Failure::Internal("unexpected answer".into()),
                        ));
                    };
                    done.push(fin);
                    break;
                }
                None => {
                    return Err(failure_error(
                        app,
                        Failure::Internal("the model worker stopped".into()),
                    ));
                }
            }
        }
    }
    if !first {
        app.metrics.first_token(started.elapsed());
    }
    Ok(done)
}

/// Logs each ignored field name the first time it is seen (up to a bound, so that a
/// client inventing names cannot grow the set without end).
fn note_ignored(app: &App, ignored: &[String]) {
    if ignored.is_empty() {
        return;
    }
    let mut seen = app.ignored_seen.lock().unwrap_or_else(|p| p.into_inner());
    for name in ignored {
        if seen.len() < 256 && seen.insert(name.clone()) {
            tracing::info!(field = %crate::error::truncate(name, 64), "ignoring an unknown request field (listed in x-w2s-ignored-fields)");
        }
    }
}

/// The whole answer: the best `n` beams of each prompt's search, in prompt order.
fn full_reply(app: &App, req: &CheckedRequest, done: &[Finished]) -> Response {
    let mut completion = 0;
    let (mut text, mut chat) = (Vec::new(), Vec::new());
    for (p, fin) in done.iter().enumerate() {
        for (j, b) in fin.output.beams.iter().take(req.n).enumerate() {
            completion += b.strong_tokens;
            let index = p * req.n + j;
            let tokens = match &fin.strong_logprobs {
                Some(Ok(all)) => all.get(j).map(Vec::as_slice),
                _ => None,
            };
            let finish = finish_reason(b.finish);
            match req.endpoint {
                Endpoint::Completions => text.push(TextChoice {
                    finish_reason: Some(finish),
                    index,
                    logprobs: tokens.map(|t| TextLogprobs::new(t, 0)),
                    text: b.text.clone(),
                }),
                Endpoint::Chat => chat.push(ChatChoice {
                    finish_reason: finish,
                    index,
                    logprobs: tokens.map(ChatLogprobs::new),
                    message: ChatMessage {
                        content: b.text.clone(),
                        role: "assistant",
                    },
                }),
            }
        }
    }
    let usage = search_usage(done, completion);
    match req.endpoint {
        Endpoint::Completions => Json(completion_of(
            app,
            req,
            "text_completion",
            text,
            usage,
            done,
        ))
        .into_response(),
        Endpoint::Chat => Json(completion_of(
            app,
            req,
            "chat.completion",
            chat,
            usage,
            done,
        ))
        .into_response(),
    }
}

fn completion_of<C>(
    app: &App,
    req: &CheckedRequest,
    object: &'static str,
    choices: Vec<C>,
    usage: Usage,
    done: &[Finished],
) -> Completion<C> {
    Completion {
        choices,
        created: created(app),
        id: id(app, req),
        model: app.cfg.model_name.clone(),
        object,
        usage,
        w2s: Some(w2s_object(req, done)),
    }
}
