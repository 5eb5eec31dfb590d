//! `w2s eval`: compares methods on a prompt set with the same models and seeds, scoring
//! every response with gold rewards the search never sees; `w2s report` redraws the
//! report from the result file alone.

mod golds;
mod methods;
mod outdir;
mod plot;
mod progress;
mod report;
mod run;
mod store;
mod summary;

use std::path::PathBuf;

use clap::{Args, ValueEnum};

pub use report::{run as report, ReportArgs};
pub use run::run;

use crate::settings::RunSettings;

/// What the prompts are, which sets the default templates and gold rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Continue movie reviews positively; gold: VADER of prompt + response.
    Sentiment,
    /// Follow instructions through each model's chat template; gold: the judge.
    Instruct,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Sentiment => "sentiment",
            Task::Instruct => "instruct",
        }
    }
}

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
    /// Methods to compare: sample, bon:N, cbs:WxKxL, eft:BETA[,BETA...].
    #[arg(
        long,
        value_name = "M,M,...",
        default_value = "sample,bon:16,cbs:4x4x5"
    )]
    pub methods: String,
    /// Seeds; every method runs every prompt with each.
    #[arg(long, value_name = "S,S,...", default_value = "1")]
    pub seeds: String,
    /// Gold rewards, the first is primary [default: vader for sentiment, judge for instruct].
    #[arg(long, value_name = "vader,judge")]
    pub gold: Option<String>,
    /// The judge model (GGUF file or name) for the `judge` gold reward.
    #[arg(
        long,
        value_name = "FILE|NAME",
        default_value = "qwen2.5-coder-1.5b-instruct"
    )]
    pub judge: String,
    /// Output directory: results.jsonl, run.json, report.md, summary.json, plots.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// If DIR holds a run with other settings, move it to DIR/previous-N and start afresh.
    #[arg(long)]
    pub force: bool,
}
