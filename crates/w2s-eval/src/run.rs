//! The evaluation loop: every (seed, method, prompt) not yet in the result file is run,
//! scored and appended at once. [`EvalPlan::check`] (in `plan.rs`) checks the request
//! first; [`EvalPlan::run`] loads the models and does the work.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use w2s_core::GoldReward;
use w2s_engine::{in_flight, CustomParts, Engine, EngineError, EngineSpec};
use w2s_llama::Rubric;

use crate::error::EvalError;
use crate::line::{LineContext, Sink, Worker};
use crate::methods::EvalMethod;
use crate::outdir;
use crate::plan::{EvalPlan, Plan};
use crate::progress::{EvalEvent, EvalEvents, Progress};
use crate::prompts::PromptItem;
use crate::scoring::Scoring;
use crate::spec::{EvalSpec, Plugins};
use crate::store::{Key, Store};
use crate::summary::Summary;
pub use crate::task::Task;

/// Runs an evaluation, resuming what `spec.out` already holds, and writes the report;
/// returns its summary. Everything is checked and every model loaded before the output
/// directory is touched.
pub fn evaluate(spec: EvalSpec) -> Result<Summary, EvalError> {
    evaluate_with(spec, Plugins::default())
}

/// [`evaluate`] with a caller's own model parts and gold rewards.
pub fn evaluate_with(spec: EvalSpec, plugins: Plugins) -> Result<Summary, EvalError> {
    EvalPlan::check(spec, plugins)?.run()
}

/// One line to do: its seed, method and prompt.
type Line<'a> = (u64, EvalMethod, &'a PromptItem);

impl EvalPlan {
    /// Runs the plan, resuming what its output directory already holds, and writes the
    /// report; returns its summary. Every model is loaded before the directory is
    /// written.
    pub fn run(self) -> Result<Summary, EvalError> {
        let EvalPlan {
            plan,
            parts,
            golds,
            cancel,
            mut events,
        } = self;
        outdir::check(&plan.out, &plan.fingerprint, plan.force, &mut events)?;
        let parallel = w2s_engine::parallel_for(&plan.settings.engine, plan.parallel)?;
        // Load everything (and refuse what cannot run) before touching the directory.
        let mut workers = plan.workers(parts, parallel, cancel.as_ref())?;
        let scoring = plan.scoring(golds)?;
        let (store, results) = plan.open(&mut events)?;
        let (fresh, again) = plan.todo(&store, &scoring);
        let total = plan.seeds.len() * plan.methods.len() * plan.prompts.len();
        let rescore = again.len();
        events(EvalEvent::Note(&format!(
            "{} of {total} lines to do ({} already in {}{})",
            fresh.len(),
            total - fresh.len(),
            results.display(),
            if rescore > 0 {
                format!("; {rescore} of them to score again with this run's gold rewards")
            } else {
                String::new()
            }
        )));
        let mut sink = Sink {
            store,
            scoring,
            progress: Progress::new(fresh.len() + rescore),
            events,
            reference: plan.reference.map(|r| r.to_string()),
            waiting: Vec::new(),
        };
        for key in again {
            let rec = sink
                .store
                .get(&key)
                .cloned()
                .ok_or_else(|| EvalError::Internal("a line to score again is gone".into()))?;
            sink.finish(rec, " scored again", Instant::now())?;
        }
        plan.generate(&mut workers, fresh, &mut sink, cancel.as_deref())?;
        if !sink.waiting.is_empty() {
            return Err(EvalError::Internal(
                "lines are left waiting for a reference that never came".into(),
            ));
        }
        let summary = crate::report::write(&plan.out, sink.store.records())?;
        (sink.events)(EvalEvent::Note(&format!(
            "report: {}",
            plan.out.join("report.md").display()
        )));
        Ok(summary)
    }
}

impl Plan {
    /// Loads the models: one worker per search in flight, each with the guide alone's
    /// engine (the tuned model, with its template, as the sampled model) where the
    /// guide method runs.
    fn workers(
        &self,
        parts: CustomParts,
        parallel: usize,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<Vec<Worker>, EvalError> {
        let c = &self.settings;
        let engine = parts.build(&c.engine)?;
        let guide_engine = if self.has_guide() {
            let spec = EngineSpec {
                strong: c.engine.tuned.clone(),
                guides: Vec::new(),
                ..c.engine.clone()
            };
            Some(Engine::build(&spec)?.replicas(parallel)?)
        } else {
            None
        };
        let mut guides = guide_engine.map(|g| g.into_iter().map(Some).collect::<Vec<_>>());
        let mut workers = Vec::with_capacity(parallel);
        for engine in engine.replicas(parallel)? {
            workers.push(Worker::new(
                engine,
                guides.as_mut().and_then(|g| g.pop().flatten()),
                self.has_eft(),
                c.engine.threads,
                cancel,
            )?);
        }
        Ok(workers)
    }

    /// Loads the gold rewards, the caller's first.
    fn scoring(&self, custom: Vec<Box<dyn GoldReward + Send>>) -> Result<Scoring, EvalError> {
        let rubric = match self.task {
            Task::Sentiment => Rubric::Positivity,
            Task::Instruct => Rubric::Helpfulness,
        };
        Scoring::build(
            custom,
            &self.golds,
            rubric,
            &self.judge,
            self.settings.engine.load,
            self.settings.engine.threads,
            self.reference.map(|r| r.to_string()),
        )
    }

    /// Prepares the output directory (`run.json`) and opens its result file; returns
    /// the store and the file's path.
    fn open(&self, events: &mut EvalEvents) -> Result<(Store, PathBuf), EvalError> {
        let info = serde_json::json!({
            "command": self.command,
            "prompts_file": self.prompts_source,
            "methods": self.methods.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "seeds": self.seeds,
            "scoring": self.scoring,
        });
        let results = outdir::prepare(&self.out, &self.fingerprint, &info, self.force, events)?;
        let store = Store::open(&results)?;
        if store.torn_bytes > 0 {
            events(EvalEvent::Note(&format!(
                "cut a torn last line ({} bytes) from {}; it is redone",
                store.torn_bytes,
                results.display()
            )));
        }
        Ok((store, results))
    }

    /// The lines to generate, and the keys of the lines stored but not scored by every
    /// gold reward of this run, prompt-major (an interrupted run has compared every
    /// method on the same prompts) with the reference first on each (seed, prompt): the
    /// others are judged against it.
    fn todo<'a>(&'a self, store: &Store, scoring: &Scoring) -> (Vec<Line<'a>>, Vec<Key>) {
        let mut order = self.methods.clone();
        if let Some(r) = self.reference {
            order.retain(|m| *m != r);
            order.insert(0, r);
        }
        let (mut fresh, mut again) = (Vec::new(), Vec::new());
        for &seed in &self.seeds {
            for p in &self.prompts {
                for &m in &order {
                    let key = (m.to_string(), seed, p.id.clone());
                    match store.get(&key) {
                        Some(r) if scoring.is_scored(r) => {}
                        Some(_) => again.push(key),
                        None => fresh.push((seed, m, p)),
                    }
                }
            }
        }
        (fresh, again)
    }

    /// Generates the lines with the workers in flight, each finished by the sink as it
    /// comes; stops at the first failure or when cancelled.
    fn generate(
        &self,
        workers: &mut [Worker],
        fresh: Vec<Line<'_>>,
        sink: &mut Sink,
        cancel: Option<&AtomicBool>,
    ) -> Result<(), EvalError> {
        let cancelled = || cancel.is_some_and(|c| c.load(Ordering::SeqCst));
        let ctx = LineContext {
            task: self.task,
            search: &self.settings.search,
            cancel,
        };
        let mut failed = None;
        let workers_computing = workers.len() > 1;
        in_flight(
            workers,
            fresh,
            |worker, (seed, method, item)| {
                let started = Instant::now();
                (worker.line(&ctx, seed, method, item), started)
            },
            |(line, started)| {
                let result = line.and_then(|rec| sink.finish(rec, "", started));
                if workers_computing {
                    // Gold rewards scored on this thread beside the workers: its CPU helper
                    // team would make more threads than CPUs (every wait a wake-up).
                    w2s_llama::release_cpu_threads();
                }
                match result {
                    Ok(()) if !cancelled() => ControlFlow::Continue(()),
                    Ok(()) => {
                        failed.get_or_insert(EvalError::Engine(EngineError::Search(
                            w2s_core::SearchError::Cancelled,
                        )));
                        ControlFlow::Break(())
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                        ControlFlow::Break(())
                    }
                }
            },
        );
        failed.map_or(Ok(()), Err)
    }
}
