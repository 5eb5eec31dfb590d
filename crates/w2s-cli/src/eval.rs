//! `w2s eval` and `w2s report`: flags for the harness of `w2s-eval`.

use std::path::PathBuf;

use clap::Args;
use w2s_engine::RunSettings;
use w2s_eval::{parse_golds, parse_methods, parse_seeds, read_jsonl, EvalSpec, Task};

use crate::fail::{usage, Fail};

/// Arguments of `w2s eval`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunSettings,
    /// The task: sentiment (plain templates, VADER) or instruct (chat templates, judge).
    #[arg(long, value_enum, default_value = "sentiment")]
    pub task: Task,
    /// A JSONL file of prompts, one {"prompt": ..., "id": ...} object per line.
    #[arg(long, value_name = "FILE.jsonl")]
    pub prompts: PathBuf,
    /// Only the first N prompts of the file.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Methods to compare: sample, guide (the tuned small model alone), bon:N, cbs:WxKxL,
    /// eft:BETA[,BETA...].
    #[arg(
        long,
        value_name = "M,M,...",
        default_value = "sample,bon:16,cbs:4x4x5"
    )]
    pub methods: String,
    /// Seeds; every method runs every prompt with each.
    #[arg(long, value_name = "S,S,...", default_value = "1")]
    pub seeds: String,
    /// Gold rewards, the first is primary: vader, judge (a 1-9 rating), pairwise (P(better
    /// than --reference)) [default: vader for sentiment, pairwise for instruct].
    #[arg(long, value_name = "G,G,...")]
    pub gold: Option<String>,
    /// The method the pairwise judge compares every response with, on the same (seed,
    /// prompt); one of --methods [default: sample].
    #[arg(long, value_name = "METHOD")]
    pub reference: Option<String>,
    /// The judge model (GGUF file or name) for the `judge` and `pairwise` gold rewards.
    #[arg(long, value_name = "FILE|NAME", default_value = w2s_eval::DEFAULT_JUDGE)]
    pub judge: String,
    /// Output directory: results.jsonl, run.json, report.md, summary.json, plots.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// If DIR holds a run with other settings, move it to DIR/previous-N and start afresh.
    #[arg(long)]
    pub force: bool,
    /// Searches in flight at once, each on an engine of its own over the shared models
    /// [default: 1 when the strong model is local (the CPU is the bottleneck), 8 when it
    /// is remote (the searches overlap their waits on the engine); at most 64].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
}

pub fn run(args: EvalArgs) -> Result<(), Fail> {
    let methods = parse_methods(&args.methods)?;
    let seeds = parse_seeds(&args.seeds)?;
    let golds = match &args.gold {
        Some(g) => parse_golds(g)?,
        None => args.task.default_golds(),
    };
    let mut prompts = read_jsonl(&args.prompts)?;
    if let Some(n) = args.limit {
        if n == 0 {
            return Err(usage("--limit must be at least 1"));
        }
        prompts.truncate(n);
    }
    let spec = EvalSpec {
        task: args.task,
        run: args.run,
        prompts,
        prompts_source: args.prompts.display().to_string(),
        methods,
        seeds,
        golds,
        judge: args.judge,
        reference: args.reference,
        out: args.out,
        force: args.force,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        parallel: args.parallel,
    };
    let plugins = w2s_eval::Plugins {
        events: Some(Box::new(w2s_eval::print_to_stderr)),
        ..Default::default()
    };
    w2s_eval::evaluate_with(spec, plugins)?;
    Ok(())
}

/// Arguments of `w2s report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A directory written by `w2s eval` (it needs results.jsonl).
    pub dir: PathBuf,
}

pub fn report(args: ReportArgs) -> Result<(), Fail> {
    let s = w2s_eval::report(&args.dir)?;
    print!("{}", w2s_eval::to_markdown(&s, &[]));
    Ok(())
}
