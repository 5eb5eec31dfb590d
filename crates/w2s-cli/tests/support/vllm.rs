//! Starts vLLM's OpenAI-compatible server (the CPU build installed by
//! scripts/install-vllm: `$W2S_VLLM_PYTHON`, else the script's cached venv) on a free
//! loopback port, serving a Hugging Face folder that script made from a fetched GGUF, and
//! waits until `GET /health` answers 200.
//!
//! vLLM takes a minute or two to start on a busy 2-core machine, so a test binary starts
//! one server and shares it. A watchdog shell stays beside it and ends its whole process
//! group (vLLM runs its engine in a child process) as soon as the test process is gone,
//! so a server shared through a `static` (never dropped) does not outlive its tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The model the vLLM tests serve, and the texts they score.
pub const NAME: &str = "smollm2-135m-instruct";
pub const PROMPT: &str = "I rented this movie last weekend and";
/// SmolLM2's chat markup asking for a positive review, as plain text (a remote scorer
/// reads text through /v1/completions).
pub const POSITIVE: &str =
    "<|im_start|>user\nWrite a very positive movie review.<|im_end|>\n<|im_start|>assistant\n{prompt}";
pub const IMDB: &str = "Here is a movie review from imdb: {prompt}";
pub const EOS: &str = "<|im_end|>";
/// Largest difference allowed between vLLM's and the local scorer's log-probability of
/// one token of the same float32 weights (measured: at most 5.0e-3).
pub const PER_TOKEN: f64 = 1e-2;

/// A checked endpoint for the served model, `f` setting its fields.
pub fn endpoint(url: &str, f: impl FnOnce(&mut w2s_remote::RemoteSpec)) -> w2s_remote::Endpoint {
    let mut spec = w2s_remote::RemoteSpec::new(url, "smollm2");
    spec.request_timeout_s = 300.0;
    f(&mut spec);
    spec.check().unwrap()
}

/// Runs the w2s binary.
pub fn w2s(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args(args)
        .env_remove("W2S_LOG")
        .output()
        .unwrap()
}

/// An empty scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2s-vllm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Vllm {
    child: Child,
    pub url: String,
    pub port: u16,
    /// The name it serves the model as.
    pub model: String,
    log: PathBuf,
}

fn cache() -> PathBuf {
    std::env::var_os("W2S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache/w2s")
        })
}

/// The venv's python that runs vLLM.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("W2S_VLLM_PYTHON") {
        return p.into();
    }
    cache().join("venv-vllm-0.32.0/bin/python")
}

/// The Hugging Face folder made from the fetched model `name`.
pub fn hf_folder(name: &str) -> PathBuf {
    cache().join("hf").join(name)
}

/// The F32 GGUF converted back from that folder: the weights vLLM serves.
pub fn f32_gguf(name: &str) -> PathBuf {
    let p = cache().join("hf").join(format!("{name}.f32.gguf"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-vllm",
        p.display()
    );
    p
}

impl Vllm {
    /// Serves the folder of `name` as `served` (float32, 2048 tokens of context, 1 GiB
    /// of KV cache), with `extra` arguments for `vllm serve`.
    pub fn start(name: &str, served: &str, extra: &[&str]) -> Vllm {
        let py = python();
        let folder = hf_folder(name);
        assert!(
            py.exists() && folder.join("config.json").exists(),
            "{} or {} is missing: run scripts/install-vllm (or set W2S_VLLM_PYTHON)",
            py.display(),
            folder.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("w2s-vllm-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        // (`kill -SIG -PGID`: dash's kill takes no `--`.)
        let watchdog = r#"parent=$1; shift
setsid "$@" &
pid=$!
stop() { kill -TERM -$pid 2>/dev/null; sleep 3; kill -KILL -$pid 2>/dev/null; }
trap 'stop; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
stop
wait $pid"#;
        let child = Command::new("sh")
            .args(["-c", watchdog, "sh"])
            .arg(std::process::id().to_string())
            .arg(&py)
            .args(["-m", "vllm.entrypoints.openai.api_server", "--model"])
            .arg(&folder)
            .args([
                "--served-model-name",
                served,
                "--host",
                "127.0.0.1",
                "--port",
            ])
            .arg(port.to_string())
            .args([
                "--dtype",
                "float32",
                "--max-model-len",
                "2048",
                "--max-logprobs",
                "20",
                "--enforce-eager",
            ])
            .args(extra)
            .env("VLLM_CPU_KVCACHE_SPACE", "1")
            .env("VLLM_LOGGING_LEVEL", "INFO")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot start vLLM");
        let mut server = Vllm {
            child,
            url: format!("http://127.0.0.1:{port}/v1"),
            port,
            model: served.to_string(),
            log,
        };
        server.wait_ready(Duration::from_secs(600));
        server
    }

    fn wait_ready(&mut self, deadline: Duration) {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "vLLM exited ({status}) before it was ready:\n{}",
                    self.log_tail(40)
                );
            }
            if self.get("/health").is_some_and(|(s, _)| s == 200) {
                eprintln!("vLLM ready in {:.0} s", start.elapsed().as_secs_f64());
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "vLLM was not ready within {deadline:?}:\n{}",
            self.log_tail(40)
        );
    }

    /// Stops the server now (the test goes on against a dead port).
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // The watchdog ends vLLM's process group on TERM.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

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

    /// `POST path` with a JSON body: (status, parsed body).
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, text) = http(self.port, "POST", path, &body.to_string())
            .unwrap_or_else(|| panic!("no answer from vLLM to {path}"));
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("vLLM's answer to {path} is not JSON ({e}): {text}"));
        (status, value)
    }

    /// A counter of vLLM's Prometheus `/metrics` (summed over its label sets).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Vllm {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(300))).ok()?;
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
    // A chunked body (uvicorn's streaming) is not expected for these JSON answers.
    Some((status, body))
}
