//! The HTTP side: one tokio runtime and one pooled `reqwest` client per backend, requests
//! bounded in flight, retried with backoff on 429/5xx/timeouts/broken connections.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::Semaphore;
use w2s_core::RowRng;

use crate::endpoint::{Endpoint, EngineKind};
use crate::error::RemoteError;
use crate::retry::{parse_retry_after, Next};

/// State shared by the requests of one backend.
pub(crate) struct Ctx {
    pub(crate) ep: Endpoint,
    http: reqwest::Client,
    permits: Semaphore,
    requests: AtomicU64,
    jitter: Mutex<RowRng>,
}

/// A backend's client: its own runtime plus the shared request state.
pub(crate) struct Client {
    rt: tokio::runtime::Runtime,
    pub(crate) ctx: Arc<Ctx>,
}

/// One failed attempt.
enum Failure {
    /// Worth another try; `Some` wait if the server said how long.
    Retry(String, Option<std::time::Duration>),
    /// Final.
    Fatal(RemoteError),
}

impl Client {
    pub(crate) fn new(ep: Endpoint) -> Result<Self, RemoteError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Init(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(ep.connect_timeout)
            .timeout(ep.request_timeout)
            .pool_max_idle_per_host(ep.max_concurrency)
            // Below uvicorn's 5 s keep-alive (vLLM, SGLang, llama-cpp-python): a pooled
            // connection is not reused just as the server closes it.
            .pool_idle_timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| RemoteError::Init(e.to_string()))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let ctx = Ctx {
            permits: Semaphore::new(ep.max_concurrency),
            ep,
            http,
            requests: AtomicU64::new(0),
            jitter: Mutex::new(RowRng::new(seed, 0)),
        };
        Ok(Client {
            rt,
            ctx: Arc::new(ctx),
        })
    }

    /// Runs `f` to completion on this backend's runtime. Refuses to run inside another
    /// async runtime (blocking there would stall it).
    pub(crate) fn block_on<F: Future>(&self, f: F) -> Result<F::Output, RemoteError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(RemoteError::InsideAsync);
        }
        Ok(self.rt.block_on(f))
    }

    /// The engine, asking the server once if the endpoint says `auto`; also checks that
    /// the server lists the model (when it lists any).
    pub(crate) fn resolve_engine(&self) -> Result<EngineKind, RemoteError> {
        let ctx = self.ctx.clone();
        let listing = self.block_on(async move { ctx.send("models", None).await })??;
        let ep = &self.ctx.ep;
        let data = listing.get("data").and_then(Value::as_array);
        let Some(data) = data else {
            return Ok(match ep.engine {
                EngineKind::Auto => EngineKind::OpenAi,
                e => e,
            });
        };
        // llama-server lists the names it also answers to in `aliases`.
        let names = |m: &'_ Value| -> Vec<String> {
            let mut out: Vec<String> = m
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .into_iter()
                .collect();
            if let Some(a) = m.get("aliases").and_then(Value::as_array) {
                out.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
            }
            out
        };
        let ids: Vec<String> = data.iter().flat_map(names).collect();
        let owner = data
            .iter()
            .find(|m| names(m).contains(&ep.model))
            .or(data.first())
            .and_then(|m| m.get("owned_by")?.as_str())
            .unwrap_or("");
        let engine = match ep.engine {
            EngineKind::Auto => EngineKind::from_owned_by(owner),
            e => e,
        };
        // llama-cpp-python serves whatever is loaded under any name it is asked for.
        if !ids.is_empty() && !ids.contains(&ep.model) && engine != EngineKind::LlamaCppPython {
            return Err(RemoteError::UnknownModel {
                url: ep.base.clone(),
                model: ep.model.clone(),
                available: ids.join(", "),
            });
        }
        Ok(engine)
    }

    /// GETs `path` at the server's root: the base URL without its trailing `/v1`
    /// (llama-server's `/props`, `/slots`, `/metrics` live there).
    pub(crate) fn get_at_root(&self, path: &str) -> Result<Value, RemoteError> {
        let base = &self.ctx.ep.base;
        let root = base.strip_suffix("/v1").unwrap_or(base);
        let url = format!("{root}/{path}");
        let ctx = self.ctx.clone();
        self.block_on(async move { ctx.send_url(url, None).await })?
    }

    /// POSTs every body to `{base}/{path}` at once (bounded by `max_concurrency`) and
    /// returns the replies in order; the first failure fails the whole call and cancels
    /// the requests still in flight.
    pub(crate) fn post_all(
        &self,
        path: &str,
        bodies: Vec<Value>,
    ) -> Result<Vec<Value>, RemoteError> {
        let ctx = self.ctx.clone();
        let path = path.to_string();
        self.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            let n = bodies.len();
            for (i, body) in bodies.into_iter().enumerate() {
                let (ctx, path) = (ctx.clone(), path.clone());
                set.spawn(async move { (i, ctx.send(&path, Some(&body)).await) });
            }
            let mut out: Vec<Option<Value>> = vec![None; n];
            while let Some(joined) = set.join_next().await {
                let (i, got) =
                    joined.map_err(|e| RemoteError::Init(format!("request task failed: {e}")))?;
                out[i] = Some(got?);
            }
            out.into_iter()
                .map(|v| v.ok_or_else(|| RemoteError::Usage("a request produced no reply".into())))
                .collect()
        })?
    }

    /// HTTP requests sent so far (every attempt counts).
    pub(crate) fn requests(&self) -> u64 {
        self.ctx.requests.load(Ordering::Relaxed)
    }
}

impl Ctx {
    /// POSTs `body` (or GETs when `None`) to `{base}/{path}` and returns the JSON reply,
    /// retrying what is worth retrying within the endpoint's bounds.
    pub(crate) async fn send(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RemoteError> {
        self.send_url(format!("{}/{path}", self.ep.base), body)
            .await
    }

    /// [`Ctx::send`] to a full URL.
    pub(crate) async fn send_url(
        &self,
        url: String,
        body: Option<&Value>,
    ) -> Result<Value, RemoteError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let failure = match self.attempt(&url, body).await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why, after)) => (why, after),
            };
            let next = {
                let mut rng = self.jitter.lock().unwrap_or_else(|p| p.into_inner());
                self.ep.retry.next(attempt, failure.1, &mut rng)
            };
            attempt += 1;
            match next {
                Next::Wait(d) => {
                    tracing::debug!(%url, attempt, wait_ms = d.as_millis() as u64, why = %failure.0, "retrying");
                    tokio::time::sleep(d).await;
                }
                Next::GiveUp => {
                    return Err(RemoteError::GaveUp {
                        url,
                        attempts: attempt,
                        elapsed: started.elapsed(),
                        last: failure.0,
                    })
                }
                Next::TooLate(wait) => {
                    return Err(RemoteError::RetryTooLate {
                        url,
                        wait,
                        max: self.ep.retry.max_backoff,
                    })
                }
            }
        }
    }

    async fn attempt(&self, url: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Failure::Fatal(RemoteError::Init(e.to_string())))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = match body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        };
        if let Some(key) = &self.ep.api_key {
            req = req.bearer_auth(&key.0);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = resp.bytes().await.map_err(transport)?;
        let text = String::from_utf8_lossy(&bytes);
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Fatal(RemoteError::Malformed {
                    url: url.to_string(),
                    what: format!("not JSON: {e}"),
                    body: snippet(&text),
                })
            });
        }
        let message = engine_message(&text);
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Failure::Retry(
                format!("HTTP {status}: {message}"),
                retry_after,
            ));
        }
        let lower = message.to_lowercase();
        let too_long = [
            "context length",
            "context window",
            "maximum context",
            "too long",
            "exceed",
        ]
        .iter()
        .any(|k| lower.contains(k));
        let (url, status) = (url.to_string(), status.as_u16());
        Err(Failure::Fatal(if too_long {
            RemoteError::TooLong {
                url,
                status,
                message,
            }
        } else {
            RemoteError::Rejected {
                url,
                status,
                message,
            }
        }))
    }
}

fn transport(e: reqwest::Error) -> Failure {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "connection broken"
    };
    // The error chain names the cause (reset, closed before the message completed, ...).
    let mut why = format!("{kind}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        why.push_str(&format!(": {s}"));
        src = s.source();
    }
    Failure::Retry(why, None)
}

/// The engine's own error message: `error.message`, `message` or `detail`, else the body.
fn engine_message(body: &str) -> String {
    let v: Option<Value> = serde_json::from_str(body).ok();
    let field = v.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
    });
    field.unwrap_or_else(|| snippet(body))
}

/// The first 300 characters of a body.
pub(crate) fn snippet(body: &str) -> String {
    let mut s: String = body.chars().take(300).collect();
    if s.len() < body.len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_are_found_in_the_usual_places() {
        assert_eq!(engine_message(r#"{"error":{"message":"bad n"}}"#), "bad n");
        assert_eq!(engine_message(r#"{"detail":"nope"}"#), "nope");
        assert_eq!(engine_message("plain text"), "plain text");
        let long = "é".repeat(400);
        assert_eq!(snippet(&long).chars().count(), 303);
    }
}
