//! HTTP routes: the router, bearer-key checks, and what every model endpoint shares:
//! readiness, body reading, admission and queueing, and the map from a failed job to
//! its HTTP error. The endpoints live in one file each.

mod completions;
mod health;
pub(crate) mod plain;
mod reply;
mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::admission::Permit;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::worker::{Event, Failure, Job, ModelInfo, Reason, Work};
use crate::App;

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/models", get(health::models))
        .route("/metrics", get(health::metrics))
        .route("/health", get(health::health))
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

/// Whether the `Authorization` header carries `key`: the scheme `Bearer` in any case
/// (RFC 9110), then the key's exact bytes (any UTF-8), compared in constant time for keys
/// of the same length.
pub(crate) fn bearer_matches(headers: &HeaderMap, key: &str) -> bool {
    let Some(value) = headers.get("authorization").map(|v| v.as_bytes()) else {
        return false;
    };
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return false;
    }
    let given = rest.trim_ascii_start();
    let (a, b) = (given, key.as_bytes());
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

/// The loaded models' facts, or a 503 while the server shuts down, loads or has lost its
/// model worker.
fn accepting(app: &App) -> Result<&ModelInfo, ApiError> {
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
    Ok(info)
}

/// Reads the body up to `limit` bytes within `timeout` (408 past it: a client that sends
/// its body slowly, or promises more than it sends, cannot hold a connection). A larger
/// body is read on and discarded (up to 8 x the limit) before the 413 is sent, so that a
/// client still writing its body gets the answer instead of a reset connection.
async fn read_body(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, read_body_inner(body, limit)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )),
    }
}

async fn read_body_inner(body: Body, limit: usize) -> Result<Bytes, ApiError> {
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

/// Runs a prompt check (tokenising: CPU work) on a blocking thread; its error is a 400
/// on `param`.
async fn check_prompt<T: Send + 'static>(
    param: &'static str,
    check: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
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

/// Admits `work` of `cost` (W*K*max_tokens) and queues it for the model workers: 400 if
/// it can never fit, 429 with Retry-After while the queue is full. The guard cancels the
/// work and frees its share when dropped before the answer.
fn submit(
    app: &Arc<App>,
    work: Work,
    cost: Cost,
    in_flight: InFlight,
) -> Result<(tokio::sync::mpsc::UnboundedReceiver<Event>, Guard), ApiError> {
    let (mut rxs, guard) = submit_all(app, vec![work], cost, in_flight)?;
    Ok((rxs.remove(0), guard))
}

/// What a request costs admission: its sampling (rows x max_tokens, for every prompt) and
/// its prompt tokens in every local model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cost {
    pub sampling: u64,
    pub prompt: u64,
}

/// [`submit`] for several jobs admitted together (all or none), one receiver each; they
/// share one guard, whose drop cancels them all.
fn submit_all(
    app: &Arc<App>,
    works: Vec<Work>,
    cost: Cost,
    in_flight: InFlight,
) -> Result<(Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>, Guard), ApiError> {
    let capacity = app.admission.capacity();
    if cost.sampling > capacity {
        return Err(ApiError::invalid("max_tokens", format!(
            "this request costs {} (rows x max_tokens x prompts), more than the server's queue capacity {capacity}; lower W, K, n, max_tokens or the number of prompts", cost.sampling)));
    }
    // A long prompt may take the cost past the cap: then it waits for an empty queue.
    let Some(permit) = app
        .admission
        .try_admit(cost.sampling.saturating_add(cost.prompt))
    else {
        let backlog = app.admission.used() as f64;
        // Searches in flight drain the backlog together.
        let rate = app.metrics.strong_tokens_per_s().max(1.0) * app.cfg.parallel as f64;
        let secs = (backlog / rate).ceil().clamp(1.0, 600.0) as u64;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "queue_full",
            "the server's queue is full; retry after the time in Retry-After",
        )
        .retry_after(secs));
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let mut guard = Guard {
        cancel: cancel.clone(),
        metrics: app.metrics.clone(),
        done: false,
        _permit: permit,
        _in_flight: in_flight,
    };
    let deadline = Instant::now() + app.cfg.deadline;
    let mut rxs = Vec::with_capacity(works.len());
    for work in works {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let job = Job {
            work,
            events: tx,
            cancel: cancel.clone(),
            deadline,
        };
        if !app.queue.push(job) {
            guard.done = true;
            cancel.store(true, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "worker_down",
                "the model worker is down",
            ));
        }
        rxs.push(rx);
    }
    Ok((rxs, guard))
}

/// Holds a request's queue share; cancels its search if dropped before the answer.
struct Guard {
    cancel: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Set once the answer came: dropping the guard then cancels nothing.
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

/// The HTTP error for each way a job can fail; messages never name the server's files.
fn failure_error(app: &App, f: Failure) -> ApiError {
    let scrub = |m: String| match app.info.get() {
        Some(info) => info.scrub_paths(m),
        None => m,
    };
    let render = |r: Reason| match app.info.get() {
        Some(info) => info.client_error(&*r.0),
        None => r.0.to_string(),
    };
    match f {
        Failure::Input(r) => ApiError::invalid("prompt", render(r)),
        Failure::Deadline => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", "deadline_exceeded",
            "the search did not finish within the server's per-request deadline; lower max_tokens or W*K"),
        Failure::Cancelled => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "cancelled", "the request was cancelled"),
        Failure::Panic => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal", "the search failed unexpectedly; the server goes on"),
        Failure::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal", scrub(m)),
        Failure::Upstream(r) => ApiError::new(StatusCode::BAD_GATEWAY, "server_error", "upstream_failed", render(r)),
    }
}

/// The `created` time of a response, in Unix seconds.
fn created(_app: &App) -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
