//! Diagnostics on `w2s eval` runs, on the real models: `w2s guide-check` rescoring a run
//! with candidate pairs, and adaptive chunk ends applied by the harness.

#[allow(dead_code)] // shared with the other test binaries
mod support;

use serde_json::Value;
use support::eval::{eval_args, expect_usage_error, key, lines, prompts, repo, scratch, w2s};

#[test]
fn guide_check_rescores_a_run_with_its_own_pair_to_the_values_it_ranked_by() {
    let dir = scratch("guide-check");
    let p = prompts(&dir);
    let out = dir.join("run");
    let run = w2s(&eval_args(&p, &out, "sample,bon:3"));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let cfg = repo("configs/eval-sentiment-a.toml");
    // The same pair with its templates swapped: every value negated.
    let flipped = "{name = \"flipped\", tuned = \"smollm2-135m-instruct\", \
                   untuned = \"smollm2-135m-instruct\", \
                   tuned_template = \"{prompt}\", \
                   untuned_template = \"chat:Write a very positive movie review.||{prompt}\"}";
    let (json, values) = (dir.join("check.json"), dir.join("values.jsonl"));
    let args: Vec<String> = [
        "guide-check",
        "--run",
        out.to_str().unwrap(),
        "--config",
        &cfg,
        "--pair",
        flipped,
        "--threads",
        "2",
        "--bins",
        "3",
        "--json",
        json.to_str().unwrap(),
        "--values",
        values.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let got = w2s(&args);
    let stdout = String::from_utf8_lossy(&got.stdout);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        stdout.contains("| eval-sentiment-a |") && stdout.contains("| flipped |"),
        "{stdout}"
    );
    // The run's own pair gives each response the guide value the search ranked it by.
    let records = lines(&out.join("results.jsonl"));
    let rescored = lines(&values);
    assert!(!rescored.is_empty());
    for r in &rescored {
        let own = r["values"]["eval-sentiment-a"].as_f64().unwrap();
        let flipped = r["values"]["flipped"].as_f64().unwrap();
        assert!((own + flipped).abs() < 1e-9, "{r}");
        let rec = records
            .iter()
            .find(|l| l["prompt_id"] == r["prompt_id"] && l["response"] == r["response"])
            .unwrap();
        assert!(
            (rec["guide"].as_f64().unwrap() - own).abs() < 1e-6,
            "{rec} {r}"
        );
    }
    let check: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let c = check["candidates"].as_array().unwrap();
    assert_eq!(check["gold"], "vader");
    assert!((c[0]["pearson"].as_f64().unwrap() + c[1]["pearson"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(c[0]["bins"].as_array().unwrap().len(), 3);
    // Bad input: an empty or missing run directory, no candidate.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (args, needle) in [
        (
            vec![
                "guide-check",
                "--run",
                empty.to_str().unwrap(),
                "--config",
                cfg.as_str(),
            ],
            "has no results.jsonl",
        ),
        (
            vec!["guide-check", "--run", out.to_str().unwrap()],
            "no candidate guide",
        ),
        (
            vec![
                "guide-check",
                "--run",
                out.to_str().unwrap(),
                "--config",
                cfg.as_str(),
                "--gold",
                "judge",
            ],
            "no gold named judge",
        ),
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        expect_usage_error(&args, needle);
    }
}

#[test]
fn an_eval_with_adaptive_chunk_ends_searches_with_them() {
    // A threshold every distribution exceeds and minimum 3: CBS 2x2 branches every 3
    // tokens instead of every 9, so its responses change; sampling has no chunks and
    // does not.
    let dir = scratch("adaptive");
    let p = prompts(&dir);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = eval_args(&p, &out, "sample,cbs:2x2x9");
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = w2s(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut l = lines(&out.join("results.jsonl"));
        l.sort_by_key(key);
        l.into_iter()
            .map(|v| {
                let m = v["method"].as_str().unwrap().to_string();
                (m, v["response"].as_str().unwrap().to_string())
            })
            .collect::<Vec<_>>()
    };
    let adaptive = run(
        "adaptive",
        &["--chunk-entropy", "0.000001", "--chunk-min", "3"],
    );
    let fixed = run("fixed", &[]);
    let differ = |m: &str| {
        adaptive
            .iter()
            .zip(&fixed)
            .filter(|(a, f)| a.0 == m && a.1 != f.1)
            .count()
    };
    assert_eq!(differ("sample"), 0);
    assert!(
        differ("cbs:2x2x9") > 0,
        "the chunk ends made no difference: {adaptive:?}"
    );
    let run_json = std::fs::read_to_string(dir.join("adaptive/run.json")).unwrap();
    assert!(run_json.contains("\"chunk_entropy\""), "{run_json}");
}
