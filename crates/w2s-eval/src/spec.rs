//! What an evaluation is asked to do ([`EvalSpec`]) and what a library caller adds to it
//! ([`Plugins`]); [`crate::EvalPlan::check`] checks them.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use w2s_core::GoldReward;
use w2s_engine::{CustomParts, RunSettings};

use crate::golds::GoldKind;
use crate::methods::EvalMethod;
use crate::progress::EvalEvents;
use crate::prompts::PromptItem;
use crate::task::Task;

/// One evaluation: which models, which prompts, which methods and seeds, scored how,
/// written where.
#[derive(Debug, Clone)]
pub struct EvalSpec {
    /// The task.
    pub task: Task,
    /// Models, templates and sampling settings (any role may be remote). The method and
    /// seed come from `methods` and `seeds`, so those settings must be unset.
    pub run: RunSettings,
    /// The prompts, in order; ids must be unique.
    pub prompts: Vec<PromptItem>,
    /// Where the prompts came from (recorded in `run.json`).
    pub prompts_source: String,
    /// Methods to compare.
    pub methods: Vec<EvalMethod>,
    /// Seeds: every method runs every prompt with each.
    pub seeds: Vec<u64>,
    /// Gold rewards, the primary one first.
    pub golds: Vec<GoldKind>,
    /// The judge model (GGUF file or name) for [`GoldKind::Judge`] and
    /// [`GoldKind::Pairwise`].
    pub judge: String,
    /// The method whose response to each (seed, prompt) the pairwise judge compares the
    /// others with (`sample` when `None`); it must be one of `methods`.
    pub reference: Option<String>,
    /// The output directory.
    pub out: PathBuf,
    /// If `out` holds a run with other settings, move it to `out/previous-N`.
    pub force: bool,
    /// The command line that started the run (recorded in `run.json` and the report).
    pub command: String,
    /// Searches in flight at once (`None`: [`w2s_engine::default_parallel`]). Each line's
    /// response does not depend on it where the engines are deterministic.
    pub parallel: Option<usize>,
}

/// What a library caller adds to an evaluation (e.g. Python objects): custom model parts
/// and gold rewards of its own, which come before the spec's (the first gold reward is
/// the report's primary one).
#[derive(Default)]
pub struct Plugins {
    /// Scorers for the tuned / untuned roles, or a guide replacing the pair.
    pub parts: CustomParts,
    /// Gold rewards, each with a unique [`GoldReward::name`].
    pub golds: Vec<Box<dyn GoldReward + Send>>,
    /// Set to stop the run: the line in progress stops within a token of the local
    /// models (or at its next chunk) and is redone on resume; every finished line is kept.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Where the run's notes and finished lines go ([`crate::print_to_stderr`] draws
    /// them as `w2s eval` does); `None`: `tracing`.
    pub events: Option<EvalEvents>,
}
