//! Remote model specs on the command line: bad specs are input errors (exit 2), an
//! unreachable endpoint is a runtime failure (exit 1) after the bounded retries. Searches
//! against a real server are tested in crates/w2s-remote/tests.

#[allow(dead_code)]
#[path = "../../w2s-remote/tests/common/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "../../w2s-remote/tests/common/stub.rs"]
mod stub;

use std::net::TcpListener;
use std::process::{Command, Output};

fn w2s(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args(["generate", "--prompt", "I rented this movie and"])
        .args(args)
        .output()
        .unwrap()
}

fn scratch_config(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("w2s-cli-remote-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_remote_spec_without_model_name_is_an_input_error() {
    let o = w2s(&[
        "--strong",
        "http://127.0.0.1:9/v1",
        "--tuned",
        "x",
        "--untuned",
        "y",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("URL#MODEL"), "{}", stderr(&o));
}

#[test]
fn a_role_given_as_flag_and_table_is_an_input_error() {
    let cfg = scratch_config(
        "both.toml",
        "strong = \"gemma-3-270m\"\n[models.strong]\nurl = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n",
    );
    let o = w2s(&["--config", &cfg, "--tuned", "x", "--untuned", "y"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("given twice"), "{}", stderr(&o));
}

#[test]
fn a_missing_api_key_variable_is_named() {
    let cfg = scratch_config(
        "key.toml",
        "[models.strong]\nurl = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_env = \"W2S_SURELY_UNSET_KEY\"\n",
    );
    let o = w2s(&["--config", &cfg, "--tuned", "x", "--untuned", "y"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("W2S_SURELY_UNSET_KEY"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unreachable_endpoint_fails_after_bounded_retries() {
    // A loopback port with nothing listening: connection refused on every attempt.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = scratch_config(
        "down.toml",
        &format!(
            "[models.strong]\nurl = \"http://127.0.0.1:{port}/v1\"\nmodel = \"m\"\nmax_retries = 2\nmax_backoff_s = 0.2\n\
             [models.tuned]\nurl = \"http://127.0.0.1:{port}/v1\"\nmodel = \"m\"\n\
             [models.untuned]\nurl = \"http://127.0.0.1:{port}/v1\"\nmodel = \"m\"\n"
        ),
    );
    let t = std::time::Instant::now();
    let o = w2s(&["--config", &cfg]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("strong model")
            && e.contains("gave up after 3 attempts")
            && e.contains("cannot connect"),
        "{e}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn eft_with_a_remote_role_is_refused_before_any_work() {
    let url = "http://127.0.0.1:9/v1#m";
    let dir = std::env::temp_dir().join(format!("w2s-cli-remote-eval-{}", std::process::id()));
    let prompts = scratch_config("p.jsonl", "{\"prompt\": \"I rented this movie and\"}\n");
    let out = dir.to_string_lossy().into_owned();
    let o = Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args(["eval", "--prompts", &prompts, "--out", &out])
        .args(["--methods", "sample,eft:1"])
        .args(["--strong", url, "--tuned", "x", "--untuned", "y"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("EFT") && stderr(&o).contains("strong model is remote"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("run.json").exists(), "nothing is written");
}

#[test]
fn adaptive_chunk_ends_on_an_engine_without_top_logprobs_are_an_input_error() {
    // The engine answers, but with text only: nothing to read an entropy from.
    let engine = stub::Stub::start("openai", None, |_| {
        (200, stub::completion(&[(" and it was fine", "length")], 5))
    });
    let strong = format!("{}#m", engine.url);
    let o = w2s(&[
        "--strong",
        &strong,
        "--tuned",
        "smollm2-135m-instruct",
        "--untuned",
        "smollm2-135m-instruct",
        "--chunk-entropy",
        "2",
        "--max-new-tokens",
        "10",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("need the engine's top log-probabilities") && err.lines().count() <= 2,
        "{err}"
    );
}
