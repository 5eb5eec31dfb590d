//! `w2s eval`, `w2s bench` and `w2s serve` with the strong model on llama.cpp's own
//! server (`llama-server`, built by scripts/install-llama-cpp-server, serving the real
//! gemma-3-270m GGUF) and the SmolLM2 guide pair local: the black-box setting, where the
//! engine returns sampled text only.

#[allow(dead_code)] // shared with the other server tests
mod support;

/// What the llama-server starter shared with crates/w2s-remote/tests needs.
mod server {
    pub fn model_path(name: &str) -> std::path::PathBuf {
        let p = w2s_llama::resolve_model(name);
        assert!(
            p.exists(),
            "{} is missing: run scripts/fetch-models {name}",
            p.display()
        );
        p
    }
}

#[allow(dead_code)]
#[path = "../../w2s-remote/tests/common/llama_server.rs"]
mod llama_server;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use llama_server::LlamaServer;
use support::server::{blocking_status, config_path, serial, Server};

fn w2s(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args(args)
        .env_remove("W2S_LOG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "w2s-cli-llama-server-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sampling tasks llama-server has started (one per sample of an `n`-sample request).
fn tasks(engine: &LlamaServer) -> usize {
    engine
        .log()
        .lines()
        .filter(|l| l.contains("launch_slot_") && l.contains("processing task"))
        .count()
}

fn strong_spec(engine: &LlamaServer) -> String {
    format!("{}#gemma-3-270m", engine.url)
}

#[test]
fn eval_with_the_strong_model_on_llama_server() {
    let _one = serial();
    let engine = LlamaServer::start("gemma-3-270m", "gemma-3-270m", 4, &[]);
    let dir = scratch("eval");
    let prompts = dir.join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": \"a\", \"prompt\": \"I rented this movie last weekend and\"}\n{\"id\": \"b\", \"prompt\": \"The plot of this film\"}\n",
    )
    .unwrap();
    let out = dir.join("run");
    let strong = strong_spec(&engine);
    let args = [
        "eval",
        "--config",
        &config_path(),
        "--strong",
        &strong,
        "--prompts",
        prompts.to_str().unwrap(),
        "--methods",
        "sample,bon:4,cbs:2x2x5",
        "--seeds",
        "1",
        "--max-new-tokens",
        "15",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = w2s(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let records = w2s_eval::read_records(&out.join("results.jsonl")).unwrap();
    assert_eq!(records.len(), 6);
    for r in &records {
        assert!(!r.response.is_empty(), "{r:?}");
        assert!(r.http_requests >= 1, "{r:?}");
        assert!((-1.0..=1.0).contains(&r.gold[0].value));
        assert!((r.guide - (r.tuned_logprob - r.untuned_logprob)).abs() < 1e-9);
    }
    // CBS 2x2x5 over 15 tokens: 3 steps, each one request per kept beam (n = 2).
    let cbs: Vec<_> = records.iter().filter(|r| r.method == "cbs:2x2x5").collect();
    assert!(
        cbs.iter()
            .all(|r| r.http_requests >= 3 && r.http_requests <= 12),
        "{cbs:?}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("HTTP requests / prompt"), "{report}");
    assert!(
        report.contains(&strong),
        "the report names the engine: {report}"
    );
    // A rerun resumes: nothing is left to do, no request is sent.
    let before = tasks(&engine);
    assert!(before >= 6, "the engine sampled every response");
    let o = w2s(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 of 6 lines to do"), "{}", stderr(&o));
    assert_eq!(tasks(&engine), before);
}

#[test]
fn bench_with_the_strong_model_on_llama_server() {
    let _one = serial();
    let engine = LlamaServer::start("gemma-3-270m", "gemma-3-270m", 4, &[]);
    let strong = strong_spec(&engine);
    let o = w2s(&[
        "bench",
        "--config",
        &config_path(),
        "--strong",
        &strong,
        "--methods",
        "sample,cbs:2x2x5",
        "--repeats",
        "1",
        "--max-new-tokens",
        "10",
        "--threads",
        "1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        r["raw_baseline"].as_str().unwrap().contains("n-sample"),
        "{r}"
    );
    assert_eq!(r["strong"], strong.as_str());
    let m = r["methods"].as_array().unwrap();
    let cbs = m.iter().find(|m| m["method"] == "cbs:2x2x5").unwrap();
    // Two steps of 5 tokens, one request per kept beam with n = 2 (the first step has one
    // beam): 1 + 2 requests, plus the engine check of the first search.
    let requests = cbs["http_requests"].as_f64().unwrap();
    assert!((3.0..=6.0).contains(&requests), "{cbs}");
    // The raw baseline: 4 rows in one request with n = 4.
    assert_eq!(cbs["raw_http_requests"].as_f64().unwrap(), 1.0, "{cbs}");
    assert!(cbs["strong_s"].as_f64().unwrap() > 0.0 && cbs["tuned_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn serve_with_the_strong_model_on_llama_server_follows_the_engines_health() {
    let _one = serial();
    let mut engine = LlamaServer::start("gemma-3-270m", "gemma-3-270m", 4, &[]);
    let strong = strong_spec(&engine);
    let server = Server::start(&["--strong", &strong], &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let ask = |seed: u64| {
        let body = serde_json::json!({
            "model": "w2s", "prompt": "I rented this movie last weekend and",
            "max_tokens": 10, "seed": seed, "logprobs": 0,
            "search": {"method": "cbs:2x2x5", "return_beams": true},
        });
        support::server::post_blocking(&rt, &client, &server, "/v1/completions", &body)
    };
    let (status, body) = ask(3);
    assert_eq!(status, 200, "{body}");
    let beams = body["w2s"]["beams"].as_array().unwrap();
    assert!(!beams.is_empty() && !body["choices"][0]["text"].as_str().unwrap().is_empty());
    let scores: Vec<f64> = beams.iter().map(|b| b["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    assert!(tasks(&engine) >= 2, "the engine did the sampling");
    // llama-server cannot echo a given text's log-probabilities: the choice has none, and
    // the reply says why (the guide's values are there all the same).
    assert!(body["choices"][0]["logprobs"].is_null(), "{body}");
    let why = body["w2s"]["logprobs_unavailable"].as_str().unwrap();
    assert!(why.contains("echo"), "{why}");
    assert!(
        body["w2s"]["logprobs"][0]["tuned_logprob"].is_f64(),
        "{body}"
    );
    // The plain endpoint of a remote role is not served here.
    let plain = rt.block_on(async {
        client
            .post(server.url("/v1/completions"))
            .json(&serde_json::json!({"model": "strong", "prompt": "Hi", "max_tokens": 2}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(plain, 404);
    assert_eq!(blocking_status(&server.url("/health")).unwrap(), 200);
    engine.kill();
    let t = Instant::now();
    while blocking_status(&server.url("/health")).unwrap() == 200 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "/health never saw the engine go"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(blocking_status(&server.url("/health")).unwrap(), 503);
    let (status, body) = ask(4);
    assert_eq!(status, 502, "{body}");
}
