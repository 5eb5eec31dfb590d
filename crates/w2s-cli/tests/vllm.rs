//! w2s against a real vLLM server: vLLM's CPU build (scripts/install-vllm) serving a
//! Hugging Face folder made from the real SmolLM2-135M-Instruct GGUF, on 127.0.0.1. One
//! server is started for this whole test binary (a minute or so on 2 cores) and shared;
//! the test that kills a server starts its own.
//!
//! What vLLM 0.32 (CPU) does, found here:
//! - `GET /v1/models` says `owned_by: "vllm"`; `n`, `seed`, `top_k`, `stop` and
//!   `max_tokens` are honoured; one request with a seed repeats exactly.
//! - `prompt_logprobs: 0` gives one `{id: {logprob, rank, decoded_token}}` per prompt
//!   token (`null` first); `echo: true, logprobs: 0` gives the same numbers.
//! - Prefix caching is on by default (block size 128 on the CPU), and requests that ask
//!   for prompt log-probabilities (either way) bypass it: the prefix cache is not even
//!   queried for them, so scores never come from cached blocks (no missing log-probs for
//!   cached tokens) and a guide on vLLM re-reads each row whole at every step.
//!
//! Exactness: vLLM serves the folder's float32 weights; w2s's local scorer reads the F32
//! GGUF converted back from the same folder. Per token the two agree within
//! `PER_TOKEN` nats (measured below and printed by the test); a real bug (a shifted
//! pairing, a dropped or extra token, a missing end term) moves a sum by whole nats.

#[allow(dead_code)]
mod support;

use std::ops::Deref;
use std::process::Output;
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde_json::{json, Value};
use support::vllm::{
    endpoint, f32_gguf, scratch, w2s, Vllm, EOS, IMDB, NAME, PER_TOKEN, POSITIVE, PROMPT,
};
use w2s_core::*;
use w2s_llama::{score_once, LlamaScorer, LoadOptions, Model};
use w2s_remote::*;

/// The shared server (started by the first test that needs it).
fn vllm() -> &'static Vllm {
    static SERVER: OnceLock<Vllm> = OnceLock::new();
    SERVER.get_or_init(|| Vllm::start(NAME, "smollm2", &[]))
}

/// One test at a time: they share one server and two cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn completions(body: Value) -> Value {
    let mut body = body;
    body["model"] = json!("smollm2");
    let (status, reply) = vllm().post("/v1/completions", &body);
    assert_eq!(status, 200, "{reply}");
    reply
}

fn texts(reply: &Value) -> Vec<String> {
    reply["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn vllm_is_detected_and_honours_the_sampling_fields() {
    let _one = serial();
    let (status, models) = vllm().get("/v1/models").unwrap();
    assert_eq!(status, 200);
    assert!(models.contains("\"owned_by\":\"vllm\""), "{models}");

    let prompt = "Here is a movie review from imdb: I rented this movie and";
    let body = json!({"prompt": prompt, "max_tokens": 12, "temperature": 1.0, "n": 4, "seed": 11});
    let a = completions(body.clone());
    assert_eq!(texts(&a).len(), 4, "n = 4 gives 4 choices");
    assert!(a["usage"]["completion_tokens"].as_u64().unwrap() <= 48);
    assert_eq!(
        texts(&completions(body.clone())),
        texts(&a),
        "same seed, same text"
    );
    let other = completions(
        json!({"prompt": prompt, "max_tokens": 12, "temperature": 1.0, "n": 4, "seed": 12}),
    );
    assert_ne!(texts(&other), texts(&a), "another seed, other text");
    // top_k = 1 is greedy: every choice is the same.
    let greedy = texts(&completions(
        json!({"prompt": prompt, "max_tokens": 8, "n": 3, "seed": 5, "top_k": 1}),
    ));
    assert!(greedy.iter().all(|t| t == &greedy[0]), "{greedy:?}");
    // A stop string ends the text before it.
    let stop = completions(
        json!({"prompt": "Count: 1, 2, 3, 4,", "max_tokens": 30, "temperature": 0.0, "stop": [" 7"]}),
    );
    let t = &texts(&stop)[0];
    assert!(!t.contains(" 7") && t.contains('6'), "{t:?}");
    assert_eq!(stop["choices"][0]["finish_reason"], "stop");
    let one =
        completions(json!({"prompt": prompt, "max_tokens": 3, "temperature": 1.0, "seed": 1}));
    assert_eq!(one["usage"]["completion_tokens"], 3);

    // The remote proposer finds the engine by GET /v1/models.
    let mut strong = RemoteProposer::new(
        endpoint(&vllm().url, |_| {}),
        PromptTemplate::new(IMDB).unwrap(),
    )
    .unwrap();
    let sampling = SamplingParams::default();
    strong
        .begin(&ProposalSetup {
            prompt: PROMPT,
            rows: 2,
            max_new_tokens: 5,
            sampling: &sampling,
            stop: &[],
            chunk_end: None,
            logprobs: false,
        })
        .unwrap();
    assert_eq!(strong.engine(), Some(w2s_remote::EngineKind::Vllm));
}

/// Per-token log-probabilities of `text` after `prompt` from the local scorer.
fn local_tokens(scorer: &mut LlamaScorer, text: &str) -> Vec<(String, f64)> {
    scorer.begin(PROMPT, 1, 256).unwrap();
    scorer
        .score(&ScoreRequest::per_text(&[text], false))
        .unwrap();
    scorer
        .row_tokens(0)
        .into_iter()
        .map(|(piece, lp)| (String::from_utf8_lossy(&piece).into_owned(), lp))
        .collect()
}

#[test]
fn scores_on_vllm_equal_local_scoring_of_the_same_weights() {
    let _one = serial();
    let model = Model::load(&f32_gguf(NAME), LoadOptions::default()).unwrap();
    // Texts: plain, one whose first token merges with the prompt's last word ("and" +
    // "roid" reads " android"), one with a newline and digits, and the empty response.
    let cases: &[(&str, &str)] = &[
        (POSITIVE, " it was a delight from start to finish."),
        (
            "{prompt}",
            "roid phones were everywhere in it, 24/7.\nStill fun.",
        ),
        ("{prompt}", ""),
    ];
    let mut worst: f64 = 0.0;
    let mut tokens_compared = 0;
    for score_api in [ScoreApi::PromptLogprobs, ScoreApi::Echo] {
        for (template, text) in cases {
            let template = PromptTemplate::new(template).unwrap();
            let mut local = LlamaScorer::new(model.clone(), template.clone(), 1);
            let ep = endpoint(&vllm().url, |s| {
                s.score_api = score_api;
                s.eos_text = Some(EOS.into());
            });
            let mut remote = RemoteScorer::new(ep, template).unwrap();
            if !text.is_empty() {
                remote.begin(PROMPT, 1, 256).unwrap();
                let r = &remote.token_logprobs(&[text]).unwrap()[0];
                let l = local_tokens(&mut local, text);
                assert_eq!(
                    r.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
                    l.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
                    "{score_api:?} {text:?}: the same tokens"
                );
                for ((tok, a), (_, b)) in r.iter().zip(&l) {
                    if (a - b).abs() > worst {
                        worst = (a - b).abs();
                        eprintln!("{score_api:?} {tok:?}: vLLM {a:.6} local {b:.6}");
                    }
                    tokens_compared += 1;
                }
            }
            // Whole responses, ended (the end token's term) and not.
            for ended in [false, true] {
                if text.is_empty() && !ended {
                    continue;
                }
                remote.begin(PROMPT, 1, 256).unwrap();
                let r = remote
                    .score(&[ScoreRequest {
                        row: 0,
                        text,
                        ended,
                    }])
                    .unwrap()[0];
                let l = score_once(&mut local, PROMPT, text, ended).unwrap();
                let n = model.tokenize_response(text).len() + usize::from(ended);
                eprintln!("{score_api:?} ended={ended} {text:?}: vLLM {r:.5} local {l:.5}");
                assert!(r.is_finite() && r < 0.0, "{r}");
                assert!(
                    (r - l).abs() <= PER_TOKEN * n as f64,
                    "{score_api:?} {text:?} ended={ended}: vLLM {r} local {l}"
                );
            }
            assert_eq!(remote.engine(), Some(w2s_remote::EngineKind::Vllm));
        }
    }
    eprintln!("largest per-token difference: {worst:.2e} nats over {tokens_compared} tokens");
    assert!(worst <= PER_TOKEN, "{worst}");
}

#[test]
fn prefix_caching_serves_sampling_and_scoring_bypasses_it() {
    let _one = serial();
    let server = vllm();
    let long = format!(
        "Here is a movie review from imdb: {}",
        "It was a delight from start to finish, really. ".repeat(30)
    );
    let queries = || server.metric("vllm:prefix_cache_queries_total");
    let hits = || server.metric("vllm:prefix_cache_hits_total");
    let (q0, h0) = (queries(), hits());
    let scored = |body: Value| completions(body)["choices"][0].clone();
    let a =
        scored(json!({"prompt": long, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}));
    let b =
        scored(json!({"prompt": long, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}));
    assert_eq!(
        a["prompt_logprobs"], b["prompt_logprobs"],
        "the same numbers twice"
    );
    let c = scored(
        json!({"prompt": long, "max_tokens": 1, "temperature": 0.0, "echo": true, "logprobs": 0}),
    );
    assert!(c["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .all(Value::is_f64));
    assert_eq!(
        queries(),
        q0,
        "requests with prompt log-probs do not query the prefix cache"
    );
    for _ in 0..2 {
        completions(json!({"prompt": long, "max_tokens": 1, "temperature": 0.0}));
    }
    assert!(
        queries() > q0 && hits() > h0,
        "sampling requests hit the prefix cache"
    );
}

fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "w2s failed: {err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A config file with every role on `url` (the guides through `score_api`), or the
/// guides local on the F32 GGUF when `local_guides`.
fn config(dir: &std::path::Path, url: &str, score_api: &str, local_guides: bool) -> String {
    let guides = if local_guides {
        let f32 = f32_gguf(NAME).display().to_string();
        format!(
            "tuned = {f32:?}\nuntuned = {f32:?}\ntuned_template = {POSITIVE:?}\nuntuned_template = \"{{prompt}}\"\n"
        )
    } else {
        format!(
            "[models.tuned]\nurl = {url:?}\nmodel = \"smollm2\"\ntemplate = {POSITIVE:?}\nscore_api = {score_api:?}\neos_text = {EOS:?}\n\n\
             [models.untuned]\nurl = {url:?}\nmodel = \"smollm2\"\ntemplate = \"{{prompt}}\"\nscore_api = {score_api:?}\neos_text = {EOS:?}\n"
        )
    };
    let text = format!(
        "max_new_tokens = 10\nthreads = 1\n{}\n[models.strong]\nurl = {url:?}\nmodel = \"smollm2\"\ntemplate = {IMDB:?}\n\n{}",
        if local_guides { guides.clone() } else { String::new() },
        if local_guides { String::new() } else { guides },
    );
    let path = dir.join("vllm.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

struct Run(Value);

impl Deref for Run {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

fn generate(config: &str, method: &str) -> Run {
    let out = ok(w2s(&[
        "generate", "--config", config, "--method", method, "--seed", "3", "--json", "--prompt",
        PROMPT,
    ]));
    Run(serde_json::from_str(out.trim()).unwrap())
}

fn check_best_scored(run: &Run) {
    let beams = run["beams"].as_array().unwrap();
    assert!(!beams.is_empty());
    let best = beams[0]["score"].as_f64().unwrap();
    assert!(
        beams.iter().all(|b| b["score"].as_f64().unwrap() <= best),
        "{beams:?}"
    );
    assert_eq!(run["text"], beams[0]["text"]);
    assert!(!run["text"].as_str().unwrap().trim().is_empty());
}

#[test]
fn searches_run_with_the_strong_model_or_every_role_on_vllm() {
    let _one = serial();
    let dir = scratch("search");
    let url = &vllm().url;
    // Strong on vLLM, guides local: CBS returns its best-scored beam.
    let local = config(&dir, url, "prompt-logprobs", true);
    let cbs = generate(&local, "cbs:2x2x5");
    check_best_scored(&cbs);
    // Every role on vLLM, scored both ways.
    for score_api in ["prompt-logprobs", "echo"] {
        let all = config(&dir, url, score_api, false);
        for method in ["cbs:2x2x5", "bon:4", "sample"] {
            let run = generate(&all, method);
            check_best_scored(&run);
            assert!(
                run["strong_tokens_sampled"].as_u64().unwrap() >= 1,
                "{method}"
            );
        }
    }
    // The same seed on the same server gives the same CBS search.
    let all = config(&dir, url, "prompt-logprobs", false);
    let (a, b) = (generate(&all, "cbs:2x2x5"), generate(&all, "cbs:2x2x5"));
    assert_eq!(a["text"], b["text"], "one search at a time repeats on vLLM");
}

#[test]
fn the_chat_api_continues_the_assistant_message() {
    let _one = serial();
    let ep = endpoint(&vllm().url, |s| s.api = Api::Chat);
    let mut strong = RemoteProposer::new(
        ep,
        PromptTemplate::new("chat:Write a movie review.||{prompt}").unwrap(),
    )
    .unwrap();
    let model = Model::load(&f32_gguf(NAME), LoadOptions::default()).unwrap();
    let t = PromptTemplate::new(POSITIVE).unwrap();
    let mut tuned = LlamaScorer::new(model.clone(), t, 1);
    let mut untuned = LlamaScorer::new(model, PromptTemplate::bare(), 1);
    let config = SearchConfig::new(
        Method::Cbs { w: 2, k: 2, l: 4 },
        8,
        1.0,
        9,
        SamplingParams::default(),
        vec![],
    )
    .unwrap();
    let mut run = |config: &SearchConfig| {
        let models = Models {
            strong: &mut strong,
            tuned: &mut tuned,
            untuned: &mut untuned,
        };
        search(config, PROMPT, models).unwrap()
    };
    let out = run(&config);
    assert!(!out.best().text.trim().is_empty(), "{:?}", out.best());
    // Adaptive chunk ends and chunk log-probs through the chat shape of log-probs.
    let adaptive = config
        .with_chunk_end(Some(EntropyEnd::new(1, 1.0).unwrap()))
        .unwrap()
        .with_trace(true);
    let out = run(&adaptive);
    let trace = out.trace.expect("traced");
    let rows = || {
        trace
            .steps
            .iter()
            .flat_map(|s| &s.rows)
            .filter(|r| r.tokens > 0)
    };
    assert!(
        rows().all(|r| r.strong_logprob.is_some_and(|l| l < 0.0)),
        "{trace:?}"
    );
    assert!(
        rows().any(|r| r.finish.is_none() && r.tokens < 4),
        "{trace:?}"
    );
    // Continuing the final message: the text goes on from the prompt, not a new turn.
    let (status, reply) = vllm().post(
        "/v1/chat/completions",
        &json!({"model": "smollm2", "messages": [
            {"role": "user", "content": "Write a movie review."},
            {"role": "assistant", "content": PROMPT}],
            "continue_final_message": true, "add_generation_prompt": false,
            "max_tokens": 8, "temperature": 0.0}),
    );
    assert_eq!(status, 200, "{reply}");
    let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        !text.contains("<|im_start|>") && !text.is_empty(),
        "{text:?}"
    );
}

#[test]
fn eval_with_parallel_searches_bench_and_serve_run_on_vllm() {
    let _one = serial();
    let dir = scratch("eval");
    let all = config(&dir, &vllm().url, "prompt-logprobs", false);
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(
        &prompts,
        (0..4)
            .map(|i| {
                format!("{{\"id\": \"p{i}\", \"prompt\": \"I rented movie number {i} and\"}}\n")
            })
            .collect::<String>(),
    )
    .unwrap();
    let prompts = prompts.display().to_string();
    let out = dir.join("run");
    let o = w2s(&[
        "eval",
        "--config",
        &all,
        "--prompts",
        &prompts,
        "--methods",
        "sample,cbs:2x2x5",
        "--parallel",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(o);
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 8, "{lines}");
    for line in lines.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert!(r["http_requests"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["gold"][0]["value"].is_f64(), "{r}");
    }
    assert!(out.join("report.md").exists());

    // --parallel out of range: one line, exit 2, nothing written.
    for bad in ["0", "65"] {
        let o = w2s(&[
            "eval",
            "--config",
            &all,
            "--prompts",
            &prompts,
            "--parallel",
            bad,
            "--out",
            dir.join("bad").to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "--parallel {bad}");
        assert!(!dir.join("bad").join("results.jsonl").exists());
    }

    // w2s generate --prompts keeps the file's order with searches in flight.
    let gen = ok(w2s(&[
        "generate",
        "--config",
        &all,
        "--prompts",
        &prompts,
        "--parallel",
        "3",
        "--method",
        "bon:2",
    ]));
    let ids: Vec<&str> = gen.lines().map(|l| &l[..4]).collect();
    assert_eq!(ids, ["[p0]", "[p1]", "[p2]", "[p3]"], "{gen}");

    // w2s bench: its raw baseline is vLLM's own n-sampling; it counts HTTP requests.
    let bench = ok(w2s(&[
        "bench",
        "--config",
        &all,
        "--prompts",
        &prompts,
        "--limit",
        "1",
        "--methods",
        "cbs:2x2x5",
        "--repeats",
        "1",
    ]));
    assert!(bench.contains("cbs:2x2x5"), "{bench}");
}

/// The text of the candidate before row `r` of step `s` of a trace added its chunk.
fn text_before(steps: &[Value], s: usize, r: usize) -> String {
    let mut chunks = Vec::new();
    let mut at = steps[s]["rows"][r]["parent"].as_u64();
    for step in steps[..s].iter().rev() {
        let Some(p) = at else { break };
        let row = &step["rows"][p as usize];
        chunks.push(row["chunk"].as_str().unwrap().to_string());
        at = row["parent"].as_u64();
    }
    chunks.reverse();
    chunks.concat()
}

#[test]
fn adaptive_chunk_ends_and_chunk_logprobs_come_from_vllms_top_logprobs() {
    let _one = serial();
    let dir = scratch("adaptive");
    let cfg = config(&dir, &vllm().url, "prompt-logprobs", true);
    let trace = dir.join("trace.jsonl");
    let (threshold, min, cap) = (2.5, 2, 6);
    ok(w2s(&[
        "generate",
        "--config",
        &cfg,
        "--method",
        "cbs:2x2x6",
        "--max-new-tokens",
        "18",
        "--chunk-entropy",
        "2.5",
        "--chunk-min",
        "2",
        "--seed",
        "3",
        "--prompt",
        PROMPT,
        "--trace",
        trace.to_str().unwrap(),
    ]));
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(&trace).unwrap().trim()).unwrap();
    let steps = line["trace"]["steps"].as_array().unwrap();
    let model = Model::load(&f32_gguf(NAME), LoadOptions::default()).unwrap();
    let mut local = LlamaScorer::new(model, PromptTemplate::new(IMDB).unwrap(), 1);
    let prompt = IMDB.replace("{prompt}", PROMPT);
    let (mut at_cut, mut gaps) = (Vec::new(), Vec::new());
    for (s, step) in steps.iter().enumerate() {
        for (r, row) in step["rows"].as_array().unwrap().iter().enumerate() {
            let tokens = row["tokens"].as_u64().unwrap() as usize;
            if tokens == 0 {
                continue; // an ended candidate competing again
            }
            assert!(tokens <= cap, "{row}");
            // The chunk's log-probability from vLLM against the same weights read locally.
            let before = text_before(steps, s, r);
            let chunk = row["chunk"].as_str().unwrap();
            let lp = row["strong_logprob"]
                .as_f64()
                .expect("the chunk's log-probability");
            let whole = score_once(&mut local, PROMPT, &format!("{before}{chunk}"), false).unwrap();
            let head = score_once(&mut local, PROMPT, &before, false).unwrap();
            gaps.push((lp - (whole - head)).abs() / tokens as f64);
            if !row["finish"].is_null() || tokens == cap {
                continue;
            }
            assert!(tokens >= min, "{row}");
            let reply = completions(json!({"prompt": format!("{prompt}{before}{chunk}"),
                "max_tokens": 1, "logprobs": 20}));
            let tops = reply["choices"][0]["logprobs"]["top_logprobs"][0]
                .as_object()
                .unwrap();
            let mut lps: Vec<f64> = tops.values().map(|v| v.as_f64().unwrap()).collect();
            lps.sort_by(|a, b| b.total_cmp(a));
            lps.truncate(20);
            at_cut.push(sampling::entropy_lower_bound(lps));
        }
    }
    gaps.sort_by(f64::total_cmp);
    eprintln!("entropy bound at the early cuts: {at_cut:.2?}; per-token |vLLM - local| of chunk log-probs, sorted: {gaps:.3?}");
    assert!(!at_cut.is_empty(), "no chunk ended early: {line}");
    let above = at_cut.iter().filter(|&&h| h > threshold).count();
    assert!(above * 4 >= at_cut.len() * 3, "{at_cut:?}");
    // Most chunks read back token for token; a re-tokenised one may differ.
    assert!(
        gaps[gaps.len() / 2] < PER_TOKEN && gaps[gaps.len() - 1] < 1.0,
        "{gaps:?}"
    );
}
