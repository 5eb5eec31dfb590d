//! `w2s serve`: the OpenAI-compatible server.

use std::time::Duration;

use clap::Args;
use w2s_server::{serve, ServeConfig, ServeEvent};

use w2s_engine::RunSettings;

use crate::fail::{usage, Fail};

/// The most searches `--parallel` may run at once (each holds its own contexts).
const MAX_PARALLEL: usize = 64;

/// Arguments of `w2s serve`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct ServeArgs {
    #[command(flatten)]
    pub run: RunSettings,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Name of an environment variable holding the API key clients must send as
    /// `Authorization: Bearer KEY` (every route but /health).
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,
    /// The model name clients ask for.
    #[arg(long, default_value = "w2s")]
    pub model_name: String,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Searches in flight at once, each on its own worker and contexts over the shared
    /// models [default: 1 when the strong model is local (the CPU is the bottleneck), 8
    /// when it is remote (searches overlap their waits on the engine)].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Admission cap in W*K*max_tokens units, running and queued requests together
    /// [default: parallel + 7 default requests].
    #[arg(long)]
    pub queue_capacity: Option<u64>,
    /// Per-request deadline in seconds.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// Seconds a client has to send a request's headers, from the connection's start or
    /// the previous response's end (also the keep-alive idle timeout).
    #[arg(long, default_value_t = 15)]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body once its headers are in (408).
    #[arg(long, default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Open connections at most (lowered to fit the file-descriptor limit); at the cap
    /// the oldest idle connection is closed to make room.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Longest prompt a request may send, in any local model's tokens (400 beyond it).
    #[arg(long, default_value_t = 4096)]
    pub max_prompt_tokens: usize,
    /// A llama.cpp context grown past this many tokens for a request is freed after it
    /// (memory returns to its level before the request).
    #[arg(long, default_value_t = 2048)]
    pub keep_context_tokens: usize,
    /// How long shutdown waits for in-flight requests, in seconds.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// Seconds without search progress after which /health answers 503.
    #[arg(long, default_value_t = 120)]
    pub watchdog_secs: u64,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens_cap: usize,
}

pub fn run(args: ServeArgs) -> Result<(), Fail> {
    let settings = args.run.check()?;
    let mut cfg = ServeConfig::new(settings.search.clone());
    cfg.host = args.host;
    cfg.port = args.port;
    cfg.model_name = args.model_name;
    cfg.max_body_bytes = args.max_body_bytes;
    let remote_strong = settings
        .engine
        .remote_roles()
        .contains(&w2s_core::Role::Strong);
    cfg.parallel = match args.parallel {
        Some(0) => return Err(usage("--parallel must be at least 1")),
        Some(n) if n > MAX_PARALLEL => {
            return Err(usage(format!(
                "--parallel {n} is more than {MAX_PARALLEL} searches in flight"
            )))
        }
        Some(n) => n,
        None if remote_strong => 8,
        None => 1,
    };
    let default_cost = cfg.queue_capacity / 8;
    cfg.queue_capacity = default_cost * (cfg.parallel as u64 + 7);
    if let Some(c) = args.queue_capacity {
        if c == 0 {
            return Err(usage("--queue-capacity must be at least 1"));
        }
        cfg.queue_capacity = c;
    }
    cfg.deadline = Duration::from_secs(args.deadline_secs.max(1));
    for (flag, v) in [
        ("--header-timeout-secs", args.header_timeout_secs),
        ("--body-timeout-secs", args.body_timeout_secs),
        ("--max-connections", args.max_connections as u64),
        ("--max-prompt-tokens", args.max_prompt_tokens as u64),
    ] {
        if v == 0 {
            return Err(usage(format!("{flag} must be at least 1")));
        }
    }
    cfg.header_timeout = Duration::from_secs(args.header_timeout_secs);
    cfg.body_timeout = Duration::from_secs(args.body_timeout_secs);
    cfg.max_connections = args.max_connections;
    cfg.max_prompt_tokens = args.max_prompt_tokens;
    cfg.shrink_above_tokens = args.keep_context_tokens;
    cfg.shutdown_timeout = Duration::from_secs(args.shutdown_timeout_secs);
    cfg.watchdog = Duration::from_secs(args.watchdog_secs.max(1));
    cfg.policy.max_tokens = args.max_tokens_cap.max(1);
    if let Some(name) = args.api_key_env {
        match std::env::var(&name) {
            Ok(k) if k.chars().any(|c| c.is_control()) || k.trim() != k => {
                return Err(usage(format!(
                    "--api-key-env {name}: the key has control characters or leading or trailing spaces, which an Authorization header cannot carry"
                )))
            }
            Ok(k) if !k.is_empty() => cfg.api_key = Some(k),
            _ => {
                return Err(usage(format!(
                    "--api-key-env {name}: the environment variable {name} is not set or empty"
                )))
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Fail {
            code: 1,
            message: format!("cannot start the async runtime: {e}"),
        })?;
    let say = |event: ServeEvent| match event {
        ServeEvent::Listening(addr) => eprintln!("listening on http://{addr}"),
        ServeEvent::Draining => eprintln!("shutting down: draining in-flight requests"),
    };
    runtime
        .block_on(serve(cfg, settings.engine, &say))
        .map_err(|e| {
            let code = if matches!(
                e,
                w2s_server::ServeError::Models(_) | w2s_server::ServeError::Bind { .. }
            ) {
                2
            } else {
                1
            };
            Fail {
                code,
                message: e.to_string(),
            }
        })
}
