//! Seeing the search: `w2s generate --trace`, the page `w2s trace` draws from it (checked
//! in a real headless Chromium, not only as HTML text), weighted guides and adaptive chunk
//! ends, on the real models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn w2s(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args(args)
        .env_remove("W2S_LOG")
        .output()
        .expect("run w2s")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2s-trace-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn config_path() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/sentiment.toml")
        .to_string_lossy()
        .into_owned()
}

const PROMPT: &str = "I rented this movie last weekend and";

/// `w2s generate` on the sentiment config with `extra`, traced into `file`; the trace
/// line.
fn traced(file: &Path, extra: &[&str]) -> Value {
    let cfg = config_path();
    let mut args = vec![
        "generate",
        "--config",
        &cfg,
        "--prompt",
        PROMPT,
        "--trace",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(w2s(&args));
    let text = std::fs::read_to_string(file).unwrap();
    assert_eq!(text.lines().count(), 1);
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

fn steps(v: &Value) -> &Vec<Value> {
    v["trace"]["steps"].as_array().unwrap()
}

fn rows(v: &Value) -> impl Iterator<Item = &Value> {
    steps(v).iter().flat_map(|s| s["rows"].as_array().unwrap())
}

/// Debian's Chromium (scripts/install-chromium), or `$W2S_CHROMIUM`.
fn chromium() -> PathBuf {
    let path: PathBuf = std::env::var_os("W2S_CHROMIUM")
        .map(Into::into)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-chromium (or set W2S_CHROMIUM)",
        path.display()
    );
    path
}

/// The DOM of `page` after its scripts ran in headless Chromium.
fn rendered_dom(page: &Path) -> String {
    let profile = scratch("chromium-profile");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

#[test]
fn a_trace_page_renders_in_a_real_browser() {
    let file = scratch("page.jsonl");
    let v = traced(
        &file,
        &["-w", "2", "-k", "3", "-l", "4", "--max-new-tokens", "16"],
    );
    let n_steps = steps(&v).len();
    assert!(n_steps >= 3, "{v}");
    let mut candidates = 0;
    for row in rows(&v) {
        candidates += 1;
        let (t, u) = (
            row["tuned"].as_f64().unwrap(),
            row["untuned"].as_f64().unwrap(),
        );
        assert!((row["value"].as_f64().unwrap() - (t - u)).abs() < 1e-9);
        if row["tokens"].as_u64().unwrap() > 0 {
            // The local strong model reports each chunk's log-probability.
            assert!(row["strong_logprob"].as_f64().unwrap() < 0.0, "{row}");
        }
    }
    let page = scratch("page.html");
    let out = ok(w2s(&[
        "trace",
        file.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
        "--gold",
        "vader",
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{candidates} candidates")));
    let dom = rendered_dom(&page);
    // The script ran to its end and drew every candidate, each step's path box once.
    assert!(
        dom.contains(&format!("data-rendered=\"{candidates}\"")),
        "{}",
        &dom[..dom.len().min(2000)]
    );
    assert_eq!(dom.matches("class=\"cand kept best\"").count(), n_steps);
    assert!(dom.contains("guide–vader r over all candidates"));
    // The final text, chunk by chunk, spells the answer.
    let spans: String = dom
        .split("<span class=\"chunk-span\"")
        .skip(1)
        .map(|s| {
            let body = &s[s.find('>').unwrap() + 1..];
            unescape(&body[..body.find("</span>").unwrap()])
        })
        .collect();
    assert_eq!(spans.trim_end_matches('⏎'), v["text"].as_str().unwrap());

    // Bad input: one line, exit 2.
    for (args, needle) in [
        (
            vec!["trace", "/nonexistent.jsonl", "--html", "/tmp/x.html"],
            "cannot read trace file",
        ),
        (
            vec![
                "trace",
                file.to_str().unwrap(),
                "--html",
                "/tmp/x.html",
                "--gold",
                "judge",
            ],
            "vader only",
        ),
        (
            vec![
                "trace",
                file.to_str().unwrap(),
                "--html",
                "/nonexistent-dir/x.html",
            ],
            "cannot write /nonexistent-dir/x.html",
        ),
    ] {
        let out = w2s(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn adaptive_chunk_ends_branch_where_the_strong_model_is_unsure() {
    // One row, a threshold every distribution exceeds, minimum 3: a chunk ends before
    // every 4th token and its successor samples from the kept distribution, so the result
    // is CBS with L = 3 to the bit.
    let fixed = traced(
        &scratch("fixed.jsonl"),
        &["-w", "1", "-k", "1", "-l", "3", "--max-new-tokens", "14"],
    );
    let adaptive = traced(
        &scratch("adaptive.jsonl"),
        &[
            "-w",
            "1",
            "-k",
            "1",
            "-l",
            "9",
            "--max-new-tokens",
            "14",
            "--chunk-entropy",
            "0.000001",
            "--chunk-min",
            "3",
        ],
    );
    assert_eq!(adaptive["text"], fixed["text"]);
    assert_eq!(adaptive["trace"], fixed["trace"]);
    // A threshold nothing reaches: the chunks of plain CBS.
    let never = traced(
        &scratch("never.jsonl"),
        &[
            "-w",
            "2",
            "-k",
            "2",
            "-l",
            "4",
            "--max-new-tokens",
            "16",
            "--chunk-entropy",
            "1000",
        ],
    );
    let plain = traced(
        &scratch("plain.jsonl"),
        &["-w", "2", "-k", "2", "-l", "4", "--max-new-tokens", "16"],
    );
    assert_eq!(never["trace"], plain["trace"]);
    // A real threshold: chunks between the minimum and the cap, some ended early.
    let v = traced(
        &scratch("real.jsonl"),
        &[
            "-w",
            "2",
            "-k",
            "2",
            "-l",
            "8",
            "--max-new-tokens",
            "24",
            "--chunk-entropy",
            "2.5",
            "--chunk-min",
            "2",
        ],
    );
    let mut early = 0;
    for row in rows(&v) {
        let tokens = row["tokens"].as_u64().unwrap();
        if tokens == 0 {
            continue; // an ended row carried over
        }
        assert!(tokens <= 8, "{row}");
        if row["finish"].is_null() {
            assert!(tokens >= 2, "{row}");
            early += usize::from(tokens < 8);
        }
    }
    assert!(early > 0, "no chunk ended early: {v}");
}

#[test]
fn a_weighted_guide_shows_each_term_and_weight_zero_changes_nothing() {
    let fluent = "{name = \"fluent\", weight = 0.5, tuned = \"smollm2-135m-instruct\", \
                  untuned = \"smollm2-135m-instruct\", \
                  tuned_template = \"chat:Continue this text fluently.||{prompt}\"}";
    let base = ["-w", "2", "-k", "2", "-l", "4", "--max-new-tokens", "12"];
    let v = traced(
        &scratch("weighted.jsonl"),
        &[&base[..], &["--guide", fluent]].concat(),
    );
    let terms = &v["trace"]["terms"];
    assert_eq!(terms[0]["name"], "main");
    assert_eq!(terms[0]["weight"], 1.0);
    assert_eq!(terms[1]["name"], "fluent");
    assert_eq!(terms[1]["weight"], 0.5);
    for row in rows(&v) {
        let t: Vec<f64> = row["terms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(t.len(), 2);
        assert!((row["value"].as_f64().unwrap() - (t[0] + 0.5 * t[1])).abs() < 1e-9);
        assert!(row["tuned"].is_null());
    }
    // Weight 0: the second pair is scored, but the values and the answer are the main
    // pair's.
    let zero = fluent.replace("weight = 0.5", "weight = 0");
    let z = traced(
        &scratch("zero.jsonl"),
        &[&base[..], &["--guide", &zero]].concat(),
    );
    let single = traced(&scratch("single.jsonl"), &base);
    assert_eq!(z["text"], single["text"]);
    let values = |v: &Value| {
        rows(v)
            .map(|r| r["value"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (values(&z), values(&single));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-9));
}

#[test]
fn searches_in_flight_share_the_strong_models_decodes_and_keep_the_files_order() {
    // With a local strong model, --parallel 3 samples the rows of three searches in one
    // decode per token: every answer comes back, in the file's order, with its trace.
    let prompts = scratch("pooled.jsonl");
    let lines: String = (0..4)
        .map(|i| format!("{{\"id\": \"p{i}\", \"prompt\": \"I rented movie number {i} and\"}}\n"))
        .collect();
    std::fs::write(&prompts, lines).unwrap();
    let run = |parallel: &str, name: &str| {
        let trace = scratch(name);
        let cfg = config_path();
        let out = Command::new(env!("CARGO_BIN_EXE_w2s"))
            .args([
                "generate",
                "--config",
                &cfg,
                "--prompts",
                prompts.to_str().unwrap(),
                "--json",
                "-w",
                "2",
                "-k",
                "2",
                "-l",
                "4",
                "--max-new-tokens",
                "12",
                "--parallel",
                parallel,
                "--trace",
                trace.to_str().unwrap(),
            ])
            .env("W2S_LOG", "info")
            .output()
            .unwrap();
        let out = ok(out);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            log.contains("share one context of the strong model"),
            parallel != "1",
            "{log}"
        );
        let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let traces: Vec<Value> = std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (answers, traces)
    };
    let (pooled, traces) = run("3", "pooled-trace.jsonl");
    let (alone, _) = run("1", "alone-trace.jsonl");
    let ids = |v: &[Value]| v.iter().map(|a| a["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&pooled), ["p0", "p1", "p2", "p3"]);
    assert_eq!(ids(&traces), ids(&pooled));
    assert_eq!(ids(&alone), ids(&pooled));
    for (p, t) in pooled.iter().zip(&traces) {
        assert!(!p["text"].as_str().unwrap().is_empty(), "{p}");
        assert_eq!(t["text"], p["text"]);
        let rows = t["trace"]["steps"][0]["rows"].as_array().unwrap();
        assert!(
            rows.iter()
                .all(|r| r["strong_logprob"].as_f64().is_some_and(|l| l < 0.0)),
            "{t}"
        );
    }
}
