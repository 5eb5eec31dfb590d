//! `GET /health`, `GET /metrics` and `GET /v1/models`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::PLAIN_MODELS;
use crate::openai::{Health, ModelCard, ModelList};
use crate::App;

pub(super) async fn models(State(app): State<Arc<App>>) -> Response {
    app.metrics.request(200, "ok");
    let data = std::iter::once(app.cfg.model_name.as_str())
        .chain(PLAIN_MODELS)
        .map(|id| ModelCard {
            created: app.started_unix,
            id: id.to_string(),
            object: "model",
            owned_by: "w2s",
        })
        .collect();
    Json(ModelList {
        data,
        object: "list",
    })
    .into_response()
}

pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

pub(super) async fn health(State(app): State<Arc<App>>) -> Response {
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
    (code, Json(Health { status })).into_response()
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
