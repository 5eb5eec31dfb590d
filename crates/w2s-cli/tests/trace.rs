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
