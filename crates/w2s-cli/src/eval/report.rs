//! `w2s report DIR`: the report, summary and plots from `results.jsonl` alone.

use std::path::{Path, PathBuf};

use clap::Args;

use super::outdir::{recorded_command, recorded_run, recorded_settings, RESULTS_FILE};
use super::plot::{gold_by_method, gold_vs_tokens, PLOTS};
use super::store::{read_records, Record};
use super::summary::{alpaca_outputs, summarize, to_json, to_markdown, Summary};
use crate::fail::{usage, Fail};

/// Arguments of `w2s report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A directory written by `w2s eval` (it needs results.jsonl).
    pub dir: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<(), Fail> {
    let records = read_records(&args.dir.join(RESULTS_FILE))?;
    if records.is_empty() {
        return Err(usage(format!(
            "{} has no finished lines yet",
            args.dir.join(RESULTS_FILE).display()
        )));
    }
    let s = write(&args.dir, &records)?;
    print!("{}", to_markdown(&s, &[]));
    Ok(())
}

/// Writes report.md, summary.json, the SVG plots and (instruct task) model_outputs.json.
pub fn write(dir: &Path, records: &[Record]) -> Result<Summary, Fail> {
    let s = summarize(records);
    let put = |name: &str, text: String| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| usage(format!("cannot write {}: {e}", dir.join(name).display())))
    };
    let plot_err = |e: String| Fail {
        code: 1,
        message: format!("cannot draw a plot: {e}"),
    };
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
        let out = serde_json::to_string_pretty(&alpaca_outputs(records))
            .map_err(|e| usage(e.to_string()))?;
        put("model_outputs.json", out + "\n")?;
    }
    Ok(s)
}
