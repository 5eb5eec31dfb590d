//! The classes and functions of `w2s._w2s`. Each takes settings as the CLI does and hands
//! them to the library; a search's result goes back as an `Output` object, summaries as
//! JSON text.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use w2s_core::{BackendError, Role, SearchOutput, ValueFn};
use w2s_engine::{
    can_pool, in_flight, parallel_for, search_pooled, CustomParts, Engine, EngineError,
    RunSettings, SearchRequest,
};

use crate::errors::{to_py, value_error, Slot};
use crate::objects::{values, PyGold, PyScorer};
use crate::results::Output;
use crate::run::cancellable;
use crate::settings::{guide_table, run_settings};

/// Python objects for the roles: `(role name, label, f)` scorers and `(label, f)` guide,
/// each `f(prompt, texts, ended) -> list[float]`.
type PyParts = (
    Vec<(String, String, Py<PyAny>)>,
    Option<(String, Py<PyAny>)>,
);

fn custom_parts(parts: PyParts, slot: &Slot) -> PyResult<CustomParts> {
    let (scorers, guide) = parts;
    let mut out = CustomParts::default();
    for (role, label, f) in scorers {
        let role = match role.as_str() {
            "tuned" => Role::Tuned,
            "untuned" => Role::Untuned,
            other => return Err(value_error(format!("no role '{other}' takes a scorer"))),
        };
        let scorer = PyScorer::new(f, format!("the {role} scorer {label}"), slot.clone());
        out.scorers.push((role, label, Box::new(scorer)));
    }
    if let Some((label, f)) = guide {
        let (slot, what) = (slot.clone(), format!("the guide {label}"));
        let guide = ValueFn::new(move |prompt: &str, texts: &[&str], ended: &[bool]| {
            values(&f, &slot, &what, prompt, texts, ended)
        });
        out.guide = Some((label, Box::new(guide)));
    }
    Ok(out)
}

fn engine_err(slot: &Slot, e: EngineError) -> PyErr {
    to_py(slot, e.kind(), e.to_string())
}

/// The three models of a weak-to-strong search, loaded once, ready to search any prompt.
#[pyclass(module = "w2s._w2s")]
pub struct Searcher {
    /// The engine, then the replicas made for searches in flight (kept for later batches).
    engines: Mutex<Vec<Engine>>,
    run: RunSettings,
    slot: Slot,
    describe: String,
}

#[pymethods]
impl Searcher {
    #[new]
    #[pyo3(signature = (settings, parts))]
    fn new(py: Python<'_>, settings: &Bound<'_, PyDict>, parts: PyParts) -> PyResult<Self> {
        let slot = Slot::default();
        let mut run = run_settings(settings)?;
        let parts = custom_parts(parts, &slot)?;
        parts.name_in(&mut run).map_err(|e| engine_err(&slot, e))?;
        let run = run.merged().map_err(|e| engine_err(&slot, e))?;
        let checked = run.clone().check().map_err(|e| engine_err(&slot, e))?;
        let spec = checked.engine;
        let describe = format!(
            "strong={} tuned={} untuned={}",
            spec.strong.describe(),
            spec.tuned.describe(),
            spec.untuned.describe()
        );
        let engine = py
            .detach(|| parts.build(&spec))
            .map_err(|e| engine_err(&slot, e))?;
        Ok(Searcher {
            engines: Mutex::new(vec![engine]),
            run,
            slot,
            describe,
        })
    }

    /// Runs one search; returns its `Output`.
    #[pyo3(signature = (prompt, method, seed, trace=false))]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &str,
        method: &str,
        seed: u64,
        trace: bool,
    ) -> PyResult<Output> {
        let mut run = self.run.clone();
        run.method = Some(method.to_string());
        let config = run
            .method()
            .and_then(|m| run.search_config(m, seed))
            .map_err(|e| engine_err(&self.slot, e))?
            .with_trace(trace);
        let interrupt = w2s_core::Interrupt::new();
        let result = cancellable(py, |cancel| {
            let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
            let engine = &mut engines[0];
            interrupt.arm_cancel(cancel.clone());
            let request = SearchRequest {
                interrupt: Some(&interrupt),
                ..SearchRequest::new(&config, prompt)
            };
            engine.run(&request, &mut |_| !cancel.load(Ordering::SeqCst))
        })?;
        let out = result.map_err(|e| engine_err(&self.slot, e))?;
        Output::new(py, &out, prompt, method, seed)
    }

    /// Runs one search per prompt with `parallel` in flight (`None`: 1 with a local strong
    /// model, 8 with a remote one); returns their `Output`s in the prompts'
    /// order. `progress(n)` is called as each search finishes. `pooled`: with a local
    /// strong model, the searches in flight share one context of it, their rows sampled in
    /// one decode per token (`search_pooled`), instead of workers taking turns.
    #[pyo3(signature = (prompts, method, seed, parallel, progress, trace=false, pooled=false))]
    #[allow(clippy::too_many_arguments)]
    fn generate_batch(
        &self,
        py: Python<'_>,
        prompts: Vec<String>,
        method: &str,
        seed: u64,
        parallel: Option<usize>,
        progress: Option<Py<PyAny>>,
        trace: bool,
        pooled: bool,
    ) -> PyResult<Vec<Output>> {
        let mut run = self.run.clone();
        run.method = Some(method.to_string());
        let err = |e| engine_err(&self.slot, e);
        let config = run
            .method()
            .and_then(|m| run.search_config(m, seed))
            .map_err(err)?
            .with_trace(trace);
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        let n = parallel_for(engines[0].spec(), parallel)
            .map_err(err)?
            .min(prompts.len())
            .max(1);
        while engines.len() < n {
            let replica = engines[0].replica().map_err(err)?;
            engines.push(replica);
        }
        let workers = &mut engines[..n];
        let interrupt = w2s_core::Interrupt::new();
        let result = cancellable(py, |cancel| {
            interrupt.arm_cancel(cancel.clone());
            let mut outs: Vec<Option<SearchOutput>> = vec![None; prompts.len()];
            let mut failed = None;
            let mut on_result = |i: usize, out: Result<SearchOutput, EngineError>| match out {
                Ok(out) => {
                    outs[i] = Some(out);
                    if let Some(cb) = &progress {
                        Python::attach(|py| {
                            if let Err(e) = cb.call1(py, (1,)) {
                                e.print(py);
                            }
                        });
                    }
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            };
            if pooled && can_pool(&workers[0]) {
                // A local strong model: the searches in flight share one context of it,
                // their rows sampled in one decode per token.
                let jobs: Vec<_> = prompts
                    .iter()
                    .map(|p| (config.clone(), p.clone()))
                    .collect();
                let keep_going =
                    &mut |_: usize, _: &w2s_core::Progress<'_>| !cancel.load(Ordering::SeqCst);
                if let Err(e) =
                    search_pooled(workers, &jobs, Some(&interrupt), keep_going, &mut on_result)
                {
                    failed.get_or_insert(e);
                }
            } else {
                in_flight(
                    workers,
                    prompts.iter().enumerate(),
                    |engine, (i, prompt)| {
                        let keep_going =
                            &mut |_: &w2s_core::Progress<'_>| !cancel.load(Ordering::SeqCst);
                        let request = SearchRequest {
                            interrupt: Some(&interrupt),
                            ..SearchRequest::new(&config, prompt)
                        };
                        (i, engine.run(&request, keep_going))
                    },
                    |(i, out)| on_result(i, out),
                );
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(outs.into_iter().flatten().collect::<Vec<_>>()),
            }
        })?;
        let outs = result.map_err(err)?;
        prompts
            .iter()
            .zip(&outs)
            .map(|(prompt, out)| Output::new(py, out, prompt, method, seed))
            .collect()
    }

    /// Which model plays which role.
    fn __repr__(&self) -> String {
        format!("Searcher({})", self.describe)
    }
}

/// A small model on llama.cpp that scores responses: `score(prompt, texts, ended)` gives
/// log p(text | prompt through the template), the end token's term included where
/// `ended`, exactly as the search's local scorer computes it: a file in a weight type with
/// no fast CPU kernel (Q4_1, Q5_1) is read through its Q8_0 copy, as a search's guide is,
/// unless `keep_guide_weights`.
#[pyclass(module = "w2s._w2s")]
pub struct LocalScorer {
    scorer: Mutex<w2s_llama::LlamaScorer>,
    slot: Slot,
}

#[pymethods]
impl LocalScorer {
    #[new]
    #[pyo3(signature = (model, template=None, threads=None, gpu_layers=0, keep_guide_weights=false))]
    fn new(
        py: Python<'_>,
        model: &str,
        template: Option<&str>,
        threads: Option<usize>,
        gpu_layers: u32,
        keep_guide_weights: bool,
    ) -> PyResult<Self> {
        let slot = Slot::default();
        let template = match template {
            None => w2s_core::PromptTemplate::bare(),
            Some(t) => w2s_core::PromptTemplate::new(t)
                .map_err(|e| value_error(format!("template: {e}")))?,
        };
        if threads == Some(0) {
            return Err(value_error("threads must be at least 1"));
        }
        let threads =
            threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let path = w2s_llama::resolve_model(model);
        let options = w2s_llama::LoadOptions {
            gpu_layers,
            keep_guide_weights,
        };
        let loaded = py
            .detach(|| {
                w2s_llama::Model::load(&w2s_llama::guide_file(&path, options, threads), options)
            })
            .map_err(|e| {
                let e = BackendError::from(e);
                to_py(&slot, e.kind(), e.to_string())
            })?;
        Ok(LocalScorer {
            scorer: Mutex::new(w2s_llama::LlamaScorer::new(loaded, template, threads)),
            slot,
        })
    }

    /// Log-probabilities of each text as a response to `prompt`.
    fn score(
        &self,
        py: Python<'_>,
        prompt: &str,
        texts: Vec<String>,
        ended: Vec<bool>,
    ) -> PyResult<Vec<f64>> {
        if texts.len() != ended.len() {
            return Err(value_error(format!(
                "{} texts but {} ended flags",
                texts.len(),
                ended.len()
            )));
        }
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let got = py.detach(|| {
            let mut s = self.scorer.lock().unwrap_or_else(|p| p.into_inner());
            let longest = texts
                .iter()
                .map(|t| s.model().tokenize_response(t).len())
                .max()
                .unwrap_or(0);
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            w2s_core::score_texts(&mut *s, prompt, &texts, &ended, longest + 1)
        });
        got.map_err(|e| to_py(&self.slot, e.kind(), e.to_string()))
    }
}

/// Runs an evaluation (see `w2s.evaluate`); returns the summary as JSON text.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (settings, parts, golds, prompts, prompts_source, methods, seeds, task, builtin_golds, judge, reference, out, force, command, parallel=None))]
pub fn evaluate(
    py: Python<'_>,
    settings: &Bound<'_, PyDict>,
    parts: PyParts,
    golds: Vec<(String, Py<PyAny>)>,
    prompts: Vec<(String, String)>,
    prompts_source: String,
    methods: &str,
    seeds: Vec<u64>,
    task: &str,
    builtin_golds: Option<Vec<String>>,
    judge: Option<String>,
    reference: Option<String>,
    out: PathBuf,
    force: bool,
    command: String,
    parallel: Option<usize>,
) -> PyResult<String> {
    let run = run_settings(settings)?;
    let slot = Slot::default();
    let eval_err = |slot: &Slot, e: w2s_eval::EvalError| to_py(slot, e.kind(), e.to_string());
    let task = match task {
        "sentiment" => w2s_eval::Task::Sentiment,
        "instruct" => w2s_eval::Task::Instruct,
        other => {
            return Err(value_error(format!(
                "task must be 'sentiment' or 'instruct', not '{other}'"
            )))
        }
    };
    let methods = w2s_eval::parse_methods(methods).map_err(|e| eval_err(&slot, e))?;
    let builtin = match builtin_golds {
        Some(g) => w2s_eval::parse_golds(&g.join(",")).map_err(|e| eval_err(&slot, e))?,
        None if golds.is_empty() => task.default_golds(),
        None => Vec::new(),
    };
    let prompts = prompts
        .into_iter()
        .map(|(id, prompt)| w2s_eval::PromptItem { id, prompt })
        .collect();
    let parts = custom_parts(parts, &slot)?;
    let golds: Vec<Box<dyn w2s_core::GoldReward + Send>> = golds
        .into_iter()
        .map(|(name, f)| Box::new(PyGold::new(f, name, slot.clone())) as _)
        .collect();
    let spec = w2s_eval::EvalSpec {
        task,
        run,
        prompts,
        prompts_source,
        methods,
        seeds,
        golds: builtin,
        judge: judge.unwrap_or_else(|| w2s_eval::DEFAULT_JUDGE.into()),
        reference,
        out,
        force,
        command,
        parallel,
    };
    let result = cancellable(py, move |cancel| {
        let plugins = w2s_eval::Plugins {
            parts,
            golds,
            cancel: Some(cancel),
            events: Some(Box::new(w2s_eval::print_to_stderr)),
        };
        w2s_eval::evaluate_with(spec, plugins)
    })?;
    let summary = result.map_err(|e| eval_err(&slot, e))?;
    Ok(w2s_eval::to_json(&summary).to_string())
}

/// Redraws the report of an evaluation directory from its results; the summary as JSON.
#[pyfunction]
pub fn report(py: Python<'_>, out: PathBuf) -> PyResult<String> {
    let slot = Slot::default();
    let summary = py
        .detach(|| w2s_eval::report(&out))
        .map_err(|e| to_py(&slot, e.kind(), e.to_string()))?;
    Ok(w2s_eval::to_json(&summary).to_string())
}

/// Writes a copy of the GGUF model `input` at `output` with its weights in `to` (`q8_0`,
/// `q4_0` or `f16`), as `w2s quantize` does.
#[pyfunction]
pub fn quantize(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    to: &str,
    threads: usize,
) -> PyResult<()> {
    let to = w2s_llama::WeightType::parse(to).map_err(value_error)?;
    if output.exists() {
        return Err(value_error(format!(
            "{} already exists; name a new file",
            output.display()
        )));
    }
    let slot = Slot::default();
    py.detach(|| w2s_llama::requantize(&input, &output, to, threads.max(1)))
        .map_err(|e| to_py(&slot, e.kind(), e.to_string()))
}

/// A model argument as every w2s front end resolves it: a fetched name means
/// `$W2S_MODELS/NAME.gguf` (default `~/.cache/w2s/models`), anything else is a path.
#[pyfunction]
pub fn resolve_model(spec: &str) -> PathBuf {
    w2s_llama::resolve_model(spec)
}

/// Draws the trace file `trace` (JSON lines as `w2s generate --trace` writes them) into
/// the page `html`, with every candidate scored by `gold` ("vader") if given; returns the
/// number of candidates drawn.
#[pyfunction]
#[pyo3(signature = (trace, html, gold=None))]
pub fn trace_html(trace: PathBuf, html: PathBuf, gold: Option<&str>) -> PyResult<usize> {
    w2s_eval::draw_traces(&trace, &html, gold)
        .map_err(|e| to_py(&Slot::default(), e.kind(), e.to_string()))
}

/// Checks candidate guide pairs against the gold of the run directory `run` (see
/// `w2s guide-check`); returns {run, gold, candidates} as JSON text.
#[pyfunction]
#[pyo3(signature = (run, pairs, configs, gold=None, bins=5, threads=None))]
pub fn guide_check(
    py: Python<'_>,
    run: PathBuf,
    pairs: Vec<Bound<'_, PyDict>>,
    configs: Vec<PathBuf>,
    gold: Option<String>,
    bins: usize,
    threads: Option<usize>,
) -> PyResult<String> {
    let fail = |e: w2s_eval::EvalError| to_py(&Slot::default(), e.kind(), e.to_string());
    let tables = pairs
        .iter()
        .map(guide_table)
        .collect::<PyResult<Vec<_>>>()?;
    let candidates = w2s_eval::guide_candidates(&tables, &configs).map_err(fail)?;
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let found = py
        .detach(|| {
            w2s_eval::guide_check_run(
                &run,
                gold.as_deref(),
                &candidates,
                threads,
                bins,
                &mut |_, _, _| {},
            )
        })
        .map_err(fail)?;
    Ok(serde_json::json!({"run": run, "gold": found.gold, "candidates": found.checks}).to_string())
}
