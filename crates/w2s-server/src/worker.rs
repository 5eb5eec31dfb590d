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
use w2s_engine::{Engine, EngineSpec, LocalModels, PromptCheck, PromptTokens, ROLES};
use w2s_llama::{EchoToken, LlamaError, Model, PlainChoice, PlainModel};

use crate::api::{CheckedRequest, PlainRequest};
use crate::metrics::Metrics;

mod run;
use run::{run_plain, run_search};

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
#[derive(Debug, Clone, PartialEq)]
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

/// The typed error behind a failure, rendered for the client where it is answered
/// ([`ModelInfo::client_error`]).
#[derive(Debug, Clone)]
pub struct Reason(pub Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Reason {
    /// `e` on its way to a client.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Reason(Arc::new(e))
    }
}

impl From<String> for Reason {
    fn from(message: String) -> Self {
        let e: Box<dyn std::error::Error + Send + Sync> = message.into();
        Reason(e.into())
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
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

    /// An error as a client may see it: the model files are named by the roles they play,
    /// and a llama.cpp limit says which request fields to change.
    pub fn client_error(&self, e: &(dyn std::error::Error + 'static)) -> String {
        self.client_error_naming(e, &|path| self.model_name(path))
    }

    /// [`ModelInfo::client_error`] with the model files named by `name`.
    pub fn client_error_naming(
        &self,
        e: &(dyn std::error::Error + 'static),
        name: &dyn Fn(&str) -> String,
    ) -> String {
        self.scrub_paths(request_words(e, name))
    }

    /// `text` with each model file's path replaced by the roles it plays.
    pub fn scrub_paths(&self, mut text: String) -> String {
        for (path, roles) in &self.paths {
            text = text.replace(path.as_str(), &format!("the {roles} model"));
        }
        text
    }

    fn model_name(&self, path: &str) -> String {
        match self.paths.iter().find(|(p, _)| p == path) {
            Some((_, roles)) => format!("the {roles} model"),
            None => path.to_string(),
        }
    }
}

/// `e`'s text with a llama.cpp limit inside it said in the request's words.
fn request_words(e: &(dyn std::error::Error + 'static), name: &dyn Fn(&str) -> String) -> String {
    let mut text = e.to_string();
    let mut at = Some(e);
    while let Some(err) = at {
        if let Some(own) = llama_error(err).and_then(|l| llama_client_text(l, name)) {
            let inner = err.to_string();
            text = if text.contains(&inner) {
                text.replace(&inner, &own)
            } else {
                own
            };
            break;
        }
        at = err.source();
    }
    text
}

/// The llama.cpp error in `err`, where it is one (directly or inside a backend error).
fn llama_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a LlamaError> {
    err.downcast_ref::<LlamaError>().or_else(|| {
        err.downcast_ref::<w2s_core::BackendError>()
            .and_then(|b| b.get_ref().downcast_ref::<LlamaError>())
    })
}

/// A llama.cpp limit in the request's words (`max_tokens`, `search.w * search.k`, `n`)
/// instead of the command line's; `None` for an error that names no setting.
fn llama_client_text(e: &LlamaError, name: &dyn Fn(&str) -> String) -> Option<String> {
    Some(match e {
        LlamaError::PromptTooLong {
            path,
            prompt_tokens,
            max_new,
            n_ctx_train,
        } => format!(
            "the prompt is {prompt_tokens} tokens for {}; with max_tokens {max_new} that \
             exceeds its context of {n_ctx_train} tokens: shorten the prompt or lower max_tokens",
            name(&path.display().to_string())
        ),
        LlamaError::Context { path, n_ctx } => format!(
            "llama.cpp could not create a context of {n_ctx} tokens for {}: out of memory? \
             lower W*K or max_tokens",
            name(&path.display().to_string())
        ),
        LlamaError::TooManyRows { rows, max } => format!(
            "{rows} rows is more than the llama.cpp backend's limit of {max}; lower \
             search.w * search.k or n"
        ),
        _ => return None,
    })
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
    parallel: usize,
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
        .spawn(move || worker_main(spec, parallel.max(1), jobs, shared, info, loaded_tx))
        .map_err(|e| format!("could not start the model worker thread: {e}"))?;
    Ok(loaded_rx)
}

fn worker_main(
    spec: EngineSpec,
    parallel: usize,
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
            warm_up(&mut models)?;
            let own = start_workers(&models, parallel, jobs, &shared)?;
            Ok((models, own))
        });
    let (models, own) = match started {
        Ok(started) => started,
        Err(e) => {
            state.dead.store(true, Ordering::SeqCst);
            let _ = loaded.send(Err(e));
            return;
        }
    };
    state.ready.store(true, Ordering::SeqCst);
    let _ = loaded.send(Ok(()));
    if let Some(rx) = own {
        serve_jobs(0, models, rx, &shared);
    }
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
            Work::Plain(req) => match models.local_model(ROLES[req.role.min(2)]) {
                Some(model) => {
                    let model = model.clone();
                    let pm = plain[req.role.min(2)].get_or_insert_with(|| {
                        let mut pm = PlainModel::new(model, shared.threads);
                        pm.set_interrupt(Some(interrupt.clone()));
                        pm
                    });
                    let _cpu = gate.hold(rank);
                    run_plain(pm, req)
                }
                None => Err(Failure::Input(
                    format!(
                        "the {} model runs on a remote engine; send plain requests to it directly",
                        ROLES[req.role.min(2)]
                    )
                    .into(),
                )),
            },
        };
        interrupt.disarm();
        state.set_busy(slot, false);
        metrics.in_flight_searches.fetch_sub(1, Ordering::SeqCst);
        // A context grown for a long request is given back rather than kept.
        let mut freed = models.shrink_contexts(shared.shrink_above);
        for p in plain.iter_mut() {
            if p.as_ref()
                .is_some_and(|p| p.context_tokens() > shared.shrink_above)
            {
                *p = None;
                freed = true;
            }
        }
        if freed {
            give_back_freed_memory();
        }
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
        // Idle again before the answer leaves, so that the client's next request can come
        // back to this worker and its warm contexts.
        ready();
        let _ = job.events.send(Event::Done(result));
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use w2s_core::{BackendError, Role, SearchError};
    use w2s_engine::EngineError;
    use w2s_llama::LlamaError;

    use super::request_words;

    fn named(path: &str) -> String {
        format!("the model at {path}")
    }

    #[test]
    fn a_prompt_too_long_is_said_in_the_request_s_fields_behind_its_role() {
        let e = EngineError::Local {
            role: Role::Tuned,
            source: LlamaError::PromptTooLong {
                path: PathBuf::from("/m/a.gguf"),
                prompt_tokens: 900,
                max_new: 200,
                n_ctx_train: 1024,
            },
        };
        assert_eq!(
            request_words(&e, &named),
            "tuned model: the prompt is 900 tokens for the model at /m/a.gguf; with max_tokens \
             200 that exceeds its context of 1024 tokens: shorten the prompt or lower max_tokens"
        );
    }

    #[test]
    fn too_many_rows_inside_a_search_error_names_the_search_fields() {
        let e = SearchError::Backend {
            role: Role::Strong,
            source: BackendError::from(LlamaError::TooManyRows {
                rows: 300,
                max: 256,
            }),
        };
        let text = request_words(&e, &named);
        assert!(
            text.ends_with(
                "300 rows is more than the llama.cpp backend's limit of 256; lower \
                 search.w * search.k or n"
            ),
            "{text}"
        );
        assert!(!text.contains("W*K"), "{text}");
    }

    #[test]
    fn an_error_with_no_limit_keeps_its_text() {
        let e = EngineError::input("the prompt is empty");
        assert_eq!(request_words(&e, &named), e.to_string());
    }
}
