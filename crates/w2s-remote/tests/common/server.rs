//! Starts a real llama-cpp-python server (installed by scripts/install-llama-server) on a
//! free loopback port, waits until it answers, and kills it on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub url: String,
    pub port: u16,
    log: PathBuf,
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("W2S_LLAMA_SERVER_PYTHON") {
        return p.into();
    }
    let cache = std::env::var_os("W2S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache/w2s")
        });
    cache.join("venv-llama-server/bin/python")
}

pub fn model_path(name: &str) -> PathBuf {
    let p = w2s_llama::resolve_model(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models {name}",
        p.display()
    );
    p
}

impl Server {
    /// Serves `model` (a fetched model name) as `alias`; `logits_all` enables echo log-probs.
    pub fn start(model: &str, alias: &str, logits_all: bool) -> Server {
        let py = python();
        assert!(
            py.exists(),
            "{} is missing: run scripts/install-llama-server",
            py.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("w2s-llama-server-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&py)
            .args([
                "-m",
                "llama_cpp.server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg("--model")
            .arg(model_path(model))
            .args([
                "--model_alias",
                alias,
                "--n_ctx",
                "2048",
                "--n_threads",
                "1",
                "--verbose",
                "false",
            ])
            .args(["--logits_all", if logits_all { "true" } else { "false" }])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot start llama-cpp-python's server");
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}/v1"),
            port,
            log,
        };
        server.wait_ready(port, Duration::from_secs(120));
        server
    }

    fn wait_ready(&mut self, port: u16, deadline: Duration) {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if get(port, "/v1/models").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "the server was not ready within {deadline:?}:\n{}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
