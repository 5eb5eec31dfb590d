//! Starts a real `w2s serve` process on a free loopback port and stops it on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// One model-heavy test at a time: two llama.cpp processes on 2 cores starve each other.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Server {
    pub child: Child,
    pub base: String,
    /// Every line the server wrote to stderr so far.
    pub log: std::sync::Arc<Mutex<Vec<String>>>,
}

pub fn config_path() -> String {
    config("sentiment.toml")
}

/// The path of a file in `configs/`.
pub fn config(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

impl Server {
    /// Starts `w2s serve --config configs/sentiment.toml --port 0 EXTRA...` and waits until
    /// /health answers 200 (models loaded and warmed up).
    pub fn start(extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::start_with(&config_path(), extra, envs)
    }

    /// [`Server::start`] with another config file.
    pub fn start_with(cfg: &str, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::start_under(&[], cfg, extra, envs)
    }

    /// [`Server::start_with`], run through a wrapper command (e.g. `prlimit --nofile=128`).
    pub fn start_under(
        wrapper: &[&str],
        cfg: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_w2s"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_w2s")),
        };
        cmd.args(["serve", "--config", cfg, "--port", "0", "--threads", "2"])
            .args(extra)
            .env_remove("W2S_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start w2s serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(addr) = l.strip_prefix("listening on ") {
                        break addr.trim().to_string();
                    }
                }
                _ => panic!("w2s serve exited before listening"),
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(l);
            }
        });
        let server = Server { child, base, log };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = blocking_status(&format!("{}/health", server.base)) {
                if r == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "server not healthy in time");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// One gauge or counter from /metrics.
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> f64 {
        self.metrics_text(client)
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    async fn metrics_text(&self, client: &reqwest::Client) -> String {
        let r = client.get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// POSTs `body` to `path`: the status and the JSON answer.
    pub async fn post(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = client.post(self.url(path)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The status of a completion request.
    pub async fn complete(&self, client: &reqwest::Client, body: &serde_json::Value) -> u16 {
        self.post(client, "/v1/completions", body).await.0
    }
}

/// A client with a total timeout per request.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// POSTs `body` as JSON to `path` of `server` and waits: (status, JSON reply).
pub fn post_blocking(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    rt.block_on(async {
        let r = client
            .post(server.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    })
}

/// The Python of the test virtualenv (`scripts/install-test-python`).
pub fn venv_python() -> std::path::PathBuf {
    let cache = std::env::var_os("W2S_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/w2s")
        });
    cache.join("venv-test/bin/python")
}

impl Server {
    /// The server's resident and peak memory in kB (`VmRSS`, `VmHWM`).
    pub fn memory_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The sum of a metric over all its label sets.
    pub async fn metric_total(&self, client: &reqwest::Client, name: &str) -> f64 {
        self.metrics_text(client)
            .await
            .lines()
            .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .sum()
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of a plain GET, without an async runtime.
pub fn blocking_status(url: &str) -> Result<u16, std::io::Error> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad response"))
}

/// Runs a Python test client of `tests/` against `server` (its base URL as argv[1]) in
/// the test virtualenv; it must succeed and print `done`.
pub fn run_python(script: &str, server: &Server, done: &str) {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} missing: run scripts/install-test-python",
        python.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&server.base)
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout: {so}\nstderr: {se}");
    assert!(so.contains(done), "{so}");
}
