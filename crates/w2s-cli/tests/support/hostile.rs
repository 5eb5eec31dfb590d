//! The attacks of `serve_hostile*.rs` on `w2s serve`: each written once, at two sizes,
//! the suite's (small and bounded in time) and the full size that `W2S_ATTACKS=full` gives
//! (`scripts/bench-attacks`), where the same assertions hold; each test prints what was
//! sent and what the server did as a line starting `attack: `.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::server::{blocking_status, Server};

/// Whether the attacks run at full size (`W2S_ATTACKS=full`).
pub fn full() -> bool {
    std::env::var("W2S_ATTACKS").is_ok_and(|v| v == "full")
}

/// `small` in the suite, `full` at full size.
pub fn size<T>(small: T, full_size: T) -> T {
    if full() {
        full_size
    } else {
        small
    }
}

/// One figure: what was sent and what the server did.
pub fn figure(line: String) {
    eprintln!("attack: {line}");
}

/// SmolLM2 as the strong model too, with `extra` flags.
pub fn smol(extra: &[&str]) -> Server {
    let mut args = vec!["--strong", "smollm2-135m-instruct"];
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

pub fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection or `limit` passes; the bytes read and
/// whether it was closed.
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
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

pub fn long_prompt(words: usize) -> String {
    " hello".repeat(words)
}

/// Polls /health every 250 ms until `stop` is set: each poll's status (0 when the request
/// failed) and seconds.
pub fn poll_health(s: &Server, stop: Arc<AtomicBool>) -> JoinHandle<Vec<(u16, f64)>> {
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
pub fn health_polls(stop: Arc<AtomicBool>, poller: JoinHandle<Vec<(u16, f64)>>) -> (usize, f64) {
    stop.store(true, Ordering::SeqCst);
    let polls = poller.join().unwrap();
    let bad: Vec<_> = polls.iter().filter(|(st, _)| *st != 200).collect();
    assert!(bad.is_empty(), "/health answered {bad:?}");
    let worst = polls.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    (polls.len(), worst)
}

/// The soft limit on this process's open files.
pub fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

pub fn normal() -> Value {
    json!({"model": "w2s", "prompt": "The film", "max_tokens": 3, "search": {"method": "sample"}})
}

/// `clients` connections sending `data` one byte at a time, `per_s` bytes a second,
/// until the server answers or closes or `limit` passes: for each, whether the server
/// closed it (or answered) and when.
pub fn trickle(
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
                std::thread::spawn(move || {
                    for b in data {
                        if t.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs_f64(1.0 / per_s));
                    }
                });
                let (_, closed) = read_until_closed(&mut reader, limit);
                let at = started.elapsed();
                (closed, at)
            })
        })
        .collect()
}
