//! The output directory: `run.json` records the settings a run's lines depend on; a rerun
//! with the same settings resumes, one with other settings is refused (or, with
//! `--force`, the old run is moved to `previous-N/`: never mixed, never deleted).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{usage, EvalError};
use crate::progress::EvalEvent;

pub const RUN_FILE: &str = "run.json";
pub const RESULTS_FILE: &str = "results.jsonl";
/// The instruct task's AlpacaEval outputs, one file per method and seed.
pub const OUTPUTS_DIR: &str = "model_outputs";
/// Files a run writes (moved together by --force).
const RUN_FILES: [&str; 8] = [
    RUN_FILE,
    RESULTS_FILE,
    "report.md",
    "summary.json",
    "gold_by_method.svg",
    "gold_vs_tokens.svg",
    "model_outputs.json",
    OUTPUTS_DIR,
];

/// 64-bit FNV-1a, as hex: a fingerprint of the prompts.
pub fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Keys of the settings that name a model.
const MODEL_KEYS: [&str; 4] = ["strong", "tuned", "untuned", "judge"];

/// A model as `run.json` and reports record it: a local file by its file name (the
/// directory it was loaded from says nothing about the run, and a published run must not
/// carry the machine's paths), a remote one as `URL#MODEL`.
pub fn model_name(described: &str) -> String {
    if described.starts_with("http://") || described.starts_with("https://") {
        return described.to_string();
    }
    Path::new(described).file_name().map_or_else(
        || described.to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

/// The settings keys whose values differ, as `key: old -> new`.
pub fn differences(old: &Value, new: &Value) -> Vec<String> {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return vec!["the settings are not an object".into()];
    };
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(none)".into(), |v| v.to_string());
            format!("{k}: {} -> {}", show(o.get(k)), show(n.get(k)))
        })
        .collect()
}

fn read_settings(dir: &Path) -> Result<Option<Value>, EvalError> {
    let path = dir.join(RUN_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(usage(format!("cannot read {}: {e}", path.display()))),
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        usage(format!(
            "{} is damaged ({e}); move the directory away or use --force",
            path.display()
        ))
    })?;
    let mut settings = v.get("settings").cloned().unwrap_or(Value::Null);
    // Runs written before scoring was recorded apart kept the gold rewards here; a
    // change of gold rewards now scores lines again instead of refusing the directory.
    // Runs written before models were recorded by file name kept their paths.
    if let Some(o) = settings.as_object_mut() {
        o.remove("gold");
        o.remove("judge");
        for key in MODEL_KEYS {
            if let Some(Value::String(s)) = o.get_mut(key) {
                *s = model_name(s);
            }
        }
    }
    Ok(Some(settings))
}

/// Refuses early (before models load) a directory holding another run, unless `force`.
pub fn check(
    dir: &Path,
    settings: &Value,
    force: bool,
    events: &mut dyn FnMut(EvalEvent<'_>),
) -> Result<(), EvalError> {
    if dir.exists() && !dir.is_dir() {
        return Err(usage(format!(
            "--out {} is a file, not a directory",
            dir.display()
        )));
    }
    // Find out now, before models load, whether the directory can be written.
    let cannot = |e: std::io::Error| {
        usage(format!(
            "cannot create or write the output directory {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let probe = dir.join(".w2s-write-probe");
    std::fs::write(&probe, b"").map_err(cannot)?;
    let _ = std::fs::remove_file(&probe);
    let old = match read_settings(dir) {
        Ok(o) => o,
        Err(e) if force => {
            events(EvalEvent::Note(&format!("warning: {e}")));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let has_results = dir.join(RESULTS_FILE).exists();
    match old {
        Some(old) if old != *settings && !force => Err(usage(format!(
            "{} holds a run with different settings ({}); use another --out, or --force to move that run to {}/previous-N",
            dir.display(),
            differences(&old, settings).join("; "),
            dir.display()
        ))),
        None if has_results && !force => Err(usage(format!(
            "{} holds {RESULTS_FILE} but no {RUN_FILE}, so its settings are unknown; use another --out or --force",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Creates the directory, moves an incompatible old run aside (`force`), writes
/// `run.json`. Returns the results file's path.
pub fn prepare(
    dir: &Path,
    settings: &Value,
    info: &Value,
    force: bool,
    events: &mut dyn FnMut(EvalEvent<'_>),
) -> Result<PathBuf, EvalError> {
    let cannot = |what: &str, e: std::io::Error| {
        usage(format!(
            "cannot {what} in the output directory {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot("create it", e))?;
    let same = matches!(read_settings(dir), Ok(Some(ref old)) if old == settings);
    let has_any = RUN_FILES.iter().any(|f| dir.join(f).exists());
    if force && !same && has_any {
        let aside = (1..)
            .map(|n| dir.join(format!("previous-{n}")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| dir.join("previous"));
        std::fs::create_dir(&aside).map_err(|e| cannot("make previous-N", e))?;
        for f in RUN_FILES {
            let from = dir.join(f);
            if from.exists() {
                std::fs::rename(&from, aside.join(f)).map_err(|e| cannot("move old files", e))?;
            }
        }
        events(EvalEvent::Note(&format!(
            "moved the earlier run to {}",
            aside.display()
        )));
    }
    let body = serde_json::json!({"settings": settings, "info": info});
    let text = serde_json::to_string_pretty(&body).map_err(|e| usage(e.to_string()))?;
    let tmp = dir.join(".run.json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(|e| cannot("write run.json", e))?;
    std::fs::rename(&tmp, dir.join(RUN_FILE)).map_err(|e| cannot("write run.json", e))?;
    Ok(dir.join(RESULTS_FILE))
}

/// The directory's `run.json`, if it has a readable one (a report is drawn without it).
pub fn recorded_run(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(RUN_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The command line recorded in a `run.json`, if any.
pub fn recorded_command(run: &Value) -> Option<&str> {
    run["info"]["command"].as_str()
}

/// The recorded settings as `key`, value lines for a report, models by [`model_name`].
pub fn recorded_settings(run: &Value) -> Vec<(String, String)> {
    let Some(obj) = run["settings"].as_object() else {
        return Vec::new();
    };
    obj.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) if MODEL_KEYS.contains(&k.as_str()) => model_name(s),
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_settings_that_differ() {
        let a = json!({"max_new_tokens": 50, "beta": 1.0, "strong": "g"});
        let b = json!({"max_new_tokens": 20, "beta": 1.0, "tuned": "s"});
        let d = differences(&a, &b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d.contains(&"max_new_tokens: 50 -> 20".to_string()));
        assert!(d.iter().any(|x| x.starts_with("strong: \"g\" -> (none)")));
    }

    #[test]
    fn gold_settings_of_older_runs_are_not_compared() {
        let dir = std::env::temp_dir().join(format!("w2s-outdir-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old = json!({"settings": {"beta": 1.0, "gold": ["vader"], "judge": null}, "info": {}});
        std::fs::write(dir.join(RUN_FILE), old.to_string()).unwrap();
        std::fs::write(dir.join(RESULTS_FILE), "").unwrap();
        check(&dir, &json!({"beta": 1.0}), false, &mut |_| {}).unwrap();
        assert!(check(&dir, &json!({"beta": 2.0}), false, &mut |_| {}).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn models_are_recorded_by_file_name_and_old_paths_still_resume() {
        assert_eq!(model_name("/a/b/m.gguf"), "m.gguf");
        assert_eq!(model_name("m.gguf"), "m.gguf");
        assert_eq!(model_name("http://h:1/v1#m"), "http://h:1/v1#m");
        let dir = std::env::temp_dir().join(format!("w2s-outdir-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old = json!({"settings": {"strong": "/x/y/s.gguf", "tuned": "http://h/v1#t"}});
        std::fs::write(dir.join(RUN_FILE), old.to_string()).unwrap();
        std::fs::write(dir.join(RESULTS_FILE), "").unwrap();
        check(
            &dir,
            &json!({"strong": "s.gguf", "tuned": "http://h/v1#t"}),
            false,
            &mut |_| {},
        )
        .unwrap();
        assert!(check(
            &dir,
            &json!({"strong": "t.gguf", "tuned": "http://h/v1#t"}),
            false,
            &mut |_| {}
        )
        .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_differ_on_any_byte() {
        assert_eq!(fnv1a(b""), "cbf29ce484222325");
        assert_ne!(fnv1a(b"{\"prompt\":\"a\"}"), fnv1a(b"{\"prompt\":\"b\"}"));
    }

    #[test]
    fn refuses_other_settings_unless_forced_and_moves_them_aside() {
        let dir = std::env::temp_dir().join(format!("w2s-outdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, b) = (json!({"beta": 1.0}), json!({"beta": 2.0}));
        check(&dir, &a, false, &mut |_| {}).unwrap();
        let results = prepare(&dir, &a, &json!({}), false, &mut |_| {}).unwrap();
        std::fs::write(&results, "kept\n").unwrap();
        check(&dir, &a, false, &mut |_| {}).unwrap();
        let e = check(&dir, &b, false, &mut |_| {}).unwrap_err();
        assert_eq!(e.kind(), w2s_core::ErrorKind::Input);
        assert!(e.to_string().contains("beta: 1.0 -> 2.0"), "{e}");
        check(&dir, &b, true, &mut |_| {}).unwrap();
        prepare(&dir, &b, &json!({}), true, &mut |_| {}).unwrap();
        assert!(!results.exists());
        let moved = std::fs::read_to_string(dir.join("previous-1").join(RESULTS_FILE)).unwrap();
        assert_eq!(moved, "kept\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
