//! # w2s-server: weak-to-strong search behind the OpenAI API
//!
//! `POST /v1/completions` and `POST /v1/chat/completions` answer with text chosen by the
//! search; any OpenAI client gets aligned output by changing its base URL. Searches run on
//! worker threads (`--parallel` of them, each with contexts of its own over the shared
//! models, their local forward passes taking turns at a compute gate), or with `--pooled`
//! on one thread that steps all of them together on one context of the local strong
//! model ([`w2s_engine::SearchPool`]: their rows sampled in one decode per token), fed by
//! a queue whose admitted cost (W*K*max_tokens) is capped: beyond it a request gets 429
//! with `Retry-After` at once.
//! Every body is validated into a checked request before any model work; errors have the
//! OpenAI shape. A client that disconnects cancels its search within one chunk.
//!
//! The models come from a [`w2s_engine::EngineSpec`]: any role may be a local GGUF file
//! or a remote engine. With a remote role, `/health` also asks the engine (`GET
//! /v1/models`, at most every two seconds) and answers 503 `upstream_down` while it does
//! not answer; a search whose engine fails gets 502.
//!
//! A front end takes the server's options as a [`ServeOptions`] (clap's `Args` with the
//! `clap` feature; their defaults are written once there) and checks them once into a
//! [`ServeConfig`] with [`ServeOptions::check`].
//!
//! ```no_run
//! # async fn run(spec: w2s_engine::EngineSpec) -> Result<(), Box<dyn std::error::Error>> {
//! let config = w2s_server::ServeConfig::new(w2s_core::SearchConfig::default());
//! w2s_server::serve(config, spec, &|event| eprintln!("{event:?}")).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod admission;
pub mod api;
mod conn;
pub mod error;
mod fields;
pub mod metrics;
pub mod openai;
mod options;
mod routes;
pub mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use w2s_core::SearchConfig;
use w2s_engine::EngineSpec;

use crate::admission::Admission;
use crate::api::Policy;
use crate::metrics::Metrics;
use crate::worker::{JobQueue, ModelInfo, WorkerState};
pub use options::{OptionsError, ServeOptions, MAX_PARALLEL};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind (default 127.0.0.1).
    pub host: String,
    /// Port (default 8080; 0 picks a free one).
    pub port: u16,
    /// Bearer key required on every route but /health (None: no auth).
    pub api_key: Option<String>,
    /// The model name clients ask for.
    pub model_name: String,
    /// Largest request body in bytes (default 2 MB): larger gets 413.
    pub max_body_bytes: usize,
    /// Searches (and plain requests) run at once, each on its own worker thread and
    /// contexts over the shared models (default 1).
    pub parallel: usize,
    /// The searches in flight share one context of the local strong model, the rows of
    /// all of them sampled in one decode per token (default false: a worker each).
    pub pooled: bool,
    /// Admission cap in W*K*max_tokens units, running and queued requests together:
    /// beyond it, 429.
    pub queue_capacity: u64,
    /// Per-request deadline.
    pub deadline: Duration,
    /// Time a client has to send a request's headers, from the connection's start or the
    /// end of the previous response (so also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once its headers are in (408 past it).
    pub body_timeout: Duration,
    /// Open connections at most (lowered to fit the file-descriptor limit); at the cap the
    /// oldest idle connection is closed to make room.
    pub max_connections: usize,
    /// Longest prompt in any local model's tokens (400 beyond it).
    pub max_prompt_tokens: usize,
    /// Contexts grown past this many tokens are freed after their request.
    pub shrink_above_tokens: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// A search with no progress for this long makes /health answer 503.
    pub watchdog: Duration,
    /// Defaults and caps of requests.
    pub policy: Policy,
}

impl ServeConfig {
    /// Defaults around the given default search.
    pub fn new(defaults: SearchConfig) -> Self {
        let default_cost = defaults.method().rows() as u64 * defaults.max_new_tokens() as u64;
        ServeConfig {
            host: options::HOST.into(),
            port: options::PORT,
            api_key: None,
            model_name: options::MODEL_NAME.into(),
            max_body_bytes: options::MAX_BODY_BYTES,
            parallel: 1,
            pooled: false,
            queue_capacity: 8 * default_cost.max(1),
            deadline: Duration::from_secs(options::DEADLINE_SECS),
            header_timeout: Duration::from_secs(options::HEADER_TIMEOUT_SECS),
            body_timeout: Duration::from_secs(options::BODY_TIMEOUT_SECS),
            max_connections: options::MAX_CONNECTIONS,
            max_prompt_tokens: options::MAX_PROMPT_TOKENS,
            shrink_above_tokens: options::KEEP_CONTEXT_TOKENS,
            shutdown_timeout: Duration::from_secs(options::SHUTDOWN_TIMEOUT_SECS),
            watchdog: Duration::from_secs(options::WATCHDOG_SECS),
            policy: Policy {
                defaults,
                max_width: 16,
                max_successors: 16,
                max_chunk: 256,
                max_rows_per_request: 64,
                max_tokens: options::MAX_TOKENS_CAP,
                max_prompt_bytes: 1024 * 1024,
            },
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// The models could not be loaded.
    #[error("{0}")]
    Models(String),
    /// The HTTP client that probes remote engines could not be made.
    #[error("cannot start the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The server failed while running.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Whose fault a [`ServeError`] is, for a front end to map once (an exit code, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeErrorKind {
    /// The setup the user gave: models that do not load, an address that cannot be bound.
    Setup,
    /// The machine or the running server.
    Runtime,
}

impl ServeError {
    /// Whose fault this is.
    pub fn kind(&self) -> ServeErrorKind {
        match self {
            ServeError::Bind { .. } | ServeError::Models(_) => ServeErrorKind::Setup,
            ServeError::HttpClient(_) | ServeError::Io(_) => ServeErrorKind::Runtime,
        }
    }
}

/// A remote engine the server depends on, probed by `/health`.
pub(crate) struct Upstream {
    /// `GET` this to see that the engine answers (`{url}/models`).
    pub models_url: String,
    /// The bearer key, if the engine needs one.
    pub api_key: Option<String>,
    /// The last probe: when, and whether it answered.
    pub last: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

pub(crate) struct App {
    pub upstreams: Vec<Upstream>,
    pub http: reqwest::Client,
    pub cfg: ServeConfig,
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    pub queue: JobQueue,
    pub worker: Arc<WorkerState>,
    pub info: Arc<OnceLock<ModelInfo>>,
    pub shutting_down: AtomicBool,
    pub next_seed: AtomicU64,
    pub started_unix: u64,
    /// Ignored request field names already logged.
    pub ignored_seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What a running server tells its caller (the front end says it as it likes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEvent {
    /// Bound and accepting connections at this address (the models may still load).
    Listening(SocketAddr),
    /// A shutdown signal came: new requests get 503, in-flight ones are finishing.
    Draining,
}

/// Loads the models on a worker thread, binds, serves until SIGINT/SIGTERM, then drains
/// (new requests get 503; in-flight ones finish up to the shutdown timeout) and returns.
/// `on_event` hears when it is bound and when it starts draining.
pub async fn serve(
    cfg: ServeConfig,
    spec: EngineSpec,
    on_event: &(dyn Fn(ServeEvent) + Sync),
) -> Result<(), ServeError> {
    let upstreams = upstreams(&spec);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(ServeError::HttpClient)?;
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local: SocketAddr = listener.local_addr()?;

    let metrics = Arc::new(Metrics::default());
    let worker = Arc::new(WorkerState::default());
    let info = Arc::new(OnceLock::new());
    let (tx, rx) = std::sync::mpsc::channel();
    let loaded = worker::start(
        spec,
        (cfg.parallel, cfg.pooled),
        cfg.shrink_above_tokens,
        rx,
        worker.clone(),
        metrics.clone(),
        info.clone(),
    )
    .map_err(ServeError::Models)?;
    let seed0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let app = Arc::new(App {
        upstreams,
        http,
        admission: Admission::new(cfg.queue_capacity),
        queue: JobQueue::new(tx, metrics.clone()),
        cfg,
        metrics,
        worker,
        info,
        shutting_down: AtomicBool::new(false),
        next_seed: AtomicU64::new(seed0),
        ignored_seen: std::sync::Mutex::default(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    on_event(ServeEvent::Listening(local));

    let (load_fail_tx, load_fail_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::task::spawn_blocking(move || {
        if let Ok(Err(e)) = loaded.recv() {
            let _ = load_fail_tx.send(e);
        }
    });
    match run(app, listener, load_fail_rx, on_event).await {
        Some(e) => Err(ServeError::Models(e)),
        None => Ok(()),
    }
}

/// Each remote engine's `/models` address, once, for the health checks.
fn upstreams(spec: &EngineSpec) -> Vec<Upstream> {
    let mut upstreams: Vec<Upstream> = Vec::new();
    for role in spec.remote_roles() {
        if let w2s_engine::RoleSource::Remote { spec: r, .. } = &spec.role(role).source {
            let models_url = format!("{}/models", r.url.trim_end_matches('/'));
            if upstreams.iter().any(|u| u.models_url == models_url) {
                continue;
            }
            upstreams.push(Upstream {
                models_url,
                api_key: r.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()),
                last: std::sync::Mutex::new(None),
            });
        }
    }
    upstreams
}

/// Serves connections until a shutdown signal (then drains the requests in flight, up
/// to the shutdown timeout) or a failure to load the models, which it returns.
async fn run(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    load_fail_rx: tokio::sync::oneshot::Receiver<String>,
    on_event: &(dyn Fn(ServeEvent) + Sync),
) -> Option<String> {
    let router = routes::router(app.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let conns = conn::Connections::new(app.cfg.max_connections, app.metrics.clone());
    tracing::info!(max_connections = conns.cap(), "accepting connections");
    let server = tokio::spawn(conn::serve(
        listener,
        router,
        conns,
        app.cfg.header_timeout,
        stop_rx,
        Duration::from_secs(5),
    ));
    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        Ok(e) = load_fail_rx => Some(e),
    };
    app.shutting_down.store(true, Ordering::SeqCst);
    if failed.is_none() {
        on_event(ServeEvent::Draining);
        let until = tokio::time::Instant::now() + app.cfg.shutdown_timeout;
        while app.metrics.in_flight_requests.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = stop_tx.send(true);
    // Let the last responses reach their clients (axum closes idle keep-alive connections).
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    failed
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
