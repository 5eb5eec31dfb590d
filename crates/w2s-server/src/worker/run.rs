//! Running one job on a worker's engine: a plain completion or one search, with panics
//! caught and errors mapped to what the client is told.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use w2s_core::{ErrorKind, Interrupt, SearchOutput};
use w2s_engine::{Engine, EngineError, LocalModels, SearchRequest, ROLES};
use w2s_llama::{PlainModel, PlainSampling};

use super::{Event, Failure, Finished, Job, Outcome, Reason, SearchWork};
use crate::api::PlainRequest;

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
                .map_err(w2s_core::BackendError::from)
        } else {
            let s = PlainSampling {
                n: req.n,
                max_tokens: req.max_tokens,
                sampling: req.sampling,
                stop: req.stop.clone(),
                seed: req.seed,
                with_tokens: req.logprobs,
            };
            pm.sample(&req.prompt, &s).map(|choices| Outcome::Samples {
                choices,
                prompt_tokens,
            })
        }
    }));
    match outcome {
        Err(_) => Err(Failure::Panic),
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) if e.kind() == ErrorKind::Input => Err(Failure::Input(Reason::new(e))),
        Ok(Err(e)) => {
            tracing::error!(%e, "plain request failed");
            Err(Failure::Internal("the model failed".into()))
        }
    }
}

/// The engine's request for `work`: its prompt, history and settings, `rank` at the
/// compute gate, `interrupt` checked by every local model.
pub(super) fn search_request<'a>(
    work: &'a SearchWork,
    rank: u64,
    interrupt: &'a Arc<Interrupt>,
) -> SearchRequest<'a> {
    let req = &*work.req;
    SearchRequest {
        history: &req.history,
        chat: req.endpoint == crate::api::Endpoint::Chat,
        rank,
        interrupt: Some(interrupt),
        ..SearchRequest::new(&req.config, &req.prompts[work.index])
    }
}

/// Sends the text every kept beam shares once it grows; whether the search may go on
/// (its client is there and its deadline not passed).
pub(super) fn report(job: &Job, sent: &mut usize, settled: &str) -> bool {
    if settled.len() > *sent {
        *sent = settled.len();
        let _ = job.events.send(Event::Settled(settled.to_string()));
    }
    !job.cancel.load(Ordering::SeqCst) && Instant::now() < job.deadline
}

pub(super) fn run_search(
    models: &mut Engine,
    work: &SearchWork,
    job: &Job,
    (rank, interrupt): (u64, &Arc<Interrupt>),
) -> Result<Finished, Failure> {
    let request = search_request(work, rank, interrupt);
    let mut sent = 0usize;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        models.run(&request, &mut |p| {
            interrupt.beat();
            report(job, &mut sent, p.settled_text)
        })
    }));
    let output = match outcome {
        Err(_) => return Err(Failure::Panic),
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(failure(e, job)),
    };
    let prompt_tokens = models.strong_prompt_tokens().unwrap_or(0);
    finished(models, (work, &request), output, prompt_tokens)
}

/// A search's answer: its output, and where the request asks for them the strong
/// model's log-probabilities of the returned choices.
pub(super) fn finished(
    models: &mut Engine,
    (work, request): (&SearchWork, &SearchRequest<'_>),
    output: SearchOutput,
    prompt_tokens: usize,
) -> Result<Finished, Failure> {
    let req = &*work.req;
    let strong_logprobs = if req.logprobs {
        let texts: Vec<&str> = output
            .beams
            .iter()
            .take(req.n)
            .map(|b| b.text.as_str())
            .collect();
        let got = catch_unwind(AssertUnwindSafe(|| models.strong_logprobs(request, &texts)))
            .map_err(|_| Failure::Panic)?;
        Some(got.map_err(|e| {
            tracing::warn!(%e, "no strong-model log-probabilities");
            e.to_string()
        }))
    } else {
        None
    };
    Ok(Finished {
        output,
        prompt_tokens,
        strong_logprobs,
    })
}

/// What a failed search tells its client, decided by the error's kind.
pub(super) fn failure(e: EngineError, job: &Job) -> Failure {
    match e.kind() {
        ErrorKind::Cancelled if job.cancel.load(Ordering::SeqCst) => Failure::Cancelled,
        ErrorKind::Cancelled => Failure::Deadline,
        ErrorKind::Input => Failure::Input(Reason::new(e)),
        ErrorKind::Remote => {
            tracing::warn!(%e, "a remote engine failed");
            Failure::Upstream(Reason::new(e))
        }
        _ => {
            tracing::error!(%e, "search failed");
            let role = match &e {
                EngineError::Search(w2s_core::SearchError::Backend { role, .. }) => Some(*role),
                _ => None,
            };
            Failure::Internal(match role {
                Some(r) => format!("{r} model failed"),
                None => "the search failed".into(),
            })
        }
    }
}

/// A plain request's run: the worker's threads and the interrupt its model checks.
pub(super) struct PlainRun<'a> {
    pub(super) threads: usize,
    pub(super) interrupt: &'a Arc<Interrupt>,
}

impl PlainRun<'_> {
    /// Runs `req` on its role's local model (kept in `plain` for the next), holding
    /// `gate` at `rank` where given; an input failure where the role is remote.
    pub(super) fn run(
        &self,
        models: &Engine,
        plain: &mut [Option<PlainModel>],
        req: &PlainRequest,
        gate: Option<(&w2s_engine::ComputeGate, u64)>,
    ) -> Result<Outcome, Failure> {
        let role = req.role.min(2);
        let Some(model) = models.local_model(ROLES[role]) else {
            return Err(Failure::Input(
                format!(
                    "the {} model runs on a remote engine; send plain requests to it directly",
                    ROLES[role]
                )
                .into(),
            ));
        };
        let pm = plain[role].get_or_insert_with(|| {
            let mut pm = PlainModel::new(model.clone(), self.threads);
            pm.set_interrupt(Some(self.interrupt.clone()));
            pm
        });
        let _cpu = gate.map(|(g, rank)| g.hold(rank));
        run_plain(pm, req)
    }
}

/// Frees each plain model whose context grew past `max_tokens`; whether any was.
pub(super) fn shrink_plain(plain: &mut [Option<PlainModel>], max_tokens: usize) -> bool {
    let mut freed = false;
    for p in plain.iter_mut() {
        if p.as_ref().is_some_and(|p| p.context_tokens() > max_tokens) {
            *p = None;
            freed = true;
        }
    }
    freed
}
