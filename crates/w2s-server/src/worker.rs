//! The model workers: `parallel` dedicated threads, each owning an [`Engine`] on the same
//! loaded models (its own llama.cpp contexts and remote clients), take jobs from one queue
//! in arrival order (FIFO) and run them to the end. Local forward passes take turns on the
//! CPU through the engines' shared compute gate, so several searches in flight overlap
//! only where one waits on a remote engine. The async side never runs a forward pass or
//! blocks on a remote engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use w2s_core::{Interrupt, Method, SamplingParams, SearchConfig, SearchOutput};
use w2s_engine::{
    can_pool, Engine, EngineSpec, LocalModels, PromptCheck, PromptTokens, SearchPool, ROLES,
};
use w2s_llama::{EchoToken, Model, PlainChoice, PlainModel};

use crate::api::{CheckedRequest, PlainRequest};
use crate::metrics::Metrics;

mod client;
mod pooled;
mod run;
pub use client::Reason;
use run::{run_search, shrink_plain, PlainRun};

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
    /// A weak-to-strong search of one of a request's prompts.
    Search(SearchWork),
    /// A plain request to one model.
    Plain(PlainRequest),
}

/// One search of a request: the request and which of its prompts.
#[derive(Debug, Clone)]
pub struct SearchWork {
    /// The checked request.
    pub req: Arc<CheckedRequest>,
    /// Index into `req.prompts`.
    pub index: usize,
}

/// A choice's tokens with the strong model's log-probability of each.
pub type TokenLogprobs = Vec<(String, f64)>;

/// A finished search.
#[derive(Debug)]
pub struct Finished {
    /// The search's result.
    pub output: SearchOutput,
    /// Strong-model prompt tokens (0 where the strong model is remote: the engine
    /// tokenises the prompt).
    pub prompt_tokens: usize,
    /// When asked for: the strong model's (token, log-probability) of each returned
    /// choice, or why they could not be had.
    pub strong_logprobs: Option<Result<Vec<TokenLogprobs>, String>>,
}

/// Why a search produced no answer.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The client went away.
    Cancelled,
    /// The per-request deadline passed.
    Deadline,
    /// Bad input found by the backend (e.g. prompt too long for a model).
    Input(Reason),
    /// A remote engine failed or could not be reached.
    Upstream(Reason),
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

/// Health facts the workers keep up to date.
#[derive(Debug, Default)]
pub struct WorkerState {
    /// Models loaded and warmed up.
    pub ready: AtomicBool,
    /// The workers are gone.
    pub dead: AtomicBool,
    /// Per worker: whether it runs a job, and the interrupt its local models beat on
    /// each piece of work (each selection of a search, each micro-batch of a prompt).
    slots: Mutex<Vec<(bool, Arc<Interrupt>)>>,
}

impl WorkerState {
    fn slot(&self, slot: usize) -> Arc<Interrupt> {
        let mut t = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        while t.len() <= slot {
            t.push((false, Interrupt::new()));
        }
        t[slot].1.clone()
    }

    fn set_busy(&self, slot: usize, busy: bool) {
        let interrupt = self.slot(slot);
        interrupt.beat();
        self.slots.lock().unwrap_or_else(|p| p.into_inner())[slot].0 = busy;
    }

    /// Marks `slot` busy with `interrupt` (a pooled search's own) as the one it beats.
    fn run_in(&self, slot: usize, interrupt: Arc<Interrupt>) {
        interrupt.beat();
        let mut t = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        while t.len() <= slot {
            t.push((false, Interrupt::new()));
        }
        t[slot] = (true, interrupt);
    }

    /// The longest any running job has gone without progress: a long job that beats is
    /// not stalled, only one that stops beating.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(busy, _)| *busy)
            .filter_map(|(_, i)| i.last_beat())
            .map(|t| t.elapsed())
            .max()
    }
}

/// The built models, for checks before a request is queued.
#[derive(Clone)]
pub struct ModelInfo {
    /// Prompt-length checks against every local model.
    pub check: PromptCheck,
    /// The local model of each role (strong, tuned, untuned), for plain requests; `None`
    /// for a remote role.
    pub plain: Vec<Option<Arc<Model>>>,
    /// Each local model file's path and the roles it plays ("tuned and untuned"), kept out
    /// of client messages.
    pub paths: Vec<(String, String)>,
}

impl ModelInfo {
    /// Checks that prompt + max_tokens fit every local model's context; returns the
    /// strong model's prompt tokens where it is local. CPU work: call from a blocking
    /// thread.
    /// A chat request (`chat`) is rendered as the search will render it: roles with no
    /// template given read it through their model's own chat template.
    pub fn check_prompt(
        &self,
        history: &[w2s_core::ChatTurn],
        prompt: &str,
        max_tokens: usize,
        chat: bool,
    ) -> Result<PromptTokens, String> {
        self.check
            .check_turns(history, prompt, max_tokens, chat)
            .map_err(|e| self.client_error(&e))
    }
}

/// What every worker thread shares.
struct Shared {
    /// Idle workers: a job goes to the idle worker with the lowest number, so that a light
    /// load keeps coming back to the same workers and their warm contexts (with one client,
    /// always worker 0, which measured faster than a replica's thread).
    idle: Mutex<Vec<usize>>,
    idle_changed: std::sync::Condvar,
    /// Jobs taken so far: a job's number is its rank at the compute gate.
    taken: std::sync::atomic::AtomicU64,
    state: Arc<WorkerState>,
    metrics: Arc<Metrics>,
    threads: usize,
    /// Contexts over this many tokens are freed after their job.
    shrink_above: usize,
}

/// Starts the first worker thread, which loads the models, publishes them in `info`,
/// warms them up, starts the other `parallel - 1` workers on replicas of its engine (then
/// `state.ready` is set) and serves jobs. Load failures arrive on the returned channel.
pub fn start(
    spec: EngineSpec,
    (parallel, pooled): (usize, bool),
    shrink_above: usize,
    jobs: Receiver<Job>,
    state: Arc<WorkerState>,
    metrics: Arc<Metrics>,
    info: Arc<std::sync::OnceLock<ModelInfo>>,
) -> Result<Receiver<Result<(), String>>, String> {
    let (loaded_tx, loaded_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    let shared = Arc::new(Shared {
        idle: Mutex::new(Vec::new()),
        idle_changed: std::sync::Condvar::new(),
        taken: std::sync::atomic::AtomicU64::new(0),
        state,
        metrics,
        threads: spec.threads,
        shrink_above,
    });
    std::thread::Builder::new()
        .name("w2s-model-worker-0".into())
        .spawn(move || {
            let parallel = parallel.max(1);
            worker_main(spec, (parallel, pooled), jobs, shared, info, loaded_tx)
        })
        .map_err(|e| format!("could not start the model worker thread: {e}"))?;
    Ok(loaded_rx)
}

fn worker_main(
    spec: EngineSpec,
    (parallel, pooled): (usize, bool),
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
    info: Arc<std::sync::OnceLock<ModelInfo>>,
    loaded: SyncSender<Result<(), String>>,
) {
    let state = shared.state.clone();
    let started = Engine::build(&spec)
        .map_err(|e| e.to_string())
        .and_then(|mut models| {
            let _ = info.set(model_info(&models));
            if pooled && !can_pool(&models) {
                return Err("--pooled needs a local strong model guided by the tuned / untuned pair alone (no remote strong model, no custom guide, no more pairs); drop --pooled to run a worker per search".into());
            }
            warm_up(&mut models)?;
            if pooled {
                models.release_contexts();
                let pool = SearchPool::new(models, parallel).map_err(|e| e.to_string())?;
                return Ok(Serve::Pooled(Box::new(pool), jobs));
            }
            let own = start_workers(&models, parallel, jobs, &shared)?;
            Ok(Serve::Workers(Box::new(models), own))
        });
    let serve = match started {
        Ok(started) => started,
        Err(e) => {
            state.dead.store(true, Ordering::SeqCst);
            let _ = loaded.send(Err(e));
            return;
        }
    };
    state.ready.store(true, Ordering::SeqCst);
    let _ = loaded.send(Ok(()));
    match serve {
        Serve::Workers(models, Some(rx)) => serve_jobs(0, *models, rx, &shared),
        Serve::Workers(_, None) => {}
        Serve::Pooled(pool, jobs) => pooled::serve_pooled(*pool, jobs, &shared),
    }
}

/// How the first worker thread serves once the models are loaded.
enum Serve {
    /// As worker 0 of several, each with contexts of its own (its inbox, if any).
    Workers(Box<Engine>, Option<Receiver<Job>>),
    /// Every search on one pool.
    Pooled(Box<SearchPool>, Receiver<Job>),
}

/// What the request handlers need to know of the loaded models.
fn model_info(models: &Engine) -> ModelInfo {
    ModelInfo {
        check: models.prompt_check(),
        plain: ROLES
            .iter()
            .map(|r| models.local_model(*r).cloned())
            .collect(),
        paths: model_paths(models),
    }
}

/// Each local model file with the roles it plays ("strong, tuned and untuned").
fn model_paths(models: &Engine) -> Vec<(String, String)> {
    let mut paths: Vec<(String, Vec<String>)> = Vec::new();
    for r in ROLES {
        let Some(m) = models.local_model(r) else {
            continue;
        };
        let path = m.path().display().to_string();
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, roles)) => roles.push(r.to_string()),
            None => paths.push((path, vec![r.to_string()])),
        }
    }
    paths
        .into_iter()
        .map(|(p, roles)| match roles.split_last() {
            Some((last, rest)) if !rest.is_empty() => {
                (p, format!("{} and {last}", rest.join(", ")))
            }
            _ => (p, roles.concat()),
        })
        .collect()
}

/// Warm-up: one tiny search touches every model's weights and code paths (and checks
/// that remote engines answer).
fn warm_up(models: &mut Engine) -> Result<(), String> {
    let warm = SearchConfig::new(
        Method::Cbs { w: 1, k: 2, l: 2 },
        4,
        1.0,
        1,
        SamplingParams::default(),
        vec![],
    );
    let warmed = match warm {
        Ok(c) => models.search(&c, "Hello").map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    warmed
        .map(|_| ())
        .map_err(|e| format!("warm-up search failed: {e}"))
}

/// Starts a model worker on a replica for each slot but the first, and the dispatcher
/// that hands jobs to idle slots; returns the first slot's inbox, which the calling
/// thread serves with the original models.
fn start_workers(
    models: &Engine,
    parallel: usize,
    jobs: Receiver<Job>,
    shared: &Arc<Shared>,
) -> Result<Option<Receiver<Job>>, String> {
    let (mut inboxes, mut own) = (Vec::with_capacity(parallel), None);
    for slot in 0..parallel {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        inboxes.push(tx);
        if slot == 0 {
            own = Some(rx);
            continue;
        }
        models.replica().map_err(|e| e.to_string()).and_then(|m| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("w2s-model-worker-{slot}"))
                .spawn(move || serve_jobs(slot, m, rx, &shared))
                .map(|_| ())
                .map_err(|e| format!("could not start model worker {slot}: {e}"))
        })?;
    }
    let dispatcher = shared.clone();
    std::thread::Builder::new()
        .name("w2s-dispatch".into())
        .spawn(move || dispatch(jobs, inboxes, &dispatcher))
        .map_err(|e| format!("could not start the job dispatcher: {e}"))?;
    Ok(own)
}

/// Hands each job, in arrival order, to the idle worker with the lowest number.
fn dispatch(jobs: Receiver<Job>, inboxes: Vec<std::sync::mpsc::Sender<Job>>, shared: &Shared) {
    for job in jobs {
        let mut idle = shared.idle.lock().unwrap_or_else(|p| p.into_inner());
        let slot = loop {
            let lowest = idle
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| **s)
                .map(|(i, _)| i);
            match lowest.map(|i| idle.swap_remove(i)) {
                Some(s) => break s,
                None => {
                    idle = shared
                        .idle_changed
                        .wait(idle)
                        .unwrap_or_else(|p| p.into_inner())
                }
            }
        };
        drop(idle);
        if inboxes[slot].send(job).is_err() {
            return;
        }
    }
}

/// One worker's loop: says it is idle, runs the job it is handed, until its inbox closes.
fn serve_jobs(slot: usize, mut models: Engine, inbox: Receiver<Job>, shared: &Shared) {
    let (state, metrics) = (&shared.state, &shared.metrics);
    let gate = models.gate();
    let interrupt = state.slot(slot);
    let mut plain: Vec<Option<PlainModel>> = vec![None, None, None];
    let ready = || {
        shared
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
        shared.idle_changed.notify_one();
    };
    ready();
    loop {
        let Ok(job) = inbox.recv() else { return };
        metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
        let rank = shared.taken.fetch_add(1, Ordering::SeqCst);
        if job.cancel.load(Ordering::SeqCst) {
            ready();
            let _ = job.events.send(Event::Done(Err(Failure::Cancelled)));
            continue;
        }
        metrics.in_flight_searches.fetch_add(1, Ordering::SeqCst);
        state.set_busy(slot, true);
        interrupt.arm(job.cancel.clone(), job.deadline);
        let result = match &job.work {
            Work::Search(w) => {
                run_search(&mut models, w, &job, (rank, &interrupt)).map(Outcome::Search)
            }
            Work::Plain(req) => {
                let run = PlainRun {
                    threads: shared.threads,
                    interrupt: &interrupt,
                };
                run.run(&models, &mut plain, req, Some((&gate, rank)))
            }
        };
        interrupt.disarm();
        state.set_busy(slot, false);
        metrics.in_flight_searches.fetch_sub(1, Ordering::SeqCst);
        // A context grown for a long request is given back rather than kept.
        let mut freed = models.shrink_contexts(shared.shrink_above);
        freed |= shrink_plain(&mut plain, shared.shrink_above);
        if freed {
            give_back_freed_memory();
        }
        count_work(metrics, &result);
        if matches!(result, Err(Failure::Panic)) {
            // Contexts may be half-updated: start them afresh.
            models.release_contexts();
            plain = vec![None, None, None];
        }
        // Idle again before the answer leaves, so that the client's next request can come
        // back to this worker and its warm contexts.
        ready();
        let _ = job.events.send(Event::Done(result));
    }
}

/// Adds a finished search's work to the throughput metrics.
fn count_work(metrics: &Metrics, result: &Result<Outcome, Failure>) {
    if let Ok(Outcome::Search(f)) = result {
        let s = &f.output.stats;
        metrics.search_done(
            s.strong_tokens_sampled as u64,
            s.strong_time,
            s.tuned_tokens_evaluated + s.untuned_tokens_evaluated,
            s.tuned_time + s.untuned_time,
        );
    }
}

/// Returns freed heap pages to the system (glibc keeps them otherwise).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
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
