//! HTTP routes: the OpenAI endpoints, models, health, metrics; bearer-key checks.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use w2s_core::{Beam, Finish};

use crate::admission::Permit;
use crate::api::PlainRequest;
use crate::api::{self, CheckedRequest, Endpoint};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::worker::{Event, Failure, Finished, Job, ModelInfo, Outcome, Work};
use crate::App;

/// The loaded models, served plainly on `/v1/completions` by role.
pub(crate) const PLAIN_MODELS: [&str; 3] = ["strong", "tuned", "untuned"];

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .with_state(app)
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.cfg.api_key {
        if req.uri().path() != "/health" && !bearer_matches(req.headers(), key) {
            let mut e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                "missing or wrong API key: send `Authorization: Bearer KEY`",
            );
            e.param = None;
            app.metrics.request(401, e.metric_kind());
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Compares the bearer key in constant time (for keys of the same length).
fn bearer_matches(headers: &HeaderMap, key: &str) -> bool {
    let Some(given) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), key.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, kb) in b.iter().enumerate() {
        diff |= (a.get(i).copied().unwrap_or(0) ^ kb) as usize;
    }
    diff == 0
}

async fn not_found(State(app): State<Arc<App>>) -> Response {
    app.metrics.request(404, "not_found");
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        "no such route",
    )
    .into_response()
}

async fn models(State(app): State<Arc<App>>) -> Response {
    app.metrics.request(200, "ok");
    Json(json!({
        "object": "list",
        "data": std::iter::once(app.cfg.model_name.as_str()).chain(PLAIN_MODELS)
            .map(|id| json!({"id": id, "object": "model", "created": app.started_unix, "owned_by": "w2s"}))
            .collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let status = if app.shutting_down.load(Ordering::SeqCst) {
        "shutting_down"
    } else if app.worker.dead.load(Ordering::SeqCst) {
        "dead"
    } else if !app.worker.ready.load(Ordering::SeqCst) {
        "loading"
    } else if app
        .worker
        .stalled_for()
        .is_some_and(|d| d > app.cfg.watchdog)
    {
        "stalled"
    } else if !upstreams_up(&app).await {
        "upstream_down"
    } else {
        "ok"
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"status": status}))).into_response()
}

/// Whether every remote engine answers `GET /v1/models` (probed at most every two
/// seconds per engine).
async fn upstreams_up(app: &App) -> bool {
    let mut all = true;
    for u in &app.upstreams {
        let cached = *u.last.lock().unwrap_or_else(|p| p.into_inner());
        let up = match cached {
            Some((at, up)) if at.elapsed() < Duration::from_secs(2) => up,
            _ => {
                let mut req = app.http.get(&u.models_url);
                if let Some(k) = &u.api_key {
                    req = req.bearer_auth(k);
                }
                let up = matches!(req.send().await, Ok(r) if r.status().is_success());
                *u.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), up));
                up
            }
        };
        all &= up;
    }
    all
}

async fn completions(State(app): State<Arc<App>>, body: Body) -> Response {
    handle(app, Endpoint::Completions, body).await
}

async fn chat(State(app): State<Arc<App>>, body: Body) -> Response {
    handle(app, Endpoint::Chat, body).await
}

/// Counts an HTTP request in flight while alive.
struct InFlight(Arc<Metrics>);

impl InFlight {
    fn new(m: &Arc<Metrics>) -> Self {
        m.in_flight_requests.fetch_add(1, Ordering::SeqCst);
        InFlight(m.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight_requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs a prompt check (tokenising: CPU work) on a blocking thread; its error is a 400
/// on `param`.
async fn check_prompt(
    param: &'static str,
    check: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), ApiError> {
    tokio::task::spawn_blocking(check)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal",
                "prompt check failed",
            )
        })?
        .map_err(|m| ApiError::invalid(param, m))
}

/// Admits `work` of `cost` (W*K*max_tokens) and queues it for the model worker: 400 if it
/// can never fit, 429 with Retry-After while the queue is full. The guard cancels the work
/// and frees its share when dropped before the answer.
fn submit(
    app: &Arc<App>,
    work: Work,
    cost: u64,
    in_flight: InFlight,
) -> Result<(tokio::sync::mpsc::UnboundedReceiver<Event>, Guard), ApiError> {
    let capacity = app.admission.capacity();
    if cost > capacity {
        return Err(ApiError::invalid("max_tokens", format!(
            "this request costs {cost} (rows x max_tokens), more than the server's queue capacity {capacity}; lower W, K, n or max_tokens")));
    }
    let Some(permit) = app.admission.try_admit(cost) else {
        let backlog = app.admission.used() as f64;
        let rate = app.metrics.strong_tokens_per_s().max(1.0);
        let secs = (backlog / rate).ceil().clamp(1.0, 600.0) as u64;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "queue_full",
            "the server's queue is full; retry after the time in Retry-After",
        )
        .retry_after(secs));
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut guard = Guard {
        cancel: cancel.clone(),
        metrics: app.metrics.clone(),
        done: false,
        _permit: permit,
        _in_flight: in_flight,
    };
    let job = Job {
        work,
        events: tx,
        cancel,
        deadline: Instant::now() + app.cfg.deadline,
    };
    if !app.queue.push(job) {
        guard.done = true;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "worker_down",
            "the model worker is down",
        ));
    }
    Ok((rx, guard))
}

/// Holds a request's queue share; cancels its search if dropped before the answer.
struct Guard {
    cancel: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    done: bool,
    _permit: Permit,
    _in_flight: InFlight,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.cancel.store(true, Ordering::SeqCst);
            self.metrics.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
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
    if app.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "shutting_down",
            "the server is shutting down",
        )
        .retry_after(5));
    }
    let (Some(info), true) = (app.info.get(), app.worker.ready.load(Ordering::SeqCst)) else {
        let dead = app.worker.dead.load(Ordering::SeqCst);
        let msg = if dead {
            "the model worker is down"
        } else {
            "the models are still loading; retry shortly"
        };
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "not_ready",
            msg,
        )
        .retry_after(5));
    };
    let bytes = read_body(body, app.cfg.max_body_bytes).await?;
    let seed = app
        .next_seed
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst);
    if endpoint == Endpoint::Completions {
        let plain_role =
            api::model_of(&bytes).and_then(|m| PLAIN_MODELS.iter().position(|p| *p == m));
        if let Some(role) = plain_role {
            let req = api::parse_plain(&bytes, role, &app.cfg.policy, seed)?;
            return plain(app, info.clone(), req, in_flight).await;
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
        return Ok(stream_response(app.clone(), req, rx, guard, started));
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

/// Reads the body up to `limit` bytes. A larger body is read on and discarded (up to
/// 8 x the limit) before the 413 is sent, so that a client still writing its body gets
/// the answer instead of a reset connection.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    };
    let bad = |_| ApiError::invalid("", "the request body could not be read");
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(bad)?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > limit.saturating_mul(8) {
                break;
            }
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}

fn failure_error(f: Failure) -> ApiError {
    match f {
        Failure::Input(m) => ApiError::invalid("prompt", m),
        Failure::Deadline => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", "deadline_exceeded",
            "the search did not finish within the server's per-request deadline; lower max_tokens or W*K"),
        Failure::Cancelled => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "cancelled", "the request was cancelled"),
        Failure::Panic => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal", "the search failed unexpectedly; the server goes on"),
        Failure::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal", m),
        Failure::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, "server_error", "upstream_failed", m),
    }
}

fn created(_app: &App) -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Eos | Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn id(app: &App, req: &CheckedRequest) -> String {
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

fn w2s_json(req: &CheckedRequest, fin: &Finished) -> Value {
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

struct StreamState {
    app: Arc<App>,
    req: CheckedRequest,
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

/// Streams the text every surviving beam shares as soon as it is settled, then the rest
/// of the best beam when the search ends, then `[DONE]`.
fn stream_response(
    app: Arc<App>,
    req: CheckedRequest,
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
                let extra = json!({"usage": {"prompt_tokens": fin.prompt_tokens, "completion_tokens": best.strong_tokens,
                    "total_tokens": fin.prompt_tokens + best.strong_tokens, "strong_tokens_sampled": s.strong_tokens_sampled,
                    "guide_tokens_scored": s.tuned_tokens_evaluated + s.untuned_tokens_evaluated},
                    "w2s": w2s_json(&st.req, &fin)});
                evs.push(chunk(
                    &st,
                    "",
                    Some(finish_reason(best.finish)),
                    Some(extra),
                ));
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
                let e = failure_error(f);
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

/// A plain request to one loaded model: sampling, or echo with log-probabilities.
async fn plain(
    app: &Arc<App>,
    info: ModelInfo,
    req: PlainRequest,
    in_flight: InFlight,
) -> Result<Response, ApiError> {
    let Some(model) = info.plain.get(req.role).cloned().flatten() else {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "the {} model runs on a remote engine, not in this server; send plain requests to that engine",
                PLAIN_MODELS[req.role.min(2)]
            ),
        );
        e.param = Some("model".into());
        return Err(e);
    };
    let (prompt, max_tokens) = (req.prompt.clone(), req.max_tokens);
    check_prompt("prompt", move || {
        let n = model.tokenize_prompt(&prompt).len();
        model.check_fits(n, max_tokens).map_err(|e| e.to_string())
    })
    .await?;
    let (mut rx, mut guard) = submit(app, Work::Plain(req.clone()), req.cost(), in_flight)?;
    let outcome = loop {
        match rx.recv().await {
            Some(Event::Done(r)) => break r,
            Some(Event::Settled(_)) => continue,
            None => break Err(Failure::Internal("the model worker stopped".into())),
        }
    };
    guard.done = true;
    let body = plain_body(app, &req, outcome.map_err(failure_error)?)?;
    app.metrics.request(200, "ok");
    Ok(Json(body).into_response())
}

fn plain_body(app: &App, req: &PlainRequest, outcome: Outcome) -> Result<Value, ApiError> {
    let id = format!(
        "cmpl-w2s-{:x}",
        app.next_seed.fetch_add(1, Ordering::SeqCst)
    );
    let (choices, prompt_tokens, completion) = match outcome {
        Outcome::Echo {
            text,
            tokens,
            prompt_tokens,
        } => {
            let completion = tokens.len().saturating_sub(prompt_tokens);
            let logprobs = json!({
                "tokens": tokens.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
                "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "text_offset": tokens.iter().map(|t| t.offset).collect::<Vec<_>>(),
                "top_logprobs": null,
            });
            (
                vec![
                    json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}),
                ],
                prompt_tokens,
                completion,
            )
        }
        Outcome::Samples {
            choices,
            prompt_tokens,
        } => {
            let completion: usize = choices.iter().map(|c| c.n_tokens).sum();
            let out = choices.iter().enumerate().map(|(i, c)| {
                let logprobs = if req.logprobs {
                    let mut offset = req.prompt.len();
                    let offsets: Vec<usize> = c.tokens.iter().map(|(t, _)| { let o = offset; offset += t.len(); o }).collect();
                    json!({"tokens": c.tokens.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
                           "token_logprobs": c.tokens.iter().map(|(_, lp)| *lp).collect::<Vec<_>>(),
                           "text_offset": offsets, "top_logprobs": null})
                } else {
                    Value::Null
                };
                json!({"index": i, "text": c.text, "logprobs": logprobs, "finish_reason": finish_reason(c.finish)})
            }).collect();
            (out, prompt_tokens, completion)
        }
        Outcome::Search(_) => {
            return Err(failure_error(Failure::Internal("unexpected answer".into())))
        }
    };
    Ok(json!({
        "id": id, "object": "text_completion", "created": created(app), "model": PLAIN_MODELS[req.role],
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion},
    }))
}
