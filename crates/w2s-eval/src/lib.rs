//! # w2s-eval: the evaluation harness
//!
//! Compares methods (sampling, Best-of-N, chunk-level beam search, EFT) on a prompt set
//! with the same models and seeds, and scores every response with gold rewards the
//! search never sees (VADER, a model judge, or any [`w2s_core::GoldReward`]). Any role may
//! be a remote engine (EFT excepted: it needs every token's logits).
//!
//! - [`evaluate`] runs an [`EvalSpec`]: one line per (method, seed, prompt) is appended to
//!   `DIR/results.jsonl` and flushed as soon as it is done, so a killed run loses nothing
//!   and a rerun with the same settings resumes (`run.json` records them; other settings
//!   are refused, or moved aside with `force`). Then it writes the report.
//!   [`EvalPlan::check`] is its first half: it checks a request into a plan before any
//!   model loads; [`EvalPlan::run`] does the work.
//! - [`report`] redraws `report.md`, `summary.json` and the SVG plots from
//!   `results.jsonl` alone: per method the mean gold with a seeded 95% bootstrap interval
//!   over prompts, paired comparisons, the guide's agreement with the gold.
//!
//! ```no_run
//! use w2s_eval::{evaluate, parse_methods, read_jsonl, EvalSpec, GoldKind, Task};
//!
//! let settings = w2s_engine::RunSettings {
//!     config: Some("configs/sentiment.toml".into()),
//!     ..Default::default()
//! };
//! let summary = evaluate(EvalSpec {
//!     task: Task::Sentiment,
//!     run: settings,
//!     prompts: read_jsonl("prompts/sentiment.jsonl".as_ref())?,
//!     prompts_source: "prompts/sentiment.jsonl".into(),
//!     methods: parse_methods("sample,bon:4,cbs:2x2x5")?,
//!     seeds: vec![1],
//!     golds: vec![GoldKind::Vader],
//!     judge: "qwen2.5-coder-1.5b-instruct".into(),
//!     reference: None,
//!     out: "runs/example".into(),
//!     force: false,
//!     command: "example".into(),
//!     parallel: None, // 1 search at a time with local models, 8 with a remote strong model
//! })?;
//! for m in &summary.methods {
//!     println!("{}: {:.3} [{:.3}, {:.3}]", m.method, m.mean_gold, m.ci_low, m.ci_high);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod golds;
mod guide_check;
mod line;
mod methods;
mod outdir;
mod plan;
mod plot;
mod progress;
mod prompts;
mod render;
mod report;
mod run;
mod scoring;
mod spec;
mod stats;
mod store;
mod summary;
mod task;
mod trace_page;
mod winrate;

pub use error::EvalError;
pub use golds::{parse_golds, GoldKind, JudgeGold, Vader, DEFAULT_JUDGE};
pub use guide_check::{
    candidates as guide_candidates, check as check_guide, check_run as guide_check_run,
    run_responses, score_with, to_markdown as guide_check_markdown, Bin, GuideCheck, Response,
    RunCheck,
};
pub use methods::{parse_methods, parse_seeds, EvalMethod};
pub use outdir::{RESULTS_FILE, RUN_FILE};
pub use plan::EvalPlan;
pub use progress::{print_to_stderr, to_tracing, EvalEvent, EvalEvents};
pub use prompts::{parse_jsonl, read_jsonl, PromptItem};
pub use render::{to_json, to_markdown};
pub use report::report;
pub use run::{evaluate, evaluate_with, Task};
pub use spec::{EvalSpec, Plugins};
pub use store::{read_records, GoldScore, PairScore, Record, Timings};
pub use summary::{summarize, Interval, MethodSummary, Paired, Summary};
pub use trace_page::{
    candidate_texts, draw_traces, read_traces, trace_page, write_page, TraceRecord,
};
pub use winrate::{logistic_fit, WinRates};
