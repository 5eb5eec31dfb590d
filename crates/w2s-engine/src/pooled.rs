//! Searches in flight on one context of a local strong model: the rows of every search
//! due for a chunk sampled in one decode per token ([`w2s_core::search_many`] over a
//! [`LlamaProposerPool`]), each place in flight guided by the pair of an engine of its
//! own. The alternative is N workers ([`crate::in_flight`]), each with its own context,
//! whose decodes take turns at the compute gate.

use std::ops::ControlFlow;
use std::sync::Arc;

use w2s_core::{
    search_many_each, Guide, Interrupt, LogRatio, ManyJob, Progress, Role, SearchConfig,
    SearchOutput,
};
use w2s_llama::{templated_prompt_tokens, LlamaProposerPool};

use crate::{Engine, EngineError};

/// Whether `engine` can run pooled: a local strong model guided by the tuned / untuned
/// pair alone (no custom guide, no more pairs).
pub fn can_pool(engine: &Engine) -> bool {
    engine.role_model(Role::Strong).is_some()
        && !engine.has_custom_guide()
        && engine.spec().guides.is_empty()
}

/// Runs `jobs` with one search in flight per engine of `engines` (each place's guide is
/// that engine's pair; [`Engine::replicas`] makes them), the strong rows of all of them
/// sampled in one decode per token on a context made for these jobs. Each job's result
/// goes to `done(job, result)` as its search ends; `done` returning
/// [`ControlFlow::Break`] ends the call (see [`w2s_core::search_many_each`]). An input
/// error if an engine cannot pool ([`can_pool`]) or the jobs do not share one beta; a
/// failure of the strong model ends the call with it. `interrupt`, where given, is checked
/// by every local model between pieces of work (see [`w2s_core::Interrupt`]).
pub fn search_pooled(
    engines: &mut [Engine],
    jobs: &[(SearchConfig, String)],
    interrupt: Option<&Arc<Interrupt>>,
    progress: &mut dyn FnMut(usize, &Progress<'_>) -> bool,
    done: &mut dyn FnMut(usize, Result<SearchOutput, EngineError>) -> ControlFlow<()>,
) -> Result<(), EngineError> {
    let Some(first) = engines.first() else {
        return Err(EngineError::input("no engine to search with"));
    };
    if !engines.iter().all(can_pool) {
        return Err(EngineError::input(
            "pooled searches need a local strong model guided by the tuned / untuned pair alone",
        ));
    }
    let beta = jobs.first().map_or(1.0, |(c, _)| c.beta());
    if jobs.iter().any(|(c, _)| c.beta() != beta) {
        return Err(EngineError::input("pooled searches must share one beta"));
    }
    let model = first
        .role_model(Role::Strong)
        .ok_or_else(|| EngineError::input("no local strong model"))?
        .clone();
    let template = first.template(Role::Strong).clone();
    let mut prompt_tokens = 0;
    for (_, prompt) in jobs {
        let n = templated_prompt_tokens(&model, &template, prompt).map_err(|e| {
            EngineError::Search(w2s_core::SearchError::Backend {
                role: Role::Strong,
                source: e,
            })
        })?;
        prompt_tokens = prompt_tokens.max(n);
    }
    let rows = jobs
        .iter()
        .map(|(c, _)| c.method().rows())
        .max()
        .unwrap_or(1);
    let max_new = jobs
        .iter()
        .map(|(c, _)| c.max_new_tokens())
        .max()
        .unwrap_or(1);
    let threads = first.spec().threads;
    let places = engines.len().min(jobs.len()).max(1);
    let mut pool = LlamaProposerPool::new(
        model,
        template,
        threads,
        places,
        rows,
        max_new,
        prompt_tokens,
    )
    .map_err(|source| EngineError::Local {
        role: Role::Strong,
        source,
    })?;
    pool.set_interrupt(interrupt.cloned());
    for e in engines[..places].iter_mut() {
        e.set_interrupt(interrupt);
    }
    tracing::info!(
        places,
        jobs = jobs.len(),
        "searches in flight share one context of the strong model"
    );
    let mut owned: Vec<Box<dyn Guide + '_>> = Vec::with_capacity(places);
    for e in engines[..places].iter_mut() {
        if let Some(twin) = e.twin.as_mut() {
            twin.set_beta(beta)
                .map_err(|e| EngineError::input(e.to_string()))?;
        }
        owned.push(place_guide(e, beta));
    }
    let mut guides: Vec<&mut dyn Guide> = owned
        .iter_mut()
        .map(|g| &mut **g as &mut dyn Guide)
        .collect();
    let jobs = jobs
        .iter()
        .map(|(config, prompt)| ManyJob {
            config: config.clone(),
            prompt: prompt.clone(),
        })
        .collect();
    let ran = search_many_each(jobs, &mut guides, &mut pool, progress, &mut |job, r| {
        done(job, r.map_err(EngineError::from))
    });
    drop(guides);
    drop(owned);
    for e in engines[..places].iter_mut() {
        e.set_interrupt(None);
    }
    Ok(ran?)
}

/// A place's guide: its engine's twin guide where the pair is one file that reads the
/// search's templates (its beta set by the caller), else the pair's log-ratio at `beta`.
pub(crate) fn place_guide(e: &mut Engine, beta: f64) -> Box<dyn Guide + '_> {
    let ready = e.twin_ready;
    match e.twin.as_mut().filter(|_| ready) {
        Some(twin) => Box::new(twin),
        None => Box::new(LogRatio::new(&mut e.tuned, &mut e.untuned, beta)),
    }
}
