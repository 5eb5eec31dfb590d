//! The evaluation loop: every (seed, method, prompt) not yet in the result file is run,
//! scored and appended at once.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use w2s_core::GoldReward;
use w2s_engine::{
    in_flight, shown_f32, Checked, CustomParts, Engine, EngineError, EngineSpec, RoleSource,
    RunSettings,
};
use w2s_llama::Rubric;

use crate::error::{usage, EvalError};
use crate::golds::GoldKind;
use crate::line::{LineContext, Sink, Worker};
use crate::methods::EvalMethod;
use crate::outdir::{self, model_name};
use crate::progress::{to_tracing, EvalEvent, EvalEvents, Progress};
use crate::prompts::PromptItem;
use crate::scoring::Scoring;
use crate::store::Store;
use crate::summary::Summary;
pub use crate::task::Task;

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

/// Merges flags and config, with the task's default templates.
fn settings(run: RunSettings, task: Task) -> Result<Checked, EvalError> {
    if run.method.is_some() || run.w.is_some() || run.k.is_some() || run.l.is_some() {
        return Err(usage(
            "w2s eval compares the methods of --methods; drop --method, -w, -k, -l",
        ));
    }
    if run.n.is_some() || run.seed.is_some() {
        return Err(usage(
            "w2s eval takes --methods (e.g. bon:16) and --seeds (e.g. 1,2,3); drop --n and --seed",
        ));
    }
    let mut s = run.merged()?;
    s.config = None;
    (s.method, s.w, s.k, s.l, s.n, s.seed) = (None, None, None, None, None, None);
    if task == Task::Instruct {
        for t in [
            &mut s.strong_template,
            &mut s.tuned_template,
            &mut s.untuned_template,
        ] {
            t.get_or_insert_with(|| "chat:{prompt}".into());
        }
    }
    Ok(s.check()?)
}

/// How the lines are scored (recorded in `run.json`, not compared on resume: a line
/// scored otherwise is scored again, not generated again).
fn scoring_settings(
    golds: &[GoldKind],
    custom_golds: &[String],
    judge: &str,
    reference: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "gold": custom_golds.iter().cloned().chain(golds.iter().map(|g| g.name().to_string())).collect::<Vec<_>>(),
        "judge": golds.iter().any(|g| g.uses_judge()).then(|| model_name(&w2s_llama::resolve_model(judge).display().to_string())),
        "reference": reference,
    })
}

/// The settings every line's response depends on (compared on resume), as the user gave
/// them.
fn fingerprint(c: &Checked, task: Task, prompts: &[PromptItem]) -> serde_json::Value {
    let cfg = &c.search;
    let prompt_bytes = serde_json::to_vec(
        &prompts
            .iter()
            .map(|p| (&p.id, &p.prompt))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    let e = &c.engine;
    let mut v = serde_json::json!({
        "task": task.name(),
        "strong": model_name(&e.strong.describe()),
        "tuned": model_name(&e.tuned.describe()),
        "untuned": model_name(&e.untuned.describe()),
        "strong_template": e.strong.template.as_str(),
        "tuned_template": e.tuned.template.as_str(),
        "untuned_template": e.untuned.template.as_str(),
        "max_new_tokens": cfg.max_new_tokens(),
        "beta": cfg.beta(),
        "temperature": shown_f32(cfg.sampling().temperature()),
        "top_k": cfg.sampling().top_k(),
        "top_p": shown_f32(cfg.sampling().top_p()),
        "stop": cfg.stop(),
        "prompts": prompts.len(),
        "prompts_fnv1a": crate::outdir::fnv1a(&prompt_bytes),
    });
    // Settings added later appear only when used, so that older runs still resume.
    if !e.guides.is_empty() {
        v["guides"] = e
            .guides
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.name,
                    "weight": g.weight,
                    "tuned": model_name(&g.tuned.describe()),
                    "untuned": model_name(&g.untuned.describe()),
                    "tuned_template": g.tuned.template.as_str(),
                    "untuned_template": g.untuned.template.as_str(),
                })
            })
            .collect();
    }
    if let Some(end) = cfg.chunk_end() {
        v["chunk_entropy"] = end.entropy().into();
        v["chunk_min"] = end.min_tokens().into();
    }
    v
}

/// Runs an evaluation, resuming what `spec.out` already holds, and writes the report;
/// returns its summary. Everything is checked and every model loaded before the output
/// directory is touched.
pub fn evaluate(spec: EvalSpec) -> Result<Summary, EvalError> {
    evaluate_with(spec, Plugins::default())
}

/// [`evaluate`] with a caller's own model parts and gold rewards.
pub fn evaluate_with(spec: EvalSpec, plugins: Plugins) -> Result<Summary, EvalError> {
    let EvalSpec {
        task,
        run,
        prompts,
        prompts_source,
        methods,
        seeds,
        golds,
        judge,
        reference,
        out,
        force,
        command,
        parallel,
    } = spec;
    let Plugins {
        parts,
        golds: custom_golds,
        cancel,
        events,
    } = plugins;
    let mut events = events.unwrap_or_else(|| Box::new(to_tracing));
    let cancelled = || cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst));
    if methods.is_empty() || seeds.is_empty() || golds.len() + custom_golds.len() == 0 {
        return Err(usage(
            "an evaluation needs at least one method, one seed and one gold reward",
        ));
    }
    let custom_names: Vec<String> = custom_golds.iter().map(|g| g.name().to_string()).collect();
    for (i, name) in custom_names.iter().enumerate() {
        let builtin = golds.iter().any(|g| g.name().eq_ignore_ascii_case(name));
        if name.is_empty() || builtin || custom_names[..i].contains(name) {
            return Err(usage(format!(
                "gold reward name '{name}' is empty or used twice; give each gold reward its own name"
            )));
        }
    }
    let pairwise = golds.contains(&GoldKind::Pairwise);
    if task == Task::Instruct && !golds.iter().any(|g| g.uses_judge()) && custom_golds.is_empty() {
        return Err(usage(
            "an instruct run needs a judge: use --gold pairwise (the default) or judge, with --judge MODEL",
        ));
    }
    let reference = match (reference, pairwise) {
        (Some(r), false) => {
            return Err(usage(format!(
                "--reference {r}: the reference is for the pairwise judge; add pairwise to --gold"
            )))
        }
        (r, true) => {
            let r = r.unwrap_or_else(|| "sample".into());
            let named = crate::methods::parse_methods(&r).ok();
            let found = named
                .as_deref()
                .and_then(|n| methods.iter().find(|m| n == [**m]))
                .copied();
            let Some(found) = found else {
                let listed: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
                return Err(usage(format!(
                    "--reference {r} is not one of the run's methods ({}); the pairwise judge compares every response with the reference's",
                    listed.join(", ")
                )));
            };
            Some(found)
        }
        (None, false) => None,
    };
    let mut run = run;
    parts.name_in(&mut run)?;
    let c = settings(run, task)?;
    let config = |m: w2s_core::Method, seed: u64| c.search.with_method(m, seed);
    for m in &methods {
        if let EvalMethod::Search(m) = m {
            config(*m, 0).map_err(|e| usage(format!("--methods {m}: {e}")))?;
        }
    }
    if prompts.is_empty() {
        return Err(usage(format!("{prompts_source}: no prompts")));
    }
    let mut ids = HashSet::new();
    if let Some(p) = prompts.iter().find(|p| !ids.insert(p.id.as_str())) {
        return Err(usage(format!(
            "{prompts_source}: prompt id '{}' appears twice; ids name result lines, so they must be unique",
            p.id
        )));
    }
    let has_guide = methods.contains(&EvalMethod::Guide);
    let custom = |r: &w2s_engine::RoleSpec| matches!(r.source, RoleSource::Custom(_));
    if has_guide && (custom(&c.engine.tuned) || custom(&c.engine.untuned)) {
        return Err(usage(
            "the guide method samples from the tuned model and scores with the pair, so both must be GGUF files or URL#MODEL, not a caller's objects",
        ));
    }
    let has_eft = methods.iter().any(|m| matches!(m, EvalMethod::Eft { .. }));
    if has_eft {
        c.engine
            .require_local("EFT (eft:BETA), which mixes every token's logits,")?;
    }
    let reference_name = reference.map(|r| r.to_string());
    let settings = fingerprint(&c, task, &prompts);
    let scoring_info = scoring_settings(&golds, &custom_names, &judge, reference_name.as_deref());
    outdir::check(&out, &settings, force, &mut events)?;

    let parallel = w2s_engine::parallel_for(&c.engine, parallel)?;

    // Load everything (and refuse what cannot run) before touching the directory.
    let engine = parts.build(&c.engine)?;
    // The guide alone: the tuned model, with its template, as the sampled model.
    let guide_engine = if has_guide {
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
            has_eft,
            c.engine.threads,
            cancel.as_ref(),
        )?);
    }
    let rubric = match task {
        Task::Sentiment => Rubric::Positivity,
        Task::Instruct => Rubric::Helpfulness,
    };
    let scoring = Scoring::build(
        custom_golds,
        &golds,
        rubric,
        &judge,
        c.engine.load,
        c.engine.threads,
        reference_name.clone(),
    )?;
    let info = serde_json::json!({
        "command": command,
        "prompts_file": prompts_source,
        "methods": methods.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "seeds": seeds,
        "scoring": scoring_info,
    });
    let results = outdir::prepare(&out, &settings, &info, force, &mut events)?;
    let store = Store::open(&results)?;
    if store.torn_bytes > 0 {
        events(EvalEvent::Note(&format!(
            "cut a torn last line ({} bytes) from {}; it is redone",
            store.torn_bytes,
            results.display()
        )));
    }
    // The reference goes first on each (seed, prompt): the others are judged against it.
    let mut order = methods.clone();
    if let Some(r) = reference {
        order.retain(|m| *m != r);
        order.insert(0, r);
    }
    let mut todo: Vec<(u64, EvalMethod, &PromptItem, bool)> = Vec::new();
    let mut rescore = 0;
    // Prompt-major: an interrupted run has compared every method on the same prompts.
    for &seed in &seeds {
        for p in &prompts {
            for &m in &order {
                match store.get(&(m.to_string(), seed, p.id.clone())) {
                    Some(r) if scoring.is_scored(r) => {}
                    Some(_) => {
                        rescore += 1;
                        todo.push((seed, m, p, true));
                    }
                    None => todo.push((seed, m, p, false)),
                }
            }
        }
    }
    let total = seeds.len() * methods.len() * prompts.len();
    events(EvalEvent::Note(&format!(
        "{} of {total} lines to do ({} already in {}{})",
        todo.len() - rescore,
        total - todo.len() + rescore,
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
        progress: Progress::new(todo.len()),
        events,
        reference: reference.map(|r| r.to_string()),
        waiting: Vec::new(),
    };
    let mut fresh = Vec::new();
    for (seed, method, item, again) in todo {
        if !again {
            fresh.push((seed, method, item));
            continue;
        }
        let key = (method.to_string(), seed, item.id.clone());
        let rec = sink
            .store
            .get(&key)
            .cloned()
            .ok_or_else(|| EvalError::Internal("a line to score again is gone".into()))?;
        sink.finish(rec, " scored again", Instant::now())?;
    }
    let ctx = LineContext {
        task,
        search: &c.search,
        cancel: cancel.as_deref(),
    };
    let mut failed = None;
    in_flight(
        &mut workers,
        fresh,
        |worker, (seed, method, item)| {
            let started = Instant::now();
            (worker.line(&ctx, seed, method, item), started)
        },
        |(line, started)| {
            let result = line.and_then(|rec| sink.finish(rec, "", started));
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
    if let Some(e) = failed {
        return Err(e);
    }
    if !sink.waiting.is_empty() {
        return Err(EvalError::Internal(
            "lines are left waiting for a reference that never came".into(),
        ));
    }
    let summary = crate::report::write(&out, sink.store.records())?;
    (sink.events)(EvalEvent::Note(&format!(
        "report: {}",
        out.join("report.md").display()
    )));
    Ok(summary)
}
