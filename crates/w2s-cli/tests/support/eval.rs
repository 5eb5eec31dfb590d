//! Running `w2s eval` in tests: the binary, scratch directories, a three-prompt set, the
//! arguments of a small sentiment run, and reading its result lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const W2S: &str = env!("CARGO_BIN_EXE_w2s");

pub fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2s-eval-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Three short prompts.
pub fn prompts(dir: &Path) -> String {
    let p = dir.join("prompts.jsonl");
    std::fs::write(
        &p,
        "{\"id\": \"a\", \"prompt\": \"I rented this movie last weekend and\"}\n\
         {\"id\": \"b\", \"prompt\": \"The first thing you notice about this film is\"}\n\
         {\"id\": \"c\", \"prompt\": \"My friends told me to see this one because\"}\n",
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

pub fn eval_args(prompts: &str, out: &Path, methods: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "eval",
        "--config",
        &repo("configs/eval-sentiment-a.toml"),
        "--prompts",
        prompts,
        "--methods",
        methods,
        "--seeds",
        "1,2",
        "--max-new-tokens",
        "8",
        "--threads",
        "2",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.to_string_lossy().into_owned());
    a
}

pub fn w2s(args: &[String]) -> Output {
    Command::new(W2S)
        .args(args)
        .env_remove("W2S_LOG")
        .output()
        .expect("run w2s")
}

pub fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn key(v: &Value) -> (String, u64, String) {
    (
        v["method"].as_str().unwrap().into(),
        v["seed"].as_u64().unwrap(),
        v["prompt_id"].as_str().unwrap().into(),
    )
}

pub fn expect_usage_error(args: &[String], needle: &str) {
    let o = w2s(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    let errs: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errs.len(), 1, "{stderr}");
    assert!(
        errs[0].contains(needle),
        "expected {needle:?} in {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
