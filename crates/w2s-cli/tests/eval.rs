//! `w2s eval` and `w2s report` as a user runs them, on the real models: a run killed with
//! kill -9 resumes without duplicates and redoes a torn line; bad input gets one clear
//! line, exit 2, and nothing already written is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::eval::{eval_args, expect_usage_error, key, lines, prompts, scratch, w2s, W2S};

#[allow(dead_code)] // shared with the other test binaries
mod support;

#[test]
fn a_run_killed_with_kill_9_resumes_without_duplicates_and_redoes_a_torn_line() {
    let dir = scratch("resume");
    let p = prompts(&dir);
    let out = dir.join("run");
    let results = out.join("results.jsonl");
    let args = eval_args(&p, &out, "sample,bon:2");
    // Start a real run and kill it -9 once two lines are on disk.
    let mut child = Command::new(W2S)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let n = std::fs::read_to_string(&results).map_or(0, |t| t.lines().count());
        if n >= 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Tear the last complete line in half, as a power loss mid-write would.
    let text = std::fs::read_to_string(&results).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    assert!(kept.len() >= 2 && kept.len() < 12, "{} lines", kept.len());
    let torn = kept[kept.len() - 1];
    let torn_key = key(&serde_json::from_str(torn).unwrap());
    let intact = kept[..kept.len() - 1].join("\n") + "\n";
    std::fs::write(&results, format!("{intact}{}", &torn[..torn.len() / 2])).unwrap();

    // The same command resumes and finishes.
    let o = w2s(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("torn last line"), "{stderr}");
    let all = lines(&results);
    assert_eq!(all.len(), 2 * 2 * 3, "2 methods x 2 seeds x 3 prompts");
    let mut seen = HashMap::new();
    for v in &all {
        assert!(
            seen.insert(key(v), v.clone()).is_none(),
            "duplicate {:?}",
            key(v)
        );
    }
    assert!(seen.contains_key(&torn_key), "the torn line was redone");
    let after = std::fs::read_to_string(&results).unwrap();
    assert!(
        after.starts_with(&intact),
        "finished lines are kept byte for byte"
    );
    // A rerun of a finished run does nothing.
    let o = w2s(&args);
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 of 12 lines to do"));
    assert_eq!(std::fs::read_to_string(&results).unwrap(), after);

    // Seeded: a fresh run gives the same responses, line for line.
    let fresh = dir.join("fresh");
    assert!(w2s(&eval_args(&p, &fresh, "sample,bon:2")).status.success());
    for v in lines(&fresh.join("results.jsonl")) {
        let r = &seen[&key(&v)];
        assert_eq!(v["response"], r["response"], "{:?}", key(&v));
        assert_eq!(v["gold"], r["gold"]);
        assert_eq!(v["strong_tokens"], r["strong_tokens"]);
    }

    // The report, from the JSONL alone.
    for f in [
        "report.md",
        "summary.json",
        "gold_by_method.svg",
        "gold_vs_tokens.svg",
        "run.json",
    ] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let o = w2s(&["report".into(), out.to_string_lossy().into_owned()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for m in ["sample", "bon:2"] {
        let mine: Vec<f64> = all
            .iter()
            .filter(|v| v["method"] == m)
            .map(|v| v["gold"][0]["value"].as_f64().unwrap())
            .collect();
        let mean = mine.iter().sum::<f64>() / mine.len() as f64;
        let row = &s["methods"][m];
        assert_eq!(row["n"], 6);
        assert!((row["mean_gold"].as_f64().unwrap() - mean).abs() < 1e-9);
        assert!(
            row["ci_low"].as_f64().unwrap() <= mean && mean <= row["ci_high"].as_f64().unwrap()
        );
        let tokens = row["strong_tokens_per_prompt"].as_f64().unwrap();
        assert!(
            tokens > 0.0 && tokens <= if m == "sample" { 8.0 } else { 16.0 },
            "{m} {tokens}"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| `bon:2` | 6 |") && md.contains("gold_vs_tokens.svg"),
        "{md}"
    );
    assert!(md.contains("Paired against `sample`"), "{md}");
    // A report written beside run.json lists the settings, model files by name only.
    let fresh_md = std::fs::read_to_string(fresh.join("report.md")).unwrap();
    assert!(
        fresh_md.contains("| strong | `gemma-3-270m.gguf` |")
            && !fresh_md.contains("/gemma-3-270m.gguf"),
        "{fresh_md}"
    );
    assert!(std::fs::read_to_string(out.join("gold_by_method.svg"))
        .unwrap()
        .contains("bon:2"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `args`, expecting exit 2 with one `error:` line that contains `needle`.
#[test]
fn bad_input_is_refused_with_exit_2_and_nothing_written_is_lost() {
    let dir = scratch("bad");
    let p = prompts(&dir);
    let out = dir.join("run");
    // A finished one-line run to protect.
    let mut one = eval_args(&p, &out, "sample");
    let seeds = one.iter().position(|x| x == "--seeds").unwrap();
    one[seeds + 1] = "1".into();
    one.extend(["--limit".into(), "1".into()]);
    let o = w2s(&one);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = out.join("results.jsonl");
    let before = std::fs::read(&results).unwrap();
    let with = |f: &dyn Fn(&mut Vec<String>)| {
        let mut a = one.clone();
        f(&mut a);
        a
    };
    let set = |a: &mut Vec<String>, flag: &str, v: &str| {
        let i = a.iter().rposition(|x| x == flag).unwrap();
        a[i + 1] = v.into();
    };
    expect_usage_error(
        &with(&|a| set(a, "--methods", "cbs:4x4")),
        "unknown method 'cbs:4x4'",
    );
    expect_usage_error(
        &with(&|a| set(a, "--methods", "sample,eft:1")),
        "shared vocabulary",
    );
    expect_usage_error(
        &with(&|a| set(a, "--max-new-tokens", "9")),
        "max_new_tokens: 8 -> 9",
    );
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"ok\"}\n{\"prompt\": \"ok 2\"\n").unwrap();
    expect_usage_error(
        &with(&|a| set(a, "--prompts", bad.to_str().unwrap())),
        "bad.jsonl line 2",
    );
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("out");
    expect_usage_error(
        &with(&|a| set(a, "--out", under_file.to_str().unwrap())),
        "cannot create",
    );
    expect_usage_error(
        &with(&|a| a.extend(["--method".into(), "bon:4".into()])),
        "--methods",
    );
    assert_eq!(
        std::fs::read(&results).unwrap(),
        before,
        "nothing written is lost"
    );
    // --force moves the old run aside instead of mixing.
    let forced = with(&|a| {
        set(a, "--max-new-tokens", "4");
        a.push("--force".into());
    });
    assert!(w2s(&forced).status.success());
    assert_eq!(
        std::fs::read(out.join("previous-1/results.jsonl")).unwrap(),
        before
    );
    let now = lines(&results);
    assert_eq!(now.len(), 1);
    assert!(now[0]["response_tokens"].as_u64().unwrap() <= 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn instruct_args(prompts: &Path, out: &Path, methods: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "eval",
        "--task",
        "instruct",
        "--prompts",
        prompts.to_str().unwrap(),
        "--methods",
        methods,
        "--strong",
        "smollm2-135m-instruct",
        "--tuned",
        "smollm2-135m-instruct",
        "--untuned",
        "smollm2-135m-instruct",
        "--untuned-template",
        "{prompt}",
        "--judge",
        "smollm2-135m-instruct",
        "--max-new-tokens",
        "8",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn instruct_task_judges_pairs_against_the_reference_and_writes_alpacaeval_outputs() {
    let dir = scratch("instruct");
    let out = dir.join("run");
    let prompts = dir.join("instructions.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": \"i1\", \"prompt\": \"Write a short poem about autumn rain.\"}\n\
         {\"id\": \"i2\", \"prompt\": \"What is the difference between weather and climate?\"}\n",
    )
    .unwrap();
    let methods = "bon:2,guide,sample";
    let o = w2s(&instruct_args(
        &prompts,
        &out,
        methods,
        &["--gold", "pairwise,judge"],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = lines(&out.join("results.jsonl"));
    assert_eq!(recs.len(), 6);
    // The reference goes first on each prompt: the others are judged against it.
    assert_eq!(recs[0]["method"], "sample");
    for r in &recs {
        assert_eq!(r["gold"][0]["name"], "pairwise");
        assert_eq!(r["gold"][1]["name"], "judge");
        let (win, rating) = (
            r["gold"][0]["value"].as_f64().unwrap(),
            r["gold"][1]["value"].as_f64().unwrap(),
        );
        assert!((0.0..=1.0).contains(&win) && (1.0..=9.0).contains(&rating));
        let pair = &r["pair"];
        assert_eq!(pair["reference"], "sample");
        assert_eq!(pair["judge"], "smollm2-135m-instruct.gguf");
        let identical = pair["identical"].as_bool().unwrap();
        if r["method"] == "sample" {
            assert!(identical && win == 0.5, "{r}");
        }
        if !identical {
            let (a, b) = (
                pair["first"].as_f64().unwrap(),
                pair["second"].as_f64().unwrap(),
            );
            assert!((win - 0.5 * (a + b)).abs() < 1e-12);
            assert!(pair["answer_mass"].as_f64().unwrap() > 0.0);
        }
        // The guide alone samples no strong-model token.
        if r["method"] == "guide" {
            assert_eq!(r["strong_tokens"], 0);
            assert!(r["response_tokens"].as_u64().unwrap() > 0);
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Win rates against `sample`"), "{report}");
    assert!(report.contains("| `guide` |"), "{report}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let w = &summary["methods"]["bon:2"]["win_rates"];
    assert_eq!(w["n"], 2);
    assert!(w["length_controlled"]["mean"].is_number(), "{w}");
    assert_eq!(
        summary["methods"]["sample"]["win_rates"]["raw"]["mean"],
        0.5
    );
    // AlpacaEval's format: all lines, and one file per method and seed.
    let outputs: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model_outputs.json")).unwrap())
            .unwrap();
    assert_eq!(outputs[0]["instruction"], recs[0]["prompt"]);
    assert_eq!(outputs[0]["output"], recs[0]["response"]);
    assert_eq!(outputs[0]["generator"], "w2s/sample/seed1");
    assert_eq!(outputs[0]["dataset"], "instructions");
    for m in ["sample", "guide", "bon-2"] {
        let f = out.join("model_outputs").join(format!("{m}-seed1.json"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2, "{}", f.display());
    }

    // Other gold rewards later: the lines are scored again, not generated again.
    let o = w2s(&instruct_args(
        &prompts,
        &out,
        methods,
        &["--gold", "judge"],
    ));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("6 of them to score again"), "{stderr}");
    let all = lines(&out.join("results.jsonl"));
    assert_eq!(all.len(), 12, "six lines appended, the first six kept");
    let first: HashMap<_, _> = recs.iter().map(|r| (key(r), r)).collect();
    for new in &all[6..] {
        assert_eq!(first[&key(new)]["response"], new["response"]);
        // The rating it already had is kept, not computed again.
        assert_eq!(first[&key(new)]["gold"][1], new["gold"][0]);
        assert_eq!(new["gold"][0]["name"], "judge");
        assert!(new.get("pair").is_none());
    }
    // And nothing to do on a third run with the same gold rewards.
    let o = w2s(&instruct_args(
        &prompts,
        &out,
        methods,
        &["--gold", "judge"],
    ));
    assert!(o.status.success());
    assert_eq!(lines(&out.join("results.jsonl")).len(), 12);

    // Bad input: one line, exit 2.
    let bad = dir.join("bad");
    let with = |extra: &[&str]| instruct_args(&prompts, &bad, methods, extra);
    expect_usage_error(
        &with(&["--reference", "bon:4"]),
        "not one of the run's methods",
    );
    expect_usage_error(
        &with(&["--reference", "beam"]),
        "not one of the run's methods",
    );
    expect_usage_error(&with(&["--gold", "vader"]), "an instruct run needs a judge");
    expect_usage_error(
        &with(&["--gold", "judge", "--reference", "sample"]),
        "add pairwise to --gold",
    );
    let vocabs = std::env::var_os("W2S_VOCABS").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/w2s/vocabs"),
        PathBuf::from,
    );
    let no_template = vocabs.join("random-tiny-llama-spm.gguf");
    assert!(no_template.exists(), "run scripts/fetch-vocabs");
    let mut args = with(&[]);
    let at = args.iter().position(|a| a == "--judge").unwrap();
    args[at + 1] = no_template.to_string_lossy().into_owned();
    expect_usage_error(&args, "no chat template");
    assert!(!bad.join("results.jsonl").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn searches_in_flight_give_the_lines_of_one_at_a_time_and_a_kill_loses_only_unfinished_ones() {
    let dir = scratch("parallel");
    let p = prompts(&dir);
    let methods = "sample,bon:2,cbs:2x2x3";
    let (one, three) = (dir.join("one"), dir.join("three"));
    let o = w2s(&eval_args(&p, &one, methods));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut args = eval_args(&p, &three, methods);
    args.extend(["--parallel".to_string(), "3".to_string()]);
    // Kill -9 while lines are being written, then resume: the lines already written stay,
    // the unfinished ones are done again.
    let mut child = Command::new(W2S)
        .args(&args)
        .env_remove("W2S_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let results = three.join("results.jsonl");
    let t = Instant::now();
    while std::fs::read_to_string(&results).map_or(0, |s| s.lines().count()) < 4 {
        assert!(t.elapsed() < Duration::from_secs(600), "no lines written");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = lines(&results);
    let o = w2s(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("already in"), "{stderr}");
    let after = lines(&results);
    for line in &before {
        assert!(after.contains(line), "a finished line was lost: {line}");
    }
    let by_key = |v: &[Value]| -> HashMap<_, _> {
        v.iter()
            .map(|l| (key(l), (l["response"].clone(), l["guide"].clone())))
            .collect()
    };
    let (a, b) = (by_key(&lines(&one.join("results.jsonl"))), by_key(&after));
    assert_eq!(a.len(), 18);
    assert_eq!(
        a, b,
        "the same responses and guide values with 3 searches in flight"
    );

    let mut zero = eval_args(&p, &dir.join("zero"), methods);
    zero.extend(["--parallel".to_string(), "0".to_string()]);
    expect_usage_error(&zero, "at least 1");
    assert!(!dir.join("zero").join("results.jsonl").exists());
}
