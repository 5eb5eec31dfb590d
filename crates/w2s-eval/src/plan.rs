//! An evaluation checked before anything loads: [`EvalPlan::check`] turns an [`EvalSpec`]
//! and its [`Plugins`] into a plan whose settings are valid and whose fingerprint (what a
//! resumed run must match) is drawn; [`EvalPlan::run`] (in `run.rs`) does the work.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use w2s_core::GoldReward;
use w2s_engine::{shown_f32, Checked, CustomParts, RoleSource, RoleSpec, RunSettings};

use crate::error::{usage, EvalError};
use crate::golds::GoldKind;
use crate::methods::EvalMethod;
use crate::outdir::model_name;
use crate::progress::{to_tracing, EvalEvents};
use crate::prompts::PromptItem;
use crate::spec::{EvalSpec, Plugins};
use crate::task::Task;

/// An evaluation whose every setting has been checked, ready to [`run`](EvalPlan::run).
/// Nothing is loaded and nothing is written until then.
pub struct EvalPlan {
    pub(crate) plan: Plan,
    pub(crate) parts: CustomParts,
    pub(crate) golds: Vec<Box<dyn GoldReward + Send>>,
    pub(crate) cancel: Option<Arc<AtomicBool>>,
    pub(crate) events: EvalEvents,
}

/// The checked settings of an [`EvalPlan`], apart from the caller's objects.
pub(crate) struct Plan {
    pub task: Task,
    /// Models, templates and the search, merged and checked.
    pub settings: Checked,
    pub prompts: Vec<PromptItem>,
    pub prompts_source: String,
    pub methods: Vec<EvalMethod>,
    pub seeds: Vec<u64>,
    pub golds: Vec<GoldKind>,
    pub judge: String,
    /// The method the pairwise judge compares the others with (one of `methods`).
    pub reference: Option<EvalMethod>,
    pub out: PathBuf,
    pub force: bool,
    pub command: String,
    pub parallel: Option<usize>,
    /// The settings every line's response depends on (compared on resume).
    pub fingerprint: serde_json::Value,
    /// How the lines are scored (recorded, not compared).
    pub scoring: serde_json::Value,
}

impl Plan {
    /// Whether a method samples the tuned model alone.
    pub fn has_guide(&self) -> bool {
        self.methods.contains(&EvalMethod::Guide)
    }

    /// Whether a method is EFT.
    pub fn has_eft(&self) -> bool {
        self.methods
            .iter()
            .any(|m| matches!(m, EvalMethod::Eft { .. }))
    }
}

impl EvalPlan {
    /// Checks an evaluation: methods, seeds, gold rewards, the reference, the model
    /// settings and the prompts. The output directory is looked at only by
    /// [`run`](EvalPlan::run).
    pub fn check(spec: EvalSpec, plugins: Plugins) -> Result<EvalPlan, EvalError> {
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
        if methods.is_empty() || seeds.is_empty() || golds.len() + custom_golds.len() == 0 {
            return Err(usage(
                "an evaluation needs at least one method, one seed and one gold reward",
            ));
        }
        let custom_names = gold_names(&golds, &custom_golds)?;
        if task == Task::Instruct
            && !golds.iter().any(|g| g.uses_judge())
            && custom_golds.is_empty()
        {
            return Err(usage(
                "an instruct run needs a judge: use --gold pairwise (the default) or judge, with --judge MODEL",
            ));
        }
        let reference = reference_method(reference, &golds, &methods)?;
        let mut run = run;
        parts.name_in(&mut run)?;
        let settings = merged(run, task)?;
        check_methods(&settings, &methods)?;
        check_prompts(&prompts, &prompts_source)?;
        check_roles(&settings, &methods)?;
        let reference_name = reference.map(|r| r.to_string());
        let fingerprint = fingerprint(&settings, task, &prompts);
        let scoring = scoring_settings(&golds, &custom_names, &judge, reference_name.as_deref());
        let plan = Plan {
            task,
            settings,
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
            fingerprint,
            scoring,
        };
        Ok(EvalPlan {
            plan,
            parts,
            golds: custom_golds,
            cancel,
            events: events.unwrap_or_else(|| Box::new(to_tracing)),
        })
    }
}

/// The names of the caller's gold rewards, each non-empty and unique (built-in names
/// included).
fn gold_names(
    golds: &[GoldKind],
    custom: &[Box<dyn GoldReward + Send>],
) -> Result<Vec<String>, EvalError> {
    let names: Vec<String> = custom.iter().map(|g| g.name().to_string()).collect();
    for (i, name) in names.iter().enumerate() {
        let builtin = golds.iter().any(|g| g.name().eq_ignore_ascii_case(name));
        if name.is_empty() || builtin || names[..i].contains(name) {
            return Err(usage(format!(
                "gold reward name '{name}' is empty or used twice; give each gold reward its own name"
            )));
        }
    }
    Ok(names)
}

/// The pairwise judge's reference (`sample` unless named), which must be one of the
/// methods; none without the pairwise judge.
fn reference_method(
    reference: Option<String>,
    golds: &[GoldKind],
    methods: &[EvalMethod],
) -> Result<Option<EvalMethod>, EvalError> {
    let pairwise = golds.contains(&GoldKind::Pairwise);
    match (reference, pairwise) {
        (Some(r), false) => Err(usage(format!(
            "--reference {r}: the reference is for the pairwise judge; add pairwise to --gold"
        ))),
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
            Ok(Some(found))
        }
        (None, false) => Ok(None),
    }
}

/// Merges flags and config, with the task's default templates.
fn merged(run: RunSettings, task: Task) -> Result<Checked, EvalError> {
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

/// Every search method is valid with the run's settings.
fn check_methods(c: &Checked, methods: &[EvalMethod]) -> Result<(), EvalError> {
    for m in methods {
        if let EvalMethod::Search(m) = m {
            c.search
                .with_method(*m, 0)
                .map_err(|e| usage(format!("--methods {m}: {e}")))?;
        }
    }
    Ok(())
}

/// There are prompts, and their ids are unique.
fn check_prompts(prompts: &[PromptItem], source: &str) -> Result<(), EvalError> {
    if prompts.is_empty() {
        return Err(usage(format!("{source}: no prompts")));
    }
    let mut ids = HashSet::new();
    if let Some(p) = prompts.iter().find(|p| !ids.insert(p.id.as_str())) {
        return Err(usage(format!(
            "{source}: prompt id '{}' appears twice; ids name result lines, so they must be unique",
            p.id
        )));
    }
    Ok(())
}

/// The guide method and EFT can run on the roles given.
fn check_roles(c: &Checked, methods: &[EvalMethod]) -> Result<(), EvalError> {
    let custom = |r: &RoleSpec| matches!(r.source, RoleSource::Custom(_));
    if methods.contains(&EvalMethod::Guide)
        && (custom(&c.engine.tuned) || custom(&c.engine.untuned))
    {
        return Err(usage(
            "the guide method samples from the tuned model and scores with the pair, so both must be GGUF files or URL#MODEL, not a caller's objects",
        ));
    }
    if methods.iter().any(|m| matches!(m, EvalMethod::Eft { .. })) {
        c.engine
            .require_local("EFT (eft:BETA), which mixes every token's logits,")?;
    }
    Ok(())
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
