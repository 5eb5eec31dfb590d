//! The `w2s` binary as a user runs it: bad input gets one clear line and exit status 2;
//! good input on the real models gives the documented output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn w2s(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args(args)
        .env_remove("W2S_LOG")
        .output()
        .expect("run w2s")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2s-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn config_path() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/sentiment.toml")
        .to_string_lossy()
        .into_owned()
}

const MODELS: [&str; 6] = [
    "--strong",
    "gemma-3-270m",
    "--tuned",
    "smollm2-135m-instruct",
    "--untuned",
    "smollm2-135m-instruct",
];

/// Runs `w2s generate` with the real models plus `extra`, expecting a usage error that
/// mentions `needle`.
fn expect_usage_error(extra: &[&str], needle: &str) {
    let mut args = vec!["generate"];
    for pair in MODELS.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    let out = w2s(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{extra:?}: expected {needle:?} in {stderr:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && (lines[0].starts_with("error:") || lines[0].starts_with("error: ")),
        "one error line expected: {stderr:?}"
    );
    assert!(out.stdout.is_empty(), "no output on error");
}

#[test]
fn missing_model_file() {
    expect_usage_error(
        &["--strong", "/nonexistent/model.gguf", "--prompt", "hi"],
        "does not exist",
    );
    expect_usage_error(
        &["--strong", "no-such-model", "--prompt", "hi"],
        "scripts/fetch-models",
    );
}

#[test]
fn file_that_is_not_gguf() {
    let p = scratch("not-a-model.gguf");
    std::fs::write(&p, "this is text, not a model").unwrap();
    expect_usage_error(
        &["--tuned", p.to_str().unwrap(), "--prompt", "hi"],
        "not a GGUF",
    );
    let empty = scratch("empty.gguf");
    std::fs::write(&empty, "").unwrap();
    expect_usage_error(
        &["--untuned", empty.to_str().unwrap(), "--prompt", "hi"],
        "not a GGUF",
    );
    let dir = std::env::temp_dir();
    expect_usage_error(
        &["--strong", &format!("{}/", dir.display()), "--prompt", "hi"],
        "cannot be read",
    );
}

#[test]
fn architecture_llama_cpp_cannot_load() {
    // A well-formed GGUF header naming an architecture llama.cpp does not know.
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // key-value pairs
    let key = b"general.architecture";
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    let val = b"nonexistent-arch";
    b.extend_from_slice(&(val.len() as u64).to_le_bytes());
    b.extend_from_slice(val);
    let p = scratch("unknown-arch.gguf");
    std::fs::write(&p, b).unwrap();
    expect_usage_error(
        &["--strong", p.to_str().unwrap(), "--prompt", "hi"],
        "nonexistent-arch",
    );
}

#[test]
fn zero_counts() {
    expect_usage_error(&["-w", "0", "--prompt", "hi"], "W (-w) must be at least 1");
    expect_usage_error(&["-k", "0", "--prompt", "hi"], "K (-k) must be at least 1");
    expect_usage_error(&["-l", "0", "--prompt", "hi"], "L (-l) must be at least 1");
    expect_usage_error(
        &["--method", "bon", "--n", "0", "--prompt", "hi"],
        "N (--n) must be at least 1",
    );
    expect_usage_error(
        &["--max-new-tokens", "0", "--prompt", "hi"],
        "max new tokens must be at least 1",
    );
    expect_usage_error(&["--threads", "0", "--prompt", "hi"], "--threads");
}

#[test]
fn bad_sampling_numbers() {
    expect_usage_error(&["--temperature", "-1", "--prompt", "hi"], "temperature");
    expect_usage_error(&["--temperature", "NaN", "--prompt", "hi"], "temperature");
    expect_usage_error(&["--top-p", "0", "--prompt", "hi"], "top-p");
    expect_usage_error(&["--top-p", "1.5", "--prompt", "hi"], "top-p");
    expect_usage_error(&["--beta", "inf", "--prompt", "hi"], "beta");
    expect_usage_error(
        &["--method", "beam:3", "--prompt", "hi"],
        "unknown search method",
    );
}

#[test]
fn trace_weights_and_chunk_ends_that_cannot_work() {
    expect_usage_error(
        &["--trace", "/nonexistent-dir/t.jsonl", "--prompt", "hi"],
        "cannot write the trace file /nonexistent-dir/t.jsonl",
    );
    let pair = "tuned = \"smollm2-135m-instruct\", untuned = \"smollm2-135m-instruct\"";
    expect_usage_error(
        &[
            "--guide",
            &format!("{{weight = nan, {pair}}}"),
            "--prompt",
            "hi",
        ],
        "weights must be finite",
    );
    expect_usage_error(
        &[
            "--guide",
            &format!("{{weight = inf, {pair}}}"),
            "--prompt",
            "hi",
        ],
        "weights must be finite",
    );
    expect_usage_error(
        &[
            "--beta",
            "0",
            "--guide",
            &format!("{{weight = 0, {pair}}}"),
            "--prompt",
            "hi",
        ],
        "every weight is 0 (beta included)",
    );
    expect_usage_error(
        &["--guide", "{weight = 1}", "--prompt", "hi"],
        "--guide '{weight = 1}': missing field `tuned`",
    );
    expect_usage_error(&["--guide", "0.5", "--prompt", "hi"], "TOML inline table");
    expect_usage_error(
        &["--chunk-entropy", "0", "--prompt", "hi"],
        "entropy threshold must be a finite number of nats > 0",
    );
    expect_usage_error(
        &["--chunk-entropy", "NaN", "--prompt", "hi"],
        "entropy threshold",
    );
    expect_usage_error(
        &["--chunk-min", "3", "--prompt", "hi"],
        "--chunk-min needs --chunk-entropy",
    );
    expect_usage_error(
        &[
            "--chunk-entropy",
            "2",
            "--chunk-min",
            "5",
            "-l",
            "5",
            "--prompt",
            "hi",
        ],
        "must be below L (5)",
    );
    expect_usage_error(
        &["--chunk-entropy", "2", "--method", "bon", "--prompt", "hi"],
        "bon:16 has no chunks",
    );
}

#[test]
fn empty_prompt_and_template_without_placeholder() {
    expect_usage_error(&["--prompt", ""], "prompt is empty");
    expect_usage_error(&["--prompt", "   "], "prompt is empty");
    expect_usage_error(
        &["--tuned-template", "Be positive.", "--prompt", "hi"],
        "{prompt}",
    );
}

#[test]
fn malformed_jsonl() {
    let p = scratch("bad.jsonl");
    std::fs::write(&p, "{\"prompt\": \"fine\"}\n{\"prompt\": oops}\n").unwrap();
    expect_usage_error(&["--prompts", p.to_str().unwrap()], "line 2");
    let q = scratch("noprompt.jsonl");
    std::fs::write(&q, "{\"text\": \"x\"}\n").unwrap();
    expect_usage_error(&["--prompts", q.to_str().unwrap()], "no \"prompt\" field");
    expect_usage_error(
        &["--prompts", "/nonexistent.jsonl"],
        "cannot read prompts file",
    );
}

#[test]
fn config_file_errors() {
    let p = scratch("bad.toml");
    std::fs::write(&p, "strong = \"gemma-3-270m\"\nwidht = 4\n").unwrap();
    expect_usage_error(
        &["--config", p.to_str().unwrap(), "--prompt", "hi"],
        "unknown field",
    );
    let out = w2s(&["generate", "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no strong model"));
}

#[test]
fn prompt_plus_new_tokens_beyond_a_models_context() {
    expect_usage_error(
        &["--max-new-tokens", "100000", "--prompt", "hi"],
        "exceeds its context",
    );
}

#[test]
fn json_output_on_real_models() {
    let cfg = config_path();
    let out = w2s(&[
        "generate",
        "--config",
        &cfg,
        "-w",
        "2",
        "-k",
        "2",
        "-l",
        "5",
        "--max-new-tokens",
        "15",
        "--json",
        "--prompt",
        "The first thing you notice about this film is",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["method"], "cbs:2x2x5");
    let beams = v["beams"].as_array().unwrap();
    assert!(!beams.is_empty());
    assert_eq!(v["text"], beams[0]["text"]);
    let scores: Vec<f64> = beams.iter().map(|b| b["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for b in beams {
        let (t, u) = (
            b["tuned_logprob"].as_f64().unwrap(),
            b["untuned_logprob"].as_f64().unwrap(),
        );
        assert!((b["score"].as_f64().unwrap() - (t - u)).abs() < 1e-9);
        assert_eq!(b["ended"], true);
        assert!(b["strong_tokens"].as_u64().unwrap() <= 15);
    }
    let sampled = v["strong_tokens_sampled"].as_u64().unwrap();
    assert!(sampled > 0 && sampled <= 4 * 15, "{sampled}");
    for k in ["strong_s", "tuned_s", "untuned_s", "total_s"] {
        assert!(v["timings"][k].as_f64().unwrap() > 0.0, "{k}");
    }
    assert!(v["strong_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn prompts_file_gives_one_line_per_prompt_and_flags_override_config() {
    let p = scratch("two.jsonl");
    std::fs::write(
        &p,
        "{\"id\": \"a\", \"prompt\": \"My wife dragged me to see this and\"}\n{\"id\": 2, \"prompt\": \"This movie\"}\n",
    )
    .unwrap();
    let cfg = config_path();
    let out = w2s(&[
        "generate",
        "--config",
        &cfg,
        "--method",
        "bon:3",
        "--max-new-tokens",
        "8",
        "--json",
        "--prompts",
        p.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[1]["id"], "2");
    for l in &lines {
        assert_eq!(l["method"], "bon:3");
        assert_eq!(l["beams"].as_array().unwrap().len(), 3);
    }
    // Plain output: the best response only.
    let plain = w2s(&[
        "generate",
        "--config",
        &cfg,
        "--method",
        "sample",
        "--max-new-tokens",
        "8",
        "--prompt",
        "This movie",
    ]);
    assert!(plain.status.success());
    let text = String::from_utf8_lossy(&plain.stdout);
    let sample_json = w2s(&[
        "generate",
        "--config",
        &cfg,
        "--method",
        "sample",
        "--max-new-tokens",
        "8",
        "--json",
        "--prompt",
        "This movie",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&sample_json.stdout).unwrap();
    assert_eq!(text.trim_end_matches('\n'), v["text"].as_str().unwrap());
}

#[test]
fn bench_reports_every_method_against_raw_sampling() {
    let cfg = config_path();
    let out = w2s(&[
        "bench",
        "--config",
        &cfg,
        "--methods",
        "sample,cbs:2x2x3",
        "--max-new-tokens",
        "6",
        "--repeats",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let methods = v["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 2);
    for m in methods {
        for k in [
            "wall_s_median",
            "ratio_to_raw",
            "strong_tokens",
            "guide_tokens_evaluated",
            "peak_rss_mb",
        ] {
            assert!(m[k].as_f64().unwrap() > 0.0, "{k} in {m}");
        }
        let rows = m["rows"].as_f64().unwrap();
        assert!(m["strong_tokens"].as_f64().unwrap() <= rows * 6.0);
        // Incremental scoring: each small model evaluates about one token per strong token.
        let per =
            m["tuned_tokens_evaluated"].as_f64().unwrap() / m["strong_tokens"].as_f64().unwrap();
        assert!(per < 2.0, "{per}");
    }
    assert_eq!(methods[1]["method"], "cbs:2x2x3");
    assert!(v["models_mb"].as_f64().unwrap() > 300.0);
    // Where each local small model's time went: the forward pass is measured, and the
    // split adds up to no more than the model's share of the search.
    for m in methods {
        let split = m["small_split"].as_array().unwrap();
        assert_eq!(split.len(), 2, "{m}");
        for s in split {
            assert!(s["decode_s"].as_f64().unwrap() > 0.0, "{s}");
            assert!(s["decodes"].as_f64().unwrap() >= 1.0, "{s}");
        }
        let parts: f64 = [
            "setup_s",
            "tokenize_s",
            "decode_s",
            "log_softmax_s",
            "copies_s",
            "cache_s",
        ]
        .iter()
        .map(|k| split[0][*k].as_f64().unwrap())
        .sum();
        assert!(parts <= m["tuned_s"].as_f64().unwrap() * 1.01 + 1e-3, "{m}");
    }
}

#[test]
fn quantize_writes_a_loadable_q8_0_copy_and_refuses_bad_input() {
    let models = std::env::var("W2S_MODELS").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/w2s/models"),
        PathBuf::from,
    );
    let input = models.join("smollm2-135m-instruct.gguf");
    let out_path = scratch("smollm2-q8_0.gguf");
    let _ = std::fs::remove_file(&out_path);
    let (inp, outp) = (input.to_str().unwrap(), out_path.to_str().unwrap());
    let done = w2s(&["quantize", inp, outp]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let leftovers: Vec<_> = std::fs::read_dir(out_path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("smollm2-q8_0.gguf.partial")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The copy is a model the search runs on.
    let cfg = config_path();
    let gen = w2s(&[
        "generate",
        "--config",
        &cfg,
        "--tuned",
        outp,
        "--untuned",
        outp,
        "--method",
        "cbs:2x2x3",
        "--max-new-tokens",
        "6",
        "--json",
        "--prompt",
        "The film",
    ]);
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    for (args, needle) in [
        (vec!["quantize", inp, outp], "already exists"),
        (
            vec!["quantize", "/nonexistent.gguf", "/tmp/never.gguf"],
            "does not exist",
        ),
        (vec!["quantize", &cfg, "/tmp/never.gguf"], "not a GGUF"),
        (
            vec!["quantize", inp, "/tmp/never.gguf", "--type", "q3"],
            "unknown weight type",
        ),
    ] {
        let o = w2s(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let _ = std::fs::remove_file(&out_path);
}

#[test]
fn bench_in_flight_compares_workers_with_pooled_decodes() {
    let cfg = config_path();
    let args = |n: &str| {
        w2s(&[
            "bench",
            "--config",
            &cfg,
            "--methods",
            "cbs:2x2x3",
            "--max-new-tokens",
            "6",
            "--repeats",
            "1",
            "--limit",
            "2",
            "--json",
            "--in-flight",
            n,
        ])
    };
    let out = args("1,2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r["searches"], 2);
        assert!(r["workers_s"].as_f64().unwrap() > 0.0 && r["pooled_s"].as_f64().unwrap() > 0.0);
        let tokens = r["pooled_strong_tokens"].as_u64().unwrap();
        assert!(tokens > 0 && tokens <= 2 * 4 * 6, "{r}");
    }
    let bad = args("0");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("from 1 to 64"));
}
