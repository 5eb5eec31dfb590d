//! `w2s serve` against hostile and careless clients, SmolLM2 in every role on loopback:
//! idle sockets past the file-descriptor limit, slow headers and bodies, a long prompt
//! whose client leaves, prompts over the token cap, memory after a long request, non-ASCII
//! API keys, server paths in errors, half-closed connections.
//!
//! Each attack is written once, at two sizes: the suite's, small and bounded in time, and
//! the full size that `W2S_ATTACKS=full` gives (`scripts/bench-attacks`: 19,000 idle
//! sockets, 200 slowloris clients, an 8,100-token prompt, the default timeouts), where
//! the same assertions hold. Each test prints what was sent and what the server did as a
//! line starting `attack: `.

#![allow(clippy::await_holding_lock)]

#[allow(dead_code)] // shared with the other server tests
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::server::{blocking_status, client, config_path, serial, Server};

/// Whether the attacks run at full size (`W2S_ATTACKS=full`).
fn full() -> bool {
    std::env::var("W2S_ATTACKS").is_ok_and(|v| v == "full")
}

/// `small` in the suite, `full` at full size.
fn size<T>(small: T, full_size: T) -> T {
    if full() {
        full_size
    } else {
        small
    }
}

/// One figure: what was sent and what the server did.
fn figure(line: String) {
    eprintln!("attack: {line}");
}

/// SmolLM2 as the strong model too, with `extra` flags.
fn smol(extra: &[&str]) -> Server {
    let mut args = vec!["--strong", "smollm2-135m-instruct"];
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection or `limit` passes; the bytes read and
/// whether it was closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

fn long_prompt(words: usize) -> String {
    " hello".repeat(words)
}

/// Polls /health every 250 ms until `stop` is set: each poll's status (0 when the request
/// failed) and seconds.
fn poll_health(s: &Server, stop: Arc<AtomicBool>) -> JoinHandle<Vec<(u16, f64)>> {
    let url = s.url("/health");
    std::thread::spawn(move || {
        let mut polls = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            let status = blocking_status(&url).unwrap_or(0);
            polls.push((status, t.elapsed().as_secs_f64()));
            std::thread::sleep(Duration::from_millis(250));
        }
        polls
    })
}

/// Stops a poller: its polls, every one of which must have been 200, and the slowest.
fn health_polls(stop: Arc<AtomicBool>, poller: JoinHandle<Vec<(u16, f64)>>) -> (usize, f64) {
    stop.store(true, Ordering::SeqCst);
    let polls = poller.join().unwrap();
    let bad: Vec<_> = polls.iter().filter(|(st, _)| *st != 200).collect();
    assert!(bad.is_empty(), "/health answered {bad:?}");
    let worst = polls.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    (polls.len(), worst)
}

/// The soft limit on this process's open files.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

fn normal() -> Value {
    json!({"model": "w2s", "prompt": "The film", "max_tokens": 3, "search": {"method": "sample"}})
}

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

/// `clients` connections sending `data` one byte at a time, `per_s` bytes a second,
/// until the server answers or closes or `limit` passes: for each, whether the server
/// closed it (or answered) and when.
fn trickle(
    s: &Server,
    clients: usize,
    data: &'static [u8],
    per_s: f64,
    limit: Duration,
) -> Vec<JoinHandle<(bool, Duration)>> {
    (0..clients)
        .map(|_| {
            let to = addr(s);
            std::thread::spawn(move || {
                let started = Instant::now();
                let Ok(mut t) = TcpStream::connect(&to) else {
                    return (true, started.elapsed());
                };
                let mut reader = t.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    for b in data {
                        if t.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs_f64(1.0 / per_s));
                    }
                });
                let (_, closed) = read_until_closed(&mut reader, limit);
                let at = started.elapsed();
                drop(writer);
                (closed, at)
            })
        })
        .collect()
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
async fn a_long_prompt_is_cancelled_when_its_client_leaves_and_health_stays_ok() {
    let _g = serial();
    // About 3,000 (8,100) tokens in each of the three models: tens of seconds of prompt
    // work (minutes), left by its client after 2 (5) s.
    let (words, cap, patience) = size((3000, "4096", 2), (8100, "9000", 5));
    let s = smol(&["--watchdog-secs", "10", "--max-prompt-tokens", cap]);
    let c = client(Duration::from_secs(120));
    let t = Instant::now();
    assert_eq!(s.complete(&c, &normal()).await, 200);
    let alone = t.elapsed();
    let long = json!({"model": "w2s", "prompt": long_prompt(words), "max_tokens": 4, "search": {"method": "sample"}});
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_health(&s, stop.clone());
    let gone = client(Duration::from_secs(patience))
        .post(s.url("/v1/completions"))
        .json(&long)
        .send()
        .await;
    assert!(
        gone.is_err(),
        "the long prompt finished within {patience} s"
    );
    let left = Instant::now();
    // The client's socket closes as its request is dropped; the server frees the queue
    // share when it reads the close, which it counts.
    let noticed = loop {
        let m = c.get(s.url("/metrics")).send().await.unwrap();
        assert_eq!(m.status(), 200);
        if m.text().await.unwrap().contains("w2s_disconnects_total 1") {
            break left.elapsed();
        }
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "the server did not notice the client leave within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let health = c.get(s.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "{:?}", health.text().await);
    assert_eq!(s.complete(&c, &normal()).await, 200);
    let next = left.elapsed();
    assert!(
        next < alone + Duration::from_secs(4),
        "the next request took {next:?} after the long prompt's client left ({alone:?} alone)"
    );
    let (polls, worst) = health_polls(stop, poller);
    figure(format!(
        "long prompt: {words} tokens (--max-prompt-tokens {cap}), client timeout {patience} s: the leave noticed after {:.3} s; the next request ({:.2} s alone) answered 200 {:.2} s after the client left; /health polled {polls} times meanwhile, all 200, worst {worst:.2} s",
        noticed.as_secs_f64(),
        alone.as_secs_f64(),
        next.as_secs_f64(),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_over_the_token_cap_are_refused_and_cost_admission() {
    let _g = serial();
    // The cap (100 in the suite, the default 4096 at full size), and admission that
    // charges prompt tokens: in a queue of 200, a 4-token sample with a 250-token prompt
    // (in three models) runs only alone.
    let (cap, words) = size((Some("100"), 150), (None, 8100));
    let mut flags = vec!["--queue-capacity", "200"];
    if let Some(cap) = cap {
        flags.extend(["--max-prompt-tokens", cap]);
    }
    let s = smol(&flags);
    let c = client(Duration::from_secs(120));
    let body = |p: String| json!({"model": "w2s", "prompt": p, "max_tokens": 4, "search": {"method": "sample"}});
    let t = Instant::now();
    let r = c
        .post(s.url("/v1/completions"))
        .json(&body(long_prompt(words)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let took = t.elapsed().as_secs_f64();
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&format!("at most {} tokens", cap.unwrap_or("4096"))),
        "{m}"
    );
    figure(format!(
        "long prompt: {words} tokens over the cap of {}: 400 in {took:.2} s",
        cap.unwrap_or("4096 (the default)")
    ));
    let r = c
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "tuned", "prompt": long_prompt(words), "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let ok = c
        .post(s.url("/v1/completions"))
        .json(&body("The film".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    drop(s);
    let s = smol(&["--max-prompt-tokens", "1000", "--queue-capacity", "200"]);
    // A slow short request holds part of the queue; meanwhile the long prompt gets 429.
    let slow = json!({"model": "w2s", "prompt": "The film", "max_tokens": 40, "search": {"method": "bon", "n": 4}});
    let (c2, url) = (c.clone(), s.url("/v1/completions"));
    let running =
        tokio::spawn(async move { c2.post(url).json(&slow).send().await.unwrap().status() });
    let t = Instant::now();
    while s.metric(&c, "w2s_in_flight_searches").await < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c
        .post(s.url("/v1/completions"))
        .json(&body(long_prompt(80)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "a prompt of 3 x 80 tokens + 4 must wait for an empty queue of 200"
    );
    assert_eq!(running.await.unwrap(), 200);
    let r = c
        .post(s.url("/v1/completions"))
        .json(&body(long_prompt(80)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "alone, it runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_its_level_after_a_long_prompt() {
    let _g = serial();
    // A CBS request with a 2,000-token prompt (4,000 at full size, then a 7,000-token
    // echo of the prompt's log-probabilities).
    let words = size(2000, 4000);
    let s = smol(size(
        &["--keep-context-tokens", "512"][..],
        &[
            "--keep-context-tokens",
            "512",
            "--max-prompt-tokens",
            "9000",
        ],
    ));
    let c = client(Duration::from_secs(600));
    let normal = json!({"model": "w2s", "prompt": "The film", "max_tokens": 8});
    for _ in 0..2 {
        assert_eq!(s.complete(&c, &normal).await, 200);
    }
    let (before, _) = s.memory_kb();
    let long = json!({"model": "w2s", "prompt": long_prompt(words), "max_tokens": 4, "search": {"method": "cbs", "w": 2, "k": 2, "l": 2}});
    let t = Instant::now();
    assert_eq!(s.complete(&c, &long).await, 200);
    let took = t.elapsed().as_secs_f64();
    assert_eq!(s.complete(&c, &normal).await, 200);
    let (after, peak) = s.memory_kb();
    assert!(
        peak > before + 40_000,
        "the long prompt did not grow memory (peak {peak} kB, before {before} kB)"
    );
    assert!(
        (after as f64) < before as f64 * 1.2,
        "RSS {after} kB after the long prompt, {before} kB before"
    );
    let mb = |kb: u64| kb as f64 / 1024.0;
    let mut line = format!(
        "memory: RSS {:.0} MB before a {words}-token CBS request (200, {took:.1} s), peak {:.0} MB, {:.0} MB after ({:.2}x)",
        mb(before),
        mb(peak),
        mb(after),
        after as f64 / before as f64
    );
    if full() {
        let echo = json!({"model": "tuned", "prompt": long_prompt(7000), "max_tokens": 0, "echo": true, "logprobs": 0});
        let t = Instant::now();
        assert_eq!(s.complete(&c, &echo).await, 200);
        let took = t.elapsed().as_secs_f64();
        let (after, peak) = s.memory_kb();
        assert!(
            (after as f64) < before as f64 * 1.2,
            "RSS {after} kB after the echo, {before} kB before"
        );
        line += &format!(
            "; a 7,000-token echo (200, {took:.1} s): peak {:.0} MB, {:.0} MB after ({:.2}x)",
            mb(peak),
            mb(after),
            after as f64 / before as f64
        );
    }
    figure(line);
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
async fn errors_to_clients_name_no_server_paths_or_flags() {
    let _g = serial();
    let s = smol(&["--max-prompt-tokens", "20000"]);
    let c = client(Duration::from_secs(120));
    for body in [
        json!({"model": "tuned", "prompt": long_prompt(9000), "max_tokens": 4}),
        json!({"model": "w2s", "prompt": long_prompt(9000), "max_tokens": 4}),
    ] {
        let r = c
            .post(s.url("/v1/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("max_tokens 4"), "{m}");
        assert!(m.contains("model"), "{m}");
        assert!(
            !m.contains(".gguf") && !m.contains('/') && !m.contains("--"),
            "{m}"
        );
        figure(format!(
            "errors: a 9,000-token request to model {} answers 400: {m}",
            body["model"]
        ));
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_ok_while_a_long_prompt_runs_past_the_watchdog() {
    let _g = serial();
    // Each prompt micro-batch is progress: a job longer than the watchdog that keeps
    // working is busy, not stalled.
    let s = smol(&["--watchdog-secs", "3"]);
    let c = client(Duration::from_secs(300));
    let long = json!({"model": "w2s", "prompt": long_prompt(2500), "max_tokens": 4, "search": {"method": "sample"}});
    let (c2, url) = (c.clone(), s.url("/v1/completions"));
    let started = Instant::now();
    let job = tokio::spawn(async move { c2.post(url).json(&long).send().await.unwrap().status() });
    let mut polls = 0;
    while !job.is_finished() {
        let h = c.get(s.url("/health")).send().await.unwrap();
        let status = h.status();
        assert_eq!(
            status,
            200,
            "{:?} after {:?}",
            h.text().await,
            started.elapsed()
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(job.await.unwrap(), 200);
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(4),
        "the prompt took only {took:?}: not past the watchdog"
    );
    figure(format!(
        "watchdog: a 2,500-token prompt past --watchdog-secs 3: {polls} /health polls, all 200, over {:.1} s",
        took.as_secs_f64()
    ));
}
