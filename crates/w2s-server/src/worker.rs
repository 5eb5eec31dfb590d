//! The model worker: one dedicated thread owns the llama.cpp contexts and runs searches
//! one at a time in arrival order (fair FIFO). The async side never runs a forward pass.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use w2s_core::{
    search_with_progress, Method, SamplingParams, SearchConfig, SearchError, SearchOutput,
};
use w2s_llama::{
    EchoToken, LlamaError, LocalModels, LocalSpec, Model, PlainChoice, PlainModel, PlainSampling,
};

use crate::api::{CheckedRequest, PlainRequest};
use crate::metrics::Metrics;

/// What the worker tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// The text all kept beams share: it can no longer change.
    Settled(String),
    /// The work ended.
    Done(Result<Outcome, Failure>),
}

/// What a job produced.
#[derive(Debug)]
pub enum Outcome {
    /// A search's result.
    Search(Finished),
    /// Plain samples of a model.
    Samples {
        /// One per continuation.
        choices: Vec<PlainChoice>,
        /// Prompt tokens.
        prompt_tokens: usize,
    },
    /// An echoed text with per-token log-probabilities.
    Echo {
        /// Prompt + sampled text.
        text: String,
        /// Its tokens.
        tokens: Vec<EchoToken>,
        /// Prompt tokens.
        prompt_tokens: usize,
    },
}

/// The work of a job.
#[derive(Debug, Clone)]
pub enum Work {
    /// A weak-to-strong search.
    Search(CheckedRequest),
    /// A plain request to one model.
    Plain(PlainRequest),
}

/// A finished search.
#[derive(Debug)]
pub struct Finished {
    /// The search's result.
    pub output: SearchOutput,
    /// Strong-model prompt tokens.
    pub prompt_tokens: usize,
}

/// Why a search produced no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The client went away.
    Cancelled,
    /// The per-request deadline passed.
    Deadline,
    /// Bad input found by the backend (e.g. prompt too long for a model).
    Input(String),
    /// The backend failed.
    Internal(String),
    /// The search panicked; the request fails, the server goes on.
    Panic,
}

/// One search to run.
pub struct Job {
    /// The work.
    pub work: Work,
    /// Where events go.
    pub events: tokio::sync::mpsc::UnboundedSender<Event>,
    /// Set when the client disconnects.
    pub cancel: Arc<AtomicBool>,
    /// When the request must be done.
    pub deadline: Instant,
}

/// Health facts the worker keeps up to date.
#[derive(Debug, Default)]
pub struct WorkerState {
    /// Models loaded and warmed up.
    pub ready: AtomicBool,
    /// The worker thread is gone.
    pub dead: AtomicBool,
    /// When the running search last made progress (None when idle).
    pub busy_since_progress: Mutex<Option<Instant>>,
}

impl WorkerState {
    fn touch(&self, busy: bool) {
        let mut t = self
            .busy_since_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *t = busy.then(Instant::now);
    }

    /// How long the running search has gone without progress.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.busy_since_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }
}

/// The loaded models, for checks before a request is queued.
#[derive(Clone)]
pub struct ModelInfo {
    /// (model, template) of strong, tuned, untuned.
    pub roles: Vec<(Arc<Model>, w2s_core::PromptTemplate)>,
}

impl ModelInfo {
    /// Checks that prompt + max_tokens fit every model's context. CPU work: call from a
    /// blocking thread.
    pub fn check_prompt(&self, prompt: &str, max_tokens: usize) -> Result<usize, String> {
        let mut strong_tokens = 0;
        for (i, (model, template)) in self.roles.iter().enumerate() {
            let filled = template.fill(prompt).map_err(|e| e.to_string())?;
            let text = model.render(&filled).map_err(|e| e.to_string())?;
            let n = model.tokenize_prompt(&text).len();
            if n + max_tokens > model.n_ctx_train() as usize {
                return Err(format!(
                    "the prompt is {n} tokens for the {} model; with max_tokens {max_tokens} that exceeds its context of {} tokens",
                    ["strong", "tuned", "untuned"][i],
                    model.n_ctx_train()
                ));
            }
            if i == 0 {
                strong_tokens = n;
            }
        }
        Ok(strong_tokens)
    }
}

/// Starts the worker thread, which loads the models, publishes them in `info`, warms
/// them up (then `state.ready` is set) and serves jobs. Load failures arrive on the
/// returned channel.
pub fn start(
    spec: LocalSpec,
    jobs: Receiver<Job>,
    state: Arc<WorkerState>,
    metrics: Arc<Metrics>,
    info: Arc<std::sync::OnceLock<ModelInfo>>,
) -> Result<Receiver<Result<(), String>>, String> {
    let (loaded_tx, loaded_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    std::thread::Builder::new()
        .name("w2s-model-worker".into())
        .spawn(move || worker_main(spec, jobs, state, metrics, info, loaded_tx))
        .map_err(|e| format!("could not start the model worker thread: {e}"))?;
    Ok(loaded_rx)
}

fn worker_main(
    spec: LocalSpec,
    jobs: Receiver<Job>,
    state: Arc<WorkerState>,
    metrics: Arc<Metrics>,
    info: Arc<std::sync::OnceLock<ModelInfo>>,
    loaded: SyncSender<Result<(), String>>,
) {
    let mut models = match LocalModels::load(&spec) {
        Ok(m) => m,
        Err(e) => {
            state.dead.store(true, Ordering::SeqCst);
            let _ = loaded.send(Err(e.to_string()));
            return;
        }
    };
    let _ = info.set(ModelInfo {
        roles: vec![
            (models.strong.model().clone(), spec.strong_template.clone()),
            (models.tuned.model().clone(), spec.tuned_template.clone()),
            (
                models.untuned.model().clone(),
                spec.untuned_template.clone(),
            ),
        ],
    });
    // Warm-up: one tiny search touches every model's weights and code paths.
    let warm = SearchConfig::new(
        Method::Cbs { w: 1, k: 2, l: 2 },
        4,
        1.0,
        1,
        SamplingParams::default(),
        vec![],
    );
    match warm.map(|c| models.search(&c, "Hello")) {
        Ok(Ok(_)) => {
            state.ready.store(true, Ordering::SeqCst);
            let _ = loaded.send(Ok(()));
        }
        other => {
            state.dead.store(true, Ordering::SeqCst);
            let _ = loaded.send(Err(format!("warm-up search failed: {other:?}")));
            return;
        }
    }
    let mut plain: Vec<Option<PlainModel>> = vec![None, None, None];
    for job in jobs {
        metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
        if job.cancel.load(Ordering::SeqCst) {
            let _ = job.events.send(Event::Done(Err(Failure::Cancelled)));
            continue;
        }
        metrics.in_flight_searches.fetch_add(1, Ordering::SeqCst);
        state.touch(true);
        let result = match &job.work {
            Work::Search(req) => run_search(&mut models, req, &job, &state).map(Outcome::Search),
            Work::Plain(req) => {
                let model = match req.role {
                    0 => models.strong.model().clone(),
                    1 => models.tuned.model().clone(),
                    _ => models.untuned.model().clone(),
                };
                let slot = &mut plain[req.role.min(2)];
                let pm = slot.get_or_insert_with(|| PlainModel::new(model, spec.threads));
                run_plain(pm, req)
            }
        };
        state.touch(false);
        metrics.in_flight_searches.fetch_sub(1, Ordering::SeqCst);
        if let Ok(Outcome::Search(f)) = &result {
            let s = &f.output.stats;
            metrics.search_done(
                s.strong_tokens_sampled as u64,
                s.strong_time,
                s.tuned_tokens_evaluated + s.untuned_tokens_evaluated,
                s.tuned_time + s.untuned_time,
            );
        }
        if result.as_ref().err() == Some(&Failure::Panic) {
            // Contexts may be half-updated: start them afresh.
            models.release_contexts();
            plain = vec![None, None, None];
        }
        let _ = job.events.send(Event::Done(result));
    }
}

fn run_plain(pm: &mut PlainModel, req: &PlainRequest) -> Result<Outcome, Failure> {
    let prompt_tokens = pm.model().tokenize_prompt(&req.prompt).len();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if req.echo {
            pm.echo(&req.prompt, req.max_tokens, &req.sampling, req.seed)
                .map(|(text, tokens)| Outcome::Echo {
                    text,
                    tokens,
                    prompt_tokens,
                })
                .map_err(|e| e.to_string())
        } else {
            let s = PlainSampling {
                n: req.n,
                max_tokens: req.max_tokens,
                sampling: req.sampling,
                stop: req.stop.clone(),
                seed: req.seed,
                with_tokens: req.logprobs,
            };
            pm.sample(&req.prompt, &s)
                .map(|choices| Outcome::Samples {
                    choices,
                    prompt_tokens,
                })
                .map_err(|e| e.to_string())
        }
    }));
    match outcome {
        Err(_) => Err(Failure::Panic),
        Ok(Ok(o)) => Ok(o),
        Ok(Err(m)) if m.contains("exceeds its context") || m.contains("prompt is empty") => {
            Err(Failure::Input(m))
        }
        Ok(Err(m)) => {
            tracing::error!(%m, "plain request failed");
            Err(Failure::Internal("the model failed".into()))
        }
    }
}

fn run_search(
    models: &mut LocalModels,
    req: &CheckedRequest,
    job: &Job,
    state: &WorkerState,
) -> Result<Finished, Failure> {
    let mut sent = 0usize;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        search_with_progress(&req.config, &req.prompt, models.models(), &mut |p| {
            state.touch(true);
            if p.settled_text.len() > sent {
                sent = p.settled_text.len();
                let _ = job.events.send(Event::Settled(p.settled_text.to_string()));
            }
            !job.cancel.load(Ordering::SeqCst) && Instant::now() < job.deadline
        })
    }));
    match outcome {
        Err(_) => Err(Failure::Panic),
        Ok(Ok(output)) => Ok(Finished {
            output,
            prompt_tokens: models.strong.last_prompt_tokens(),
        }),
        Ok(Err(SearchError::Cancelled)) if job.cancel.load(Ordering::SeqCst) => {
            Err(Failure::Cancelled)
        }
        Ok(Err(SearchError::Cancelled)) => Err(Failure::Deadline),
        Ok(Err(e @ SearchError::Config(_))) => Err(Failure::Input(e.to_string())),
        Ok(Err(SearchError::Backend { role, source })) => match source.downcast_ref::<LlamaError>()
        {
            Some(LlamaError::PromptTooLong { .. }) | Some(LlamaError::Config(_)) => {
                Err(Failure::Input(format!("{role} model: {source}")))
            }
            _ => Err(Failure::Internal(format!("{role} model failed"))),
        },
        Ok(Err(e)) => {
            tracing::error!(%e, "search failed");
            Err(Failure::Internal("the search failed".into()))
        }
    }
}

/// A bounded sender of jobs (the bound is admission's; this only counts the queue).
pub struct JobQueue {
    tx: Mutex<std::sync::mpsc::Sender<Job>>,
    metrics: Arc<Metrics>,
}

impl JobQueue {
    /// Wraps the worker's channel.
    pub fn new(tx: std::sync::mpsc::Sender<Job>, metrics: Arc<Metrics>) -> Self {
        JobQueue {
            tx: Mutex::new(tx),
            metrics,
        }
    }

    /// Queues a job; false if the worker is gone.
    pub fn push(&self, job: Job) -> bool {
        self.metrics.queue_depth.fetch_add(1, Ordering::SeqCst);
        let ok = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .is_ok();
        if !ok {
            self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
        }
        ok
    }
}
