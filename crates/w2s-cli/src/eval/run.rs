//! The evaluation loop: every (seed, method, prompt) not yet in the result file is run,
//! scored and appended at once.

use std::collections::HashSet;
use std::time::Instant;

use w2s_core::{GoldReward, Method, SearchConfig};
use w2s_llama::{score_once, Judge, LocalModels, Model, ProxyTuner, Rubric};

use super::golds::{parse_golds, GoldKind, Vader};
use super::methods::{parse_methods, parse_seeds, EvalMethod};
use super::outdir;
use super::progress::Progress;
use super::store::{GoldScore, Record, Store, Timings};
use super::{EvalArgs, Task};
use crate::fail::{usage, Fail};
use crate::prompts::{read_jsonl, PromptItem};
use crate::settings::{Checked, RunSettings};

/// Merges flags and config, with the task's default templates.
fn settings(run: RunSettings, task: Task) -> Result<Checked, Fail> {
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
    let checked = s.check()?;
    checked.require_local("eval")?;
    Ok(checked)
}

/// The settings every line depends on (compared on resume).
fn fingerprint(
    c: &Checked,
    task: Task,
    golds: &[GoldKind],
    judge: &str,
    prompts: &[PromptItem],
) -> serde_json::Value {
    let cfg = &c.search;
    let prompt_bytes = serde_json::to_vec(
        &prompts
            .iter()
            .map(|p| (&p.id, &p.prompt))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    serde_json::json!({
        "task": task.name(),
        "strong": c.strong.display().to_string(),
        "tuned": c.tuned.display().to_string(),
        "untuned": c.untuned.display().to_string(),
        "strong_template": c.strong_template.as_str(),
        "tuned_template": c.tuned_template.as_str(),
        "untuned_template": c.untuned_template.as_str(),
        "max_new_tokens": cfg.max_new_tokens(),
        "beta": cfg.beta(),
        "temperature": cfg.sampling().temperature(),
        "top_k": cfg.sampling().top_k(),
        "top_p": cfg.sampling().top_p(),
        "stop": cfg.stop(),
        "gold": golds.iter().map(|g| format!("{g:?}").to_lowercase()).collect::<Vec<_>>(),
        "judge": golds.contains(&GoldKind::Judge).then(|| w2s_llama::resolve_model(judge).display().to_string()),
        "prompts": prompts.len(),
        "prompts_fnv1a": super::outdir::fnv1a(&prompt_bytes),
    })
}

pub fn run(args: EvalArgs) -> Result<(), Fail> {
    let methods = parse_methods(&args.methods)?;
    let seeds = parse_seeds(&args.seeds)?;
    let golds = parse_golds(args.gold.as_deref().unwrap_or(match args.task {
        Task::Sentiment => "vader",
        Task::Instruct => "judge",
    }))?;
    let c = settings(args.run, args.task)?;
    let config = |m: Method, seed: u64| {
        SearchConfig::new(
            m,
            c.search.max_new_tokens(),
            c.search.beta(),
            seed,
            *c.search.sampling(),
            c.search.stop().to_vec(),
        )
    };
    for m in &methods {
        if let EvalMethod::Search(m) = m {
            config(*m, 0).map_err(|e| usage(format!("--methods {m}: {e}")))?;
        }
    }
    let mut prompts = read_jsonl(&args.prompts)?;
    if let Some(n) = args.limit {
        if n == 0 {
            return Err(usage("--limit must be at least 1"));
        }
        prompts.truncate(n);
    }
    let mut ids = HashSet::new();
    if let Some(p) = prompts.iter().find(|p| !ids.insert(p.id.as_str())) {
        return Err(usage(format!(
            "{}: prompt id '{}' appears twice; ids name result lines, so they must be unique",
            args.prompts.display(),
            p.id
        )));
    }
    let settings = fingerprint(&c, args.task, &golds, &args.judge, &prompts);
    outdir::check(&args.out, &settings, args.force)?;

    // Load everything (and refuse what cannot run) before touching the directory.
    let mut models = LocalModels::load(&c.local_spec())?;
    let mut eft = None;
    if methods.iter().any(|m| matches!(m, EvalMethod::Eft { .. })) {
        let part = |m: &std::sync::Arc<Model>, t: &w2s_core::PromptTemplate| (m.clone(), t.clone());
        eft = Some(ProxyTuner::new(
            part(models.strong.model(), &c.strong_template),
            part(models.tuned.model(), &c.tuned_template),
            part(models.untuned.model(), &c.untuned_template),
            c.threads,
        )?);
    }
    let mut gold: Vec<Box<dyn GoldReward>> = Vec::new();
    for g in &golds {
        gold.push(match g {
            GoldKind::Vader => Box::new(Vader::new()),
            GoldKind::Judge => {
                let model =
                    Model::load(&w2s_llama::resolve_model(&args.judge), c.local_spec().load)?;
                let rubric = match args.task {
                    Task::Sentiment => Rubric::Positivity,
                    Task::Instruct => Rubric::Helpfulness,
                };
                Box::new(Judge::new(model, rubric, c.threads)?)
            }
        });
    }
    let info = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "prompts_file": args.prompts.display().to_string(),
        "methods": methods.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "seeds": seeds,
    });
    let results = outdir::prepare(&args.out, &settings, &info, args.force)?;
    let mut store = Store::open(&results)?;
    if store.torn_bytes > 0 {
        eprintln!(
            "cut a torn last line ({} bytes) from {}; it is redone",
            store.torn_bytes,
            results.display()
        );
    }
    let mut todo: Vec<(u64, EvalMethod, &PromptItem)> = Vec::new();
    // Prompt-major: an interrupted run has compared every method on the same prompts.
    for &seed in &seeds {
        for p in &prompts {
            for &m in &methods {
                if !store.is_done(&(m.to_string(), seed, p.id.clone())) {
                    todo.push((seed, m, p));
                }
            }
        }
    }
    let total = seeds.len() * methods.len() * prompts.len();
    eprintln!(
        "{} of {total} lines to do ({} already in {})",
        todo.len(),
        total - todo.len(),
        results.display()
    );
    let mut progress = Progress::new(todo.len());
    for (seed, method, item) in todo {
        let started = Instant::now();
        let mut rec = match method {
            EvalMethod::Search(m) => {
                let out = models.search(&config(m, seed)?, &item.prompt)?;
                let (b, s) = (out.best(), &out.stats);
                record(
                    item,
                    method,
                    seed,
                    args.task,
                    b.text.clone(),
                    b.finish,
                    (b.tuned_logprob, b.untuned_logprob, b.score),
                    (
                        s.strong_tokens_sampled,
                        b.strong_tokens,
                        s.tuned_tokens_evaluated,
                        s.untuned_tokens_evaluated,
                    ),
                    Timings {
                        strong_s: s.strong_time.as_secs_f64(),
                        tuned_s: s.tuned_time.as_secs_f64(),
                        untuned_s: s.untuned_time.as_secs_f64(),
                        method_s: s.total_time.as_secs_f64(),
                        gold_s: 0.0,
                    },
                )
            }
            EvalMethod::Eft { beta } => {
                let tuner = eft.as_mut().ok_or_else(|| usage("EFT was not set up"))?;
                let s = &c.search;
                let o = tuner.generate(
                    &item.prompt,
                    beta,
                    s.max_new_tokens(),
                    s.sampling(),
                    s.stop(),
                    seed,
                )?;
                let tuned =
                    score_once(&mut models.tuned, &item.prompt, &o.text, true).map_err(runtime)?;
                let untuned = score_once(&mut models.untuned, &item.prompt, &o.text, true)
                    .map_err(runtime)?;
                let n = o.tokens as u64;
                record(
                    item,
                    method,
                    seed,
                    args.task,
                    o.text.clone(),
                    o.finish,
                    (tuned, untuned, s.beta() * (tuned - untuned)),
                    (o.tokens, o.tokens, n, n),
                    Timings {
                        strong_s: o.strong_time.as_secs_f64(),
                        tuned_s: o.tuned_time.as_secs_f64(),
                        untuned_s: o.untuned_time.as_secs_f64(),
                        method_s: o.total_time.as_secs_f64(),
                        gold_s: 0.0,
                    },
                )
            }
        };
        let t = Instant::now();
        for g in gold.iter_mut() {
            let value = g.score(&item.prompt, &rec.response).map_err(|e| Fail {
                code: 1,
                message: format!("gold reward {}: {e}", g.name()),
            })?;
            rec.gold.push(GoldScore {
                name: g.name().to_string(),
                value,
            });
        }
        rec.timings.gold_s = t.elapsed().as_secs_f64();
        let shown = rec.gold.first().map_or(0.0, |g| g.value);
        store.append(rec)?;
        progress.tick(&format!(
            "{method} seed {seed} prompt {} ({:.1} s, gold {shown:.3})",
            item.id,
            started.elapsed().as_secs_f64()
        ));
    }
    super::report::write(&args.out, store.records())?;
    eprintln!("report: {}", args.out.join("report.md").display());
    Ok(())
}

fn runtime(e: w2s_core::BackendError) -> Fail {
    Fail {
        code: 1,
        message: e.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    item: &PromptItem,
    method: EvalMethod,
    seed: u64,
    task: Task,
    response: String,
    finish: w2s_core::Finish,
    (tuned_logprob, untuned_logprob, guide): (f64, f64, f64),
    (strong_tokens, response_tokens, tuned_tokens, untuned_tokens): (usize, usize, u64, u64),
    timings: Timings,
) -> Record {
    Record {
        task: task.name().into(),
        method: method.to_string(),
        seed,
        prompt_id: item.id.clone(),
        prompt: item.prompt.clone(),
        response,
        finish,
        guide,
        tuned_logprob,
        untuned_logprob,
        gold: Vec::new(),
        strong_tokens,
        response_tokens,
        tuned_tokens,
        untuned_tokens,
        timings,
    }
}
