//! The server's options as given (command-line flags with the `clap` feature), with
//! their defaults written once, checked once into a [`ServeConfig`].

use std::time::Duration;

use w2s_core::{Role, SearchConfig};
use w2s_engine::EngineSpec;

use crate::ServeConfig;

/// The most searches `--parallel` may run at once (each holds its own contexts).
pub const MAX_PARALLEL: usize = 64;

pub(crate) const HOST: &str = "127.0.0.1";
pub(crate) const PORT: u16 = 8080;
pub(crate) const MODEL_NAME: &str = "w2s";
pub(crate) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
pub(crate) const DEADLINE_SECS: u64 = 600;
pub(crate) const HEADER_TIMEOUT_SECS: u64 = 15;
pub(crate) const BODY_TIMEOUT_SECS: u64 = 30;
pub(crate) const MAX_CONNECTIONS: usize = 4096;
pub(crate) const MAX_PROMPT_TOKENS: usize = 4096;
pub(crate) const KEEP_CONTEXT_TOKENS: usize = 2048;
pub(crate) const SHUTDOWN_TIMEOUT_SECS: u64 = 30;
pub(crate) const WATCHDOG_SECS: u64 = 120;
pub(crate) const MAX_TOKENS_CAP: usize = 2048;

/// Options of `w2s serve`, as given; [`ServeOptions::check`] turns them into a
/// [`ServeConfig`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ServeOptions {
    /// Address to bind.
    #[cfg_attr(feature = "clap", arg(long, default_value = HOST))]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PORT))]
    pub port: u16,
    /// Name of an environment variable holding the API key clients must send as
    /// `Authorization: Bearer KEY` (every route but /health).
    #[cfg_attr(feature = "clap", arg(long, value_name = "NAME"))]
    pub api_key_env: Option<String>,
    /// The model name clients ask for.
    #[cfg_attr(feature = "clap", arg(long, default_value = MODEL_NAME))]
    pub model_name: String,
    /// Largest request body in bytes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = MAX_BODY_BYTES))]
    pub max_body_bytes: usize,
    /// Searches in flight at once, each on its own worker and contexts over the shared
    /// models [default: 1 when the strong model is local (the CPU is the bottleneck), 8
    /// when it is remote (searches overlap their waits on the engine)].
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub parallel: Option<usize>,
    /// The searches in flight share one context of the local strong model: the rows of
    /// all of them are sampled in one decode per token, on one thread, instead of a
    /// worker each taking turns at the CPU (more throughput with several in flight; a
    /// search's text may differ from the same seed alone, as batched kernels round a
    /// little differently). Needs a local strong model guided by the tuned / untuned
    /// pair alone [--parallel then defaults to 8].
    #[cfg_attr(feature = "clap", arg(long))]
    pub pooled: bool,
    /// Admission cap in W*K*max_tokens units, running and queued requests together
    /// [default: parallel + 7 default requests].
    #[cfg_attr(feature = "clap", arg(long))]
    pub queue_capacity: Option<u64>,
    /// Per-request deadline in seconds.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEADLINE_SECS))]
    pub deadline_secs: u64,
    /// Seconds a client has to send a request's headers, from the connection's start or
    /// the previous response's end (also the keep-alive idle timeout).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = HEADER_TIMEOUT_SECS))]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body once its headers are in (408).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = BODY_TIMEOUT_SECS))]
    pub body_timeout_secs: u64,
    /// Open connections at most (lowered to fit the file-descriptor limit); at the cap
    /// the oldest idle connection is closed to make room.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = MAX_CONNECTIONS))]
    pub max_connections: usize,
    /// Longest prompt a request may send, in any local model's tokens (400 beyond it).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = MAX_PROMPT_TOKENS))]
    pub max_prompt_tokens: usize,
    /// A llama.cpp context grown past this many tokens for a request is freed after it
    /// (memory returns to its level before the request).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = KEEP_CONTEXT_TOKENS))]
    pub keep_context_tokens: usize,
    /// How long shutdown waits for in-flight requests, in seconds.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = SHUTDOWN_TIMEOUT_SECS))]
    pub shutdown_timeout_secs: u64,
    /// Seconds without search progress after which /health answers 503.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = WATCHDOG_SECS))]
    pub watchdog_secs: u64,
    /// Largest max_tokens a request may ask for.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = MAX_TOKENS_CAP))]
    pub max_tokens_cap: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: HOST.into(),
            port: PORT,
            api_key_env: None,
            model_name: MODEL_NAME.into(),
            max_body_bytes: MAX_BODY_BYTES,
            parallel: None,
            pooled: false,
            queue_capacity: None,
            deadline_secs: DEADLINE_SECS,
            header_timeout_secs: HEADER_TIMEOUT_SECS,
            body_timeout_secs: BODY_TIMEOUT_SECS,
            max_connections: MAX_CONNECTIONS,
            max_prompt_tokens: MAX_PROMPT_TOKENS,
            keep_context_tokens: KEEP_CONTEXT_TOKENS,
            shutdown_timeout_secs: SHUTDOWN_TIMEOUT_SECS,
            watchdog_secs: WATCHDOG_SECS,
            max_tokens_cap: MAX_TOKENS_CAP,
        }
    }
}

/// Why the serve options were refused (always the user's mistake); the message names
/// the option by its `w2s serve` flag.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum OptionsError {
    /// An option that must be at least 1 was 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// `--parallel` over [`MAX_PARALLEL`].
    #[error("--parallel {0} is more than {MAX_PARALLEL} searches in flight")]
    TooParallel(usize),
    /// The API key cannot go in an `Authorization` header.
    #[error("--api-key-env {0}: the key has control characters or leading or trailing spaces, which an Authorization header cannot carry")]
    BadKey(String),
    /// The API key's environment variable is not set or empty.
    #[error("--api-key-env {0}: the environment variable {0} is not set or empty")]
    NoKey(String),
}

impl ServeOptions {
    /// Checks the options against the engine they serve (`--parallel` defaults to 8
    /// when the strong model is remote) and its default search; reads the API key from
    /// its environment variable.
    pub fn check(
        self,
        search: SearchConfig,
        engine: &EngineSpec,
    ) -> Result<ServeConfig, OptionsError> {
        let remote_strong = engine.remote_roles().contains(&Role::Strong);
        let mut cfg = ServeConfig::new(search);
        cfg.host = self.host;
        cfg.port = self.port;
        cfg.model_name = self.model_name;
        cfg.max_body_bytes = self.max_body_bytes;
        cfg.parallel = match self.parallel {
            Some(0) => return Err(OptionsError::Zero("--parallel")),
            Some(n) if n > MAX_PARALLEL => return Err(OptionsError::TooParallel(n)),
            Some(n) => n,
            None if remote_strong || self.pooled => 8,
            None => 1,
        };
        cfg.pooled = self.pooled;
        let default_cost = cfg.queue_capacity / 8;
        cfg.queue_capacity = default_cost * (cfg.parallel as u64 + 7);
        if let Some(c) = self.queue_capacity {
            if c == 0 {
                return Err(OptionsError::Zero("--queue-capacity"));
            }
            cfg.queue_capacity = c;
        }
        cfg.deadline = Duration::from_secs(self.deadline_secs.max(1));
        for (flag, v) in [
            ("--header-timeout-secs", self.header_timeout_secs),
            ("--body-timeout-secs", self.body_timeout_secs),
            ("--max-connections", self.max_connections as u64),
            ("--max-prompt-tokens", self.max_prompt_tokens as u64),
        ] {
            if v == 0 {
                return Err(OptionsError::Zero(flag));
            }
        }
        cfg.header_timeout = Duration::from_secs(self.header_timeout_secs);
        cfg.body_timeout = Duration::from_secs(self.body_timeout_secs);
        cfg.max_connections = self.max_connections;
        cfg.max_prompt_tokens = self.max_prompt_tokens;
        cfg.shrink_above_tokens = self.keep_context_tokens;
        cfg.shutdown_timeout = Duration::from_secs(self.shutdown_timeout_secs);
        cfg.watchdog = Duration::from_secs(self.watchdog_secs.max(1));
        cfg.policy.max_tokens = self.max_tokens_cap.max(1);
        if let Some(name) = self.api_key_env {
            cfg.api_key = Some(api_key(name)?);
        }
        Ok(cfg)
    }
}

/// The API key from the environment variable `name`.
fn api_key(name: String) -> Result<String, OptionsError> {
    match std::env::var(&name) {
        Ok(k) if k.chars().any(|c| c.is_control()) || k.trim() != k => {
            Err(OptionsError::BadKey(name))
        }
        Ok(k) if !k.is_empty() => Ok(k),
        _ => Err(OptionsError::NoKey(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use w2s_core::PromptTemplate;
    use w2s_engine::RoleSpec;

    fn local() -> EngineSpec {
        let role = || RoleSpec::local("model.gguf", PromptTemplate::bare());
        EngineSpec::new(role(), role(), role())
    }

    #[test]
    fn default_options_give_the_default_config() {
        let search = SearchConfig::default();
        let cfg = ServeOptions::default()
            .check(search.clone(), &local())
            .unwrap();
        let plain = ServeConfig::new(search);
        assert_eq!(format!("{cfg:?}"), format!("{plain:?}"));
    }

    #[test]
    fn zero_and_oversized_options_are_refused_by_flag() {
        let refused = |o: ServeOptions| o.check(SearchConfig::default(), &local()).unwrap_err();
        let zero = |f: fn(&mut ServeOptions)| {
            let mut o = ServeOptions::default();
            f(&mut o);
            refused(o).to_string()
        };
        assert_eq!(
            zero(|o| o.parallel = Some(0)),
            "--parallel must be at least 1"
        );
        assert_eq!(
            zero(|o| o.parallel = Some(MAX_PARALLEL + 1)),
            "--parallel 65 is more than 64 searches in flight"
        );
        assert_eq!(
            zero(|o| o.queue_capacity = Some(0)),
            "--queue-capacity must be at least 1"
        );
        assert_eq!(
            zero(|o| o.max_connections = 0),
            "--max-connections must be at least 1"
        );
    }

    #[test]
    fn queue_capacity_defaults_to_parallel_plus_seven_default_requests() {
        let search = SearchConfig::default();
        let per = (search.method().rows() * search.max_new_tokens()) as u64;
        let o = ServeOptions {
            parallel: Some(3),
            ..ServeOptions::default()
        };
        let cfg = o.check(search, &local()).unwrap();
        assert_eq!(cfg.queue_capacity, per.max(1) * 10);
    }
}
