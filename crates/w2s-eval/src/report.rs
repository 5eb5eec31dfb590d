//! The report, summary and plots from `results.jsonl` alone.

use std::path::Path;

use crate::error::{usage, EvalError};
use crate::outdir::{recorded_command, recorded_run, recorded_settings, OUTPUTS_DIR, RESULTS_FILE};
use crate::plot::{gold_by_method, gold_vs_tokens, PLOTS};
use crate::render::{alpaca_outputs, to_json, to_markdown};
use crate::store::{read_records, Record};
use crate::summary::{summarize, Summary};

/// Redraws a run directory's report, summary and plots from its `results.jsonl` alone;
/// returns the summary.
pub fn report(dir: &Path) -> Result<Summary, EvalError> {
    let records = read_records(&dir.join(RESULTS_FILE))?;
    if records.is_empty() {
        return Err(usage(format!(
            "{} has no finished lines yet",
            dir.join(RESULTS_FILE).display()
        )));
    }
    write(dir, &records)
}

/// Writes report.md, summary.json, the SVG plots and (instruct task) model_outputs.json.
pub fn write(dir: &Path, records: &[Record]) -> Result<Summary, EvalError> {
    let s = summarize(records);
    let put = |name: &str, text: String| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| usage(format!("cannot write {}: {e}", dir.join(name).display())))
    };
    let plot_err = |e: String| EvalError::Internal(format!("cannot draw a plot: {e}"));
    put(PLOTS[0].0, gold_by_method(&s).map_err(plot_err)?)?;
    put(PLOTS[1].0, gold_vs_tokens(&s).map_err(plot_err)?)?;
    let json = serde_json::to_string_pretty(&to_json(&s)).map_err(|e| usage(e.to_string()))?;
    put("summary.json", json + "\n")?;
    let mut md = to_markdown(&s, &PLOTS);
    if let Some(run) = recorded_run(dir) {
        let settings = recorded_settings(&run);
        if !settings.is_empty() {
            md.push_str("\nSettings (from run.json):\n\n| setting | value |\n|---|---|\n");
            for (k, v) in settings {
                md.push_str(&format!("| {k} | `{}` |\n", v.replace('|', "\\|")));
            }
        }
        if let Some(cmd) = recorded_command(&run) {
            md.push_str(&format!("\nCommand:\n\n```sh\n{cmd}\n```\n"));
        }
    }
    put("report.md", md)?;
    if s.task == "instruct" {
        let run = recorded_run(dir);
        let dataset = run
            .as_ref()
            .and_then(|r| r["info"]["prompts_file"].as_str())
            .and_then(|f| Path::new(f).file_stem())
            .map_or_else(|| "w2s".to_string(), |f| f.to_string_lossy().into_owned());
        let json = |v: serde_json::Value| -> Result<String, EvalError> {
            Ok(serde_json::to_string_pretty(&v).map_err(|e| usage(e.to_string()))? + "\n")
        };
        put(
            "model_outputs.json",
            json(alpaca_outputs(records, &dataset))?,
        )?;
        // One file per method and seed: what AlpacaEval takes as one model's outputs.
        let each = dir.join(OUTPUTS_DIR);
        std::fs::create_dir_all(&each)
            .map_err(|e| usage(format!("cannot create {}: {e}", each.display())))?;
        for m in &s.methods {
            for &seed in &s.seeds {
                let rs: Vec<&Record> = records
                    .iter()
                    .filter(|r| r.method == m.method && r.seed == seed)
                    .collect();
                if rs.is_empty() {
                    continue;
                }
                let name = format!("{}-seed{seed}.json", m.method.replace(':', "-"));
                put(
                    &format!("{OUTPUTS_DIR}/{name}"),
                    json(alpaca_outputs(rs, &dataset))?,
                )?;
            }
        }
    }
    Ok(s)
}
