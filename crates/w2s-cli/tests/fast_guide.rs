//! `w2s generate` with SmolLM2's Q4_1 file as the guide: the first run makes the Q8_0 copy
//! once under the models folder's `fast/` and says so in the log, later runs reuse it, and
//! `--keep-guide-weights` scores the file as it is.

use std::path::PathBuf;
use std::process::{Command, Output};

fn models() -> PathBuf {
    std::env::var("W2S_MODELS").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/w2s/models"),
        PathBuf::from,
    )
}

fn generate(models_dir: &PathBuf, extra: &[&str]) -> Output {
    let real = models();
    let path = |name: &str| {
        real.join(format!("{name}.gguf"))
            .to_string_lossy()
            .into_owned()
    };
    let (strong, small) = (path("gemma-3-270m"), path("smollm2-135m-instruct"));
    Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args([
            "generate",
            "--strong",
            &strong,
            "--tuned",
            &small,
            "--untuned",
            &small,
            "--tuned-template",
            "chat:Write a very positive movie review.||{prompt}",
            "--method",
            "cbs:2x2x3",
            "--max-new-tokens",
            "6",
            "--threads",
            "2",
            "--json",
            "--prompt",
            "The film",
        ])
        .args(extra)
        .env("W2S_MODELS", models_dir)
        .env("W2S_LOG", "w2s_llama=info,w2s_engine=info")
        .output()
        .expect("run w2s")
}

fn best_score(out: &Output) -> f64 {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["beams"][0]["score"].as_f64().unwrap()
}

#[test]
fn a_q4_1_guide_gets_its_q8_0_copy_once_and_the_flag_keeps_the_file() {
    let dir = std::env::temp_dir().join(format!("w2s-fast-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copies = || -> Vec<String> {
        std::fs::read_dir(dir.join("fast"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };

    let first = generate(&dir, &[]);
    let log = String::from_utf8_lossy(&first.stderr).into_owned();
    let fast = best_score(&first);
    assert!(log.contains("made a Q8_0 copy"), "{log}");
    let made = copies();
    assert!(
        made.len() == 1
            && made[0].starts_with("smollm2-135m-instruct-")
            && made[0].ends_with(".q8_0.gguf"),
        "{made:?}"
    );

    let again = generate(&dir, &[]);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("made a Q8_0 copy"));
    assert_eq!(
        best_score(&again),
        fast,
        "the same copy, the same seeded search"
    );
    assert_eq!(copies(), made);

    let kept = generate(&dir, &["--keep-guide-weights"]);
    let log = String::from_utf8_lossy(&kept.stderr).into_owned();
    assert!(!log.contains("Q8_0 copy"), "{log}");
    assert_ne!(best_score(&kept), fast, "Q4_1 and Q8_0 arithmetic differ");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_joint_guide_is_used_when_asked_and_finds_the_text_of_two_scorers() {
    let with_log = |joint: &str| {
        let out = generate(&models(), &["--joint-guide", joint]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("no JSON from --joint-guide {joint}: {log}"));
        (v, log)
    };
    let (joint, log) = with_log("true");
    assert!(log.contains("one decode (joint guide)"), "{log}");
    let (two, log) = with_log("false");
    assert!(!log.contains("joint guide"), "{log}");
    assert_eq!(joint["beams"][0]["text"], two["beams"][0]["text"]);
    let (a, b) = (
        joint["beams"][0]["score"].as_f64().unwrap(),
        two["beams"][0]["score"].as_f64().unwrap(),
    );
    // Batches of other sizes round differently: within 0.05 nats per token of 6.
    assert!((a - b).abs() <= 0.3, "joint {a} against two scorers {b}");
}
