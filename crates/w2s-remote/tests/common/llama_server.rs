//! Starts llama.cpp's own server, `llama-server` (built by scripts/install-llama-cpp-server;
//! the binary is `$W2S_LLAMA_CPP_SERVER`, else the script's cache path), on a free loopback
//! port, waits until `GET /health` answers 200, and kills it on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::model_path;

pub struct LlamaServer {
    child: Child,
    pub url: String,
    pub port: u16,
    log: PathBuf,
}

/// The llama-server binary.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("W2S_LLAMA_CPP_SERVER") {
        return p.into();
    }
    let cache = std::env::var_os("W2S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache/w2s")
        });
    cache.join("llama-cpp-server-11434/bin/llama-server")
}

impl LlamaServer {
    /// Serves `model` (a fetched model name) as `alias` with `parallel` slots, 1 thread
    /// and 1024 tokens of context per slot, plus `extra` arguments.
    pub fn start(model: &str, alias: &str, parallel: usize, extra: &[&str]) -> LlamaServer {
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run scripts/install-llama-cpp-server (or set W2S_LLAMA_CPP_SERVER)",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("w2s-llama-cpp-server-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .arg("--model")
            .arg(model_path(model))
            .args(["--alias", alias, "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--parallel", &parallel.to_string()])
            .args(["--ctx-size", &(1024 * parallel).to_string()])
            .args([
                "--threads",
                "1",
                "--threads-batch",
                "1",
                "--log-colors",
                "off",
                "--no-webui",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot start llama-server");
        let mut server = LlamaServer {
            child,
            url: format!("http://127.0.0.1:{port}/v1"),
            port,
            log,
        };
        server.wait_ready(Duration::from_secs(120));
        server
    }

    fn wait_ready(&mut self, deadline: Duration) {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "llama-server exited ({status}) before it was ready:\n{}",
                    self.log_tail(30)
                );
            }
            if self.get("/health").is_some_and(|(s, _)| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "llama-server was not ready within {deadline:?}:\n{}",
            self.log_tail(30)
        );
    }

    /// Kills the server now (the test goes on against a dead port).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `GET path` at the server's root: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "GET", path, "")
    }

    /// `POST path` with a JSON body: (status, body).
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Option<(u16, String)> {
        http(self.port, "POST", path, &body.to_string())
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// From llama-server's log: the most slots processing at once, and the most of them that
/// were separate requests (not the `n > 1` children of one request).
pub fn max_concurrent_slots(log: &str) -> (usize, usize) {
    use std::collections::HashMap;
    let mut active: HashMap<String, bool> = HashMap::new(); // slot id -> is a child
    let (mut slots, mut requests) = (0, 0);
    for line in log.lines() {
        let slot_id = |l: &str| {
            l.split("| task")
                .next()
                .and_then(|h| h.rsplit("id ").next())
                .map(|s| s.trim().to_string())
        };
        if line.contains("launch_slot_:") && line.contains("processing task") {
            if let Some(id) = slot_id(line) {
                active.insert(id, line.contains("is_child = 1"));
            }
        } else if line.contains("release:") && line.contains("stop processing") {
            if let Some(id) = slot_id(line) {
                active.remove(&id);
            }
        }
        slots = slots.max(active.len());
        requests = requests.max(active.values().filter(|c| !**c).count());
    }
    (slots, requests)
}
