//! `w2s serve` against hostile and careless clients, SmolLM2 in every role on loopback:
//! idle sockets past the file-descriptor limit, slow headers and bodies, a long prompt
//! whose client leaves, prompts over the token cap, memory after a long request, non-ASCII
//! API keys, server paths in errors, half-closed connections. Each test is bounded in
//! time; `scripts/bench-attacks` runs the full-size attacks and prints figures.

#![allow(clippy::await_holding_lock)]

#[allow(dead_code)] // shared with the other server tests
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::server::{client, config_path, serial, Server};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_past_the_fd_limit_do_not_lock_out_health_or_requests() {
    let _g = serial();
    let s = Server::start_under(
        &["prlimit", "--nofile=128:128"],
        &config_path(),
        &["--strong", "smollm2-135m-instruct"],
        &[],
    );
    let c = client(Duration::from_secs(120));
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
    let r = c
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "w2s", "prompt": "The film", "max_tokens": 3, "search": {"method": "sample"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.metric(&c, "w2s_connections_evicted_total").await >= 200.0);
    assert!(s.metric(&c, "w2s_connections_open").await <= 64.0);
    eprintln!(
        "/health in {health_s:.2} s with {} idle sockets",
        idle.len()
    );
}

#[test]
fn a_slowloris_client_and_an_idle_socket_are_closed_at_the_header_timeout() {
    let _g = serial();
    let s = smol(&["--header-timeout-secs", "2"]);
    let mut idle = TcpStream::connect(addr(&s)).unwrap();
    let mut slow = TcpStream::connect(addr(&s)).unwrap();
    let mut reader = slow.try_clone().unwrap();
    let started = Instant::now();
    // Headers at 10 bytes a second, never finished.
    let writer = std::thread::spawn(move || {
        let head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for b in head.iter().chain(std::iter::repeat(&b'a')).take(100) {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (_, closed) = read_until_closed(&mut reader, Duration::from_secs(8));
    let at = started.elapsed();
    assert!(
        closed && at < Duration::from_secs(5),
        "slow client still open after {at:?}"
    );
    let (_, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(2));
    assert!(idle_closed, "an idle socket was kept past the timeout");
    let _ = writer.join();
    eprintln!("slowloris client cut off after {:.2} s", at.as_secs_f64());
}

#[test]
fn a_body_that_arrives_too_slowly_gets_408() {
    let _g = serial();
    let s = smol(&["--body-timeout-secs", "2"]);
    let mut t = TcpStream::connect(addr(&s)).unwrap();
    let started = Instant::now();
    t.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
        .unwrap();
    let (got, _) = read_until_closed(&mut t, Duration::from_secs(6));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 2 s"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_cancelled_when_its_client_leaves_and_health_stays_ok() {
    let _g = serial();
    let s = smol(&["--watchdog-secs", "10"]);
    let c = client(Duration::from_secs(120));
    let normal = json!({"model": "w2s", "prompt": "The film", "max_tokens": 4, "search": {"method": "sample"}});
    let t = Instant::now();
    assert_eq!(s.complete(&c, &normal).await, 200);
    let alone = t.elapsed();
    // About 3,000 tokens in each of the three models: tens of seconds of prompt work.
    let long = json!({"model": "w2s", "prompt": long_prompt(3000), "max_tokens": 4, "search": {"method": "sample"}});
    let gone = client(Duration::from_secs(2))
        .post(s.url("/v1/completions"))
        .json(&long)
        .send()
        .await;
    assert!(gone.is_err(), "the long prompt finished within 2 s");
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
    assert_eq!(s.complete(&c, &normal).await, 200);
    let next = left.elapsed();
    assert!(
        next < alone + Duration::from_secs(4),
        "the next request took {next:?} after the long prompt's client left ({alone:?} alone)"
    );
    eprintln!(
        "client's leave noticed after {:.3} s; next request {:.2} s after the client left ({:.2} s alone)",
        noticed.as_secs_f64(),
        next.as_secs_f64(),
        alone.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_over_the_token_cap_are_refused_and_cost_admission() {
    let _g = serial();
    // The cap, and admission that charges prompt tokens: in a queue of 200, a 4-token
    // sample with a 250-token prompt (in three models) runs only alone.
    let s = smol(&["--max-prompt-tokens", "100", "--queue-capacity", "200"]);
    let c = client(Duration::from_secs(120));
    let body = |p: String| json!({"model": "w2s", "prompt": p, "max_tokens": 4, "search": {"method": "sample"}});
    let r = c
        .post(s.url("/v1/completions"))
        .json(&body(long_prompt(150)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("at most 100 tokens"), "{m}");
    let r = c
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "tuned", "prompt": long_prompt(150), "max_tokens": 2}))
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
    let s = smol(&["--keep-context-tokens", "512"]);
    let c = client(Duration::from_secs(300));
    let normal = json!({"model": "w2s", "prompt": "The film", "max_tokens": 8});
    for _ in 0..2 {
        assert_eq!(s.complete(&c, &normal).await, 200);
    }
    let (before, _) = s.memory_kb();
    let long = json!({"model": "w2s", "prompt": long_prompt(2000), "max_tokens": 4, "search": {"method": "cbs", "w": 2, "k": 2, "l": 2}});
    assert_eq!(s.complete(&c, &long).await, 200);
    assert_eq!(s.complete(&c, &normal).await, 200);
    let (after, peak) = s.memory_kb();
    eprintln!("RSS {before} kB before, peak {peak} kB, {after} kB after");
    assert!(
        peak > before + 40_000,
        "the long prompt did not grow memory (peak {peak} kB, before {before} kB)"
    );
    assert!(
        (after as f64) < before as f64 * 1.2,
        "RSS {after} kB after the long prompt, {before} kB before"
    );
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
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(
            with(format!("{scheme} {key}").into_bytes()).await,
            200,
            "{scheme}"
        );
    }
    assert_eq!(with(format!("Bearer {key}x").into_bytes()).await, 401);
    assert_eq!(with("Bearer ключ".as_bytes().to_vec()).await, 401);
    assert_eq!(with(format!("Basic {key}").into_bytes()).await, 401);
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_is_taken_as_gone_and_its_search_stops() {
    let _g = serial();
    // A half-close and a close look the same until a write fails; the server takes both
    // as the client leaving, so that a search nobody waits for stops at once.
    let s = smol(&[]);
    let c = client(Duration::from_secs(60));
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
    assert_eq!(s.metric(&c, "w2s_disconnects_total").await, 1.0);
    let (got, closed) = read_until_closed(&mut t, Duration::from_secs(2));
    assert!(
        closed && got.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
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
    eprintln!(
        "{polls} /health polls, all 200, over a {:.1} s prompt",
        took.as_secs_f64()
    );
}
