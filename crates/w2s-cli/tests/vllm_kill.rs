//! A vLLM server killed mid-search, and `w2s serve` on vLLM with prefix caching off: a
//! test binary of its own, so that its server never runs beside the one tests/vllm.rs
//! shares (two vLLM CPU servers on two cores starve each other at start-up).

#[allow(dead_code)]
mod support;

use serde_json::json;
use support::vllm::{
    endpoint, f32_gguf, scratch, w2s, Vllm, EOS, IMDB, NAME, PER_TOKEN, POSITIVE, PROMPT,
};
use w2s_core::*;
use w2s_llama::{score_once, LlamaScorer, LoadOptions, Model};
use w2s_remote::*;

/// Every role on `url`, the guides through `prompt_logprobs`, few retries.
fn config(dir: &std::path::Path, url: &str) -> String {
    let table = |role: &str, template: &str| {
        format!(
            "[models.{role}]\nurl = {url:?}\nmodel = \"smollm2\"\ntemplate = {template:?}\n\
             max_retries = 2\nmax_backoff_s = 0.2\nrequest_timeout_s = 20\n\
             score_api = \"prompt-logprobs\"\neos_text = {EOS:?}\n\n"
        )
    };
    let text = format!(
        "max_new_tokens = 10\nthreads = 1\n\n{}{}{}",
        table("strong", IMDB).replace(
            "score_api = \"prompt-logprobs\"\neos_text = \"<|im_end|>\"\n",
            ""
        ),
        table("tuned", POSITIVE),
        table("untuned", "{prompt}"),
    );
    let path = dir.join("vllm.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn serve_runs_on_vllm_and_a_vllm_killed_mid_search_gives_a_bounded_error() {
    let _one = support::server::serial();
    let mut engine = Vllm::start(NAME, "smollm2", &["--no-enable-prefix-caching"]);
    let dir = scratch("kill");
    let all = config(&dir, &engine.url);

    // Scores with prefix caching off equal local scoring as they do with it on (the
    // shared server of tests/vllm.rs).
    let ep = endpoint(&engine.url, |s| {
        s.score_api = ScoreApi::PromptLogprobs;
        s.eos_text = Some(EOS.into());
    });
    let mut remote = RemoteScorer::new(ep, PromptTemplate::new(POSITIVE).unwrap()).unwrap();
    remote.begin(PROMPT, 1, 64).unwrap();
    let text = " it was a delight.";
    let off = remote
        .score(&[ScoreRequest {
            row: 0,
            text,
            ended: true,
        }])
        .unwrap()[0];
    let model = Model::load(&f32_gguf(NAME), LoadOptions::default()).unwrap();
    let mut local = LlamaScorer::new(model.clone(), PromptTemplate::new(POSITIVE).unwrap(), 1);
    let l = score_once(&mut local, PROMPT, text, true).unwrap();
    let n = model.tokenize_response(text).len() + 1;
    assert!(
        (off - l).abs() <= PER_TOKEN * n as f64,
        "prefix caching off: vLLM {off}, local {l}"
    );

    let server = support::server::Server::start_with(&all, &["--parallel", "2"], &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let ask = |max_tokens: usize| {
        let body = json!({
            "model": "w2s", "prompt": PROMPT, "max_tokens": max_tokens, "seed": 3,
            "search": {"method": "cbs:2x2x5", "return_beams": true},
        });
        support::server::post_blocking(&rt, &client, &server, "/v1/completions", &body)
    };
    let (status, body) = ask(10);
    assert_eq!(status, 200, "{body}");
    let scores: Vec<f64> = body["w2s"]["beams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );

    // Kill vLLM while a long search runs: the search gives up within its retries.
    let pid = std::thread::scope(|scope| {
        let long = scope.spawn(|| {
            let t = std::time::Instant::now();
            let (status, body) = ask(300);
            (status, body, t.elapsed())
        });
        std::thread::sleep(std::time::Duration::from_secs(3));
        engine.kill();
        long.join().unwrap()
    });
    let (status, body, took) = pid;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("gave up after 3 attempts"), "{body}");
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    // The CLI: exit 1 and a line that names the cause.
    let o = w2s(&["generate", "--config", &all, "--prompt", PROMPT]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot connect") && err.lines().count() <= 3,
        "{err}"
    );
}
