//! `w2s guide-check`: does a guide pair track the gold? Rescores a run's responses with
//! each candidate pair and prints the agreement and the over-optimisation curve.

use std::path::PathBuf;

use clap::Args;
use w2s_engine::GuideTable;
use w2s_eval::{guide_candidates, guide_check_markdown, guide_check_run};

use crate::fail::{usage, Fail};

/// Arguments of `w2s guide-check`.
#[derive(Debug, Args)]
pub struct GuideCheckArgs {
    /// A run directory written by `w2s eval` (its results.jsonl gives the responses and
    /// their gold values).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// A candidate pair (repeatable): a TOML inline table with the keys of `--guide`,
    /// e.g. '{name = "positive", tuned = "FILE", untuned = "FILE", tuned_template = "..."}'.
    #[arg(long = "pair", value_name = "TABLE")]
    pub pairs: Vec<String>,
    /// A config file whose tuned / untuned pair is a candidate (repeatable), named by
    /// the file's stem.
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
    /// The gold to check against [default: the run's primary gold].
    #[arg(long, value_name = "NAME")]
    pub gold: Option<String>,
    /// Bins of the over-optimisation curve (equal counts by guide value).
    #[arg(long, default_value_t = 5)]
    pub bins: usize,
    /// CPU threads for llama.cpp [default: number of cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the checks as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write each response's gold and guide values, one JSON line per response.
    #[arg(long, value_name = "FILE.jsonl")]
    pub values: Option<PathBuf>,
}

pub fn run(args: GuideCheckArgs) -> Result<(), Fail> {
    let tables = args
        .pairs
        .iter()
        .map(|p| {
            GuideTable::parse_flag(p).map_err(|e| usage(e.to_string().replace("--guide", "--pair")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = guide_candidates(&tables, &args.configs)?;
    let threads = match args.threads {
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let found = guide_check_run(
        &args.run,
        args.gold.as_deref(),
        &candidates,
        threads,
        args.bins,
        &mut |name, done, total| {
            if done == total || done % 10 == 0 {
                eprintln!("{name}: {done}/{total} prompts rescored");
            }
        },
    )?;
    print!(
        "{}",
        guide_check_markdown(&found.gold, &args.run.display().to_string(), &found.checks)
    );
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text)
            .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "run": args.run, "gold": found.gold, "candidates": found.checks,
        }))
        .map_err(|e| usage(e.to_string()))?;
        write(path, text + "\n")?;
    }
    if let Some(path) = &args.values {
        let mut text = String::new();
        for (i, r) in found.responses.iter().enumerate() {
            let values: serde_json::Map<String, serde_json::Value> = found
                .checks
                .iter()
                .zip(&found.values)
                .map(|(c, v)| (c.name.clone(), v[i].into()))
                .collect();
            text += &serde_json::json!({
                "prompt_id": r.prompt_id, "response": r.response, "gold": r.gold, "values": values,
            })
            .to_string();
            text += "\n";
        }
        write(path, text)?;
    }
    Ok(())
}
