//! The connection layer: accepts TCP connections and serves HTTP/1.1 on each with hyper,
//! with a deadline on request headers and a cap on open connections.
//!
//! - **Header timeout.** A client has `header_timeout` to send a request's headers,
//!   counted from the connection's start or from the end of the previous response: it is
//!   also the keep-alive idle timeout. A slow client (slowloris) or an idle socket is
//!   closed when it passes. (Request bodies have their own deadline, in the routes.)
//! - **Open connections are capped** below the process's file-descriptor limit. At the
//!   cap, the oldest connection with no request in flight (idle, or still sending its
//!   headers) is closed to make room, so that a flood of idle sockets cannot lock out
//!   `/health` or real clients; only when every connection is serving a request does the
//!   server stop accepting until one ends (the kernel's accept queue holds the rest).
//! - Accept errors (e.g. out of file descriptors) are counted and logged at most once a
//!   second, and the loop goes on.
//! - A client that shuts its write side is taken as gone (hyper's `half_close` stays off):
//!   at the TCP level a half-close and a close look the same until a write fails, and a
//!   client that left must cancel its search at once, not after the whole search. A
//!   client that half-closes after its request therefore gets no answer; one that keeps
//!   its socket open does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// File descriptors kept free for everything but client connections (model files,
/// sockets to remote engines, logs).
const FD_RESERVE: u64 = 64;

/// One open connection.
struct Conn {
    /// Requests being answered on it (their response bodies included).
    busy: AtomicUsize,
    /// Asks its task to close it.
    close: Notify,
}

/// The open connections, oldest first.
pub(crate) struct Connections {
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    freed: Notify,
    cap: usize,
    metrics: Arc<Metrics>,
}

impl Connections {
    /// A table for at most `max` connections, lowered to fit the file-descriptor limit.
    pub(crate) fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        let cap = match fd_limit() {
            Some(limit) => {
                let room = limit.saturating_sub(FD_RESERVE).max(limit / 2).max(1);
                max.min(room as usize)
            }
            None => max,
        };
        Arc::new(Connections {
            open: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            freed: Notify::new(),
            cap: cap.max(1),
            metrics,
        })
    }

    /// The cap in force.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn register(&self) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            close: Notify::new(),
        });
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(id, conn.clone());
        self.metrics
            .connections_open
            .store(open.len() as i64, Ordering::SeqCst);
        (id, conn)
    }

    fn unregister(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&id);
        self.metrics
            .connections_open
            .store(open.len() as i64, Ordering::SeqCst);
        drop(open);
        self.freed.notify_waiters();
    }

    /// Asks the oldest connection with no request in flight to close; false if every
    /// connection is answering a request.
    fn evict_one(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.values().find(|c| c.busy.load(Ordering::SeqCst) == 0) {
            Some(c) => {
                c.close.notify_one();
                self.metrics
                    .connections_evicted
                    .fetch_add(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Asks every connection to close once its requests are answered.
    fn close_all(&self) {
        for c in self.open.lock().unwrap_or_else(|p| p.into_inner()).values() {
            c.close.notify_one();
        }
    }
}

/// The soft limit on open file descriptors, if known.
fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct through a valid pointer.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
        (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Serves `router` on `listener` until `stop` turns true, then lets each connection finish
/// its requests for up to `drain`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    conns: Arc<Connections>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        // At the cap: make room by closing an idle connection, or wait for one to end.
        while conns.count() >= conns.cap {
            let freed = conns.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            conns.evict_one();
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        if *stop.borrow() {
            break;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                conns.metrics.accept_errors.fetch_add(1, Ordering::SeqCst);
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(error = %e, open = conns.count(), "cannot accept a connection");
                    last_error_log = Some(Instant::now());
                }
                // EMFILE and the like: give the open connections time to end.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, conn) = conns.register();
        let (router, conns2, mut stop2) = (router.clone(), conns.clone(), stop.clone());
        tokio::spawn(async move {
            serve_one(stream, router, &conn, header_timeout, &mut stop2, drain).await;
            conns2.unregister(id);
        });
    }
    conns.close_all();
    // Let the last responses reach their clients.
    let until = Instant::now() + drain + Duration::from_secs(1);
    while conns.count() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    router: Router,
    conn: &Arc<Conn>,
    header_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
    drain: Duration,
) {
    let tracked = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        let busy = Busy::new(&tracked);
        async move {
            let resp = router
                .oneshot(req.map(Body::new))
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            Ok::<_, Infallible>(resp.map(|b| Tracked {
                inner: b,
                _busy: busy,
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .half_close(false)
        .max_headers(100)
        .max_buf_size(64 * 1024);
    let http = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(http);
    let closing = tokio::select! {
        _ = http.as_mut() => return,
        _ = conn.close.notified() => Duration::from_secs(1),
        _ = stop.changed() => drain,
    };
    // Idle: closes at once. Answering a request: finishes it first (up to `closing`).
    http.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(closing, http).await;
}

/// Marks a connection busy while a request's response is alive.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its connection marked busy until it is sent or dropped.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
