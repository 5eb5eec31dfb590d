//! `w2s serve` against hostile and careless connections, SmolLM2 in every role on
//! loopback: idle sockets past the file-descriptor limit, slow headers and bodies,
//! non-ASCII API keys, half-closed connections. Each attack at the suite's size or, with
//! `W2S_ATTACKS=full` (`scripts/bench-attacks`), at full size: see `support/hostile.rs`.
//! Prompts that cost too much: `serve_hostile_prompts.rs`.

#![allow(clippy::await_holding_lock)]

#[allow(dead_code)] // shared with the other server tests
mod support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::hostile::{
    addr, figure, full, health_polls, normal, open_files_limit, poll_health, read_until_closed,
    size, smol, trickle,
};
use support::server::{client, config_path, serial, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_past_the_fd_limit_do_not_lock_out_health_or_requests() {
    let _g = serial();
    let c = client(Duration::from_secs(120));
    if full() {
        // A flood of idle sockets against the default connection cap, /health polled.
        let s = smol(&[]);
        let n = 19_000.min(open_files_limit().saturating_sub(200));
        let stop = Arc::new(AtomicBool::new(false));
        let poller = poll_health(&s, stop.clone());
        let to = addr(&s);
        let started = Instant::now();
        let idle: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
            (0..n)
                .filter_map(|_| TcpStream::connect(&to).ok())
                .collect()
        })
        .await
        .unwrap();
        let opened = started.elapsed().as_secs_f64();
        let t = Instant::now();
        assert_eq!(s.complete(&c, &normal()).await, 200);
        let took = t.elapsed().as_secs_f64();
        let (polls, worst) = health_polls(stop, poller);
        figure(format!(
            "idle: {} idle sockets opened in {opened:.1} s ({} failed); /health polled {polls} times, all 200, worst {worst:.2} s; a completion during it: 200 in {took:.2} s; connections open {}, evicted {}, accept errors {}",
            idle.len(),
            n - idle.len(),
            s.metric(&c, "w2s_connections_open").await,
            s.metric(&c, "w2s_connections_evicted_total").await,
            s.metric(&c, "w2s_accept_errors_total").await,
        ));
    }
    let s = Server::start_under(
        &["prlimit", "--nofile=128:128"],
        &config_path(),
        &["--strong", "smollm2-135m-instruct"],
        &[],
    );
    // 300 idle sockets: more than the server has file descriptors.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(t) = TcpStream::connect(addr(&s)) {
            idle.push(t);
        }
    }
    let started = Instant::now();
    let health = c.get(s.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health_s = started.elapsed().as_secs_f64();
    assert!(
        health_s < 3.0,
        "/health took {health_s:.2} s with 300 idle sockets open"
    );
    let t = Instant::now();
    assert_eq!(s.complete(&c, &normal()).await, 200);
    let took = t.elapsed().as_secs_f64();
    let evicted = s.metric(&c, "w2s_connections_evicted_total").await;
    assert!(evicted >= 200.0);
    assert!(s.metric(&c, "w2s_connections_open").await <= 64.0);
    figure(format!(
        "idle under prlimit --nofile=128: {} idle sockets open; /health 200 in {health_s:.2} s, a completion 200 in {took:.2} s; evicted {evicted}",
        idle.len()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_and_an_idle_socket_are_closed_at_the_header_timeout() {
    let _g = serial();
    // Headers never finished, at 10 bytes a second (one client) or 1 (200 clients).
    let (timeout, clients, per_s) = size((2, 1, 10.0), (15, 200, 1.0));
    let s = smol(&["--header-timeout-secs", &timeout.to_string()]);
    let c = client(Duration::from_secs(60));
    let mut idle = TcpStream::connect(addr(&s)).unwrap();
    const HEAD: &[u8] = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let limit = Duration::from_secs(timeout + 6);
    let slow = trickle(&s, clients, HEAD, per_s, limit);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    assert_eq!(c.get(s.url("/health")).send().await.unwrap().status(), 200);
    let health = t.elapsed().as_secs_f64();
    let t = Instant::now();
    assert_eq!(s.complete(&c, &normal()).await, 200);
    let took = t.elapsed().as_secs_f64();
    let mut cut: Vec<Duration> = Vec::new();
    for h in slow {
        let (closed, at) = h.join().unwrap();
        assert!(
            closed && at < Duration::from_secs(timeout + 3),
            "slow client still open after {at:?}"
        );
        cut.push(at);
    }
    cut.sort();
    let (_, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(2));
    assert!(idle_closed, "an idle socket was kept past the timeout");
    figure(format!(
        "slowloris: {clients} clients sending headers at {per_s} bytes/s, --header-timeout-secs {timeout}: all cut off, after {:.1} s (median), {:.1} s (last); an idle socket closed too; meanwhile /health 200 in {health:.2} s, a completion 200 in {took:.2} s",
        cut[cut.len() / 2].as_secs_f64(),
        cut[cut.len() - 1].as_secs_f64()
    ));
}

#[test]
fn a_body_that_arrives_too_slowly_gets_408() {
    let _g = serial();
    let (timeout, per_s) = size((2u64, 4.0), (30, 0.5));
    let s = smol(&["--body-timeout-secs", &timeout.to_string()]);
    let body = normal().to_string();
    for (what, declared, rate) in [
        ("a body trickling", body.len(), per_s),
        (
            "a Content-Length 1000 over the body",
            body.len() + 1000,
            10_000.0,
        ),
    ] {
        let head = format!("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n");
        let mut t = TcpStream::connect(addr(&s)).unwrap();
        t.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        let mut w = t.try_clone().unwrap();
        let rest = body.clone().into_bytes();
        std::thread::spawn(move || {
            for b in rest {
                if w.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs_f64(1.0 / rate));
            }
        });
        let (got, _) = read_until_closed(&mut t, Duration::from_secs(timeout + 4));
        let at = started.elapsed();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{what}: {text}");
        assert!(
            text.contains(&format!("did not arrive within {timeout} s")),
            "{text}"
        );
        assert!(at < Duration::from_secs(timeout + 2), "{what}: {at:?}");
        figure(format!(
            "slow body: {what} ({rate} bytes/s), --body-timeout-secs {timeout}: 408 after {:.1} s",
            at.as_secs_f64()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_api_key_matches_byte_for_byte_and_the_scheme_is_case_insensitive() {
    let _g = serial();
    let key = "ключ-🔑";
    let s = Server::start(
        &[
            "--strong",
            "smollm2-135m-instruct",
            "--api-key-env",
            "W2S_TEST_KEY",
        ],
        &[("W2S_TEST_KEY", key)],
    );
    let c = client(Duration::from_secs(60));
    let with = |auth: Vec<u8>| {
        let c = c.clone();
        let url = s.url("/v1/models");
        async move {
            c.get(url)
                .header(
                    "authorization",
                    reqwest::header::HeaderValue::from_bytes(&auth).unwrap(),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut seen = Vec::new();
    for (auth, expected) in [
        (format!("Bearer {key}"), 200),
        (format!("bearer {key}"), 200),
        (format!("BEARER {key}"), 200),
        (format!("bEaReR {key}"), 200),
        (format!("Bearer {key}x"), 401),
        ("Bearer ключ".to_string(), 401),
        (format!("Basic {key}"), 401),
    ] {
        let got = with(auth.clone().into_bytes()).await;
        assert_eq!(got, expected, "{auth}");
        seen.push(format!("'{auth}': {got}"));
    }
    drop(s);
    // A key no header can carry is refused at start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args([
            "serve",
            "--config",
            &config_path(),
            "--port",
            "0",
            "--api-key-env",
            "W2S_TEST_KEY",
        ])
        .env("W2S_TEST_KEY", "line\nbreak")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("control characters"));
    figure(format!(
        "key: non-ASCII key {}; a key with a line break refused at start (exit 2)",
        seen.join("; ")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_is_taken_as_gone_and_its_search_stops() {
    let _g = serial();
    // A half-close and a close look the same until a write fails; the server takes both
    // as the client leaving, so that a search nobody waits for stops at once.
    let s = smol(&[]);
    let c = client(Duration::from_secs(60));
    // A request answered at once may be answered before the close is read.
    let mut h = TcpStream::connect(addr(&s)).unwrap();
    h.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    h.shutdown(Shutdown::Write).unwrap();
    let (got, _) = read_until_closed(&mut h, Duration::from_secs(2));
    let health = String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .unwrap_or("nothing")
        .to_string();
    let body = json!({"model": "w2s", "prompt": "The film", "max_tokens": 300}).to_string();
    let mut t = TcpStream::connect(addr(&s)).unwrap();
    write!(
        t,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let started = Instant::now();
    while s.metric(&c, "w2s_in_flight_searches").await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the search never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.shutdown(Shutdown::Write).unwrap();
    let left = Instant::now();
    while s.metric(&c, "w2s_in_flight_searches").await > 0.0 {
        assert!(
            left.elapsed() < Duration::from_secs(10),
            "the search went on for a client that left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = left.elapsed();
    assert_eq!(s.metric(&c, "w2s_disconnects_total").await, 1.0);
    let (got, closed) = read_until_closed(&mut t, Duration::from_secs(2));
    assert!(
        closed && got.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    figure(format!(
        "half-close: GET /health, write side shut 0.5 s after sending: answered {health}; a 300-token search, write side shut once it ran: answered nothing, its search stopped {:.2} s after the close (disconnects: 1)",
        stopped.as_secs_f64()
    ));
}
