//! Many searches stepped together: a driver of [`SearchState`]s that samples the rows of
//! every search due for a chunk in one call of a [`ProposerPool`] (one batched decode of
//! a local strong model), each place in flight with a guide of its own. A search that
//! ends frees its place for the next job at once, so the pool stays full (continuous
//! batching).

use std::ops::ControlFlow;
use std::time::Instant;

use crate::backend::{Chunk, ExtendRequest, ProposalSetup, Proposer, ProposerPool};
use crate::config::SearchConfig;
use crate::error::{BackendError, Role, SearchError};
use crate::guide::{backend, timed, Guide};
use crate::output::{Progress, SearchOutput, SearchStats};
use crate::state::{Action, SearchState};

/// One search of [`search_many`]: its settings and prompt.
#[derive(Debug, Clone)]
pub struct ManyJob {
    /// The search's settings.
    pub config: SearchConfig,
    /// The prompt, as the user gave it.
    pub prompt: String,
}

/// One strong model serving one search at a time: a pool of one place.
pub(crate) struct Alone<'a>(pub(crate) &'a mut dyn Proposer);

impl ProposerPool for Alone<'_> {
    fn begin(&mut self, _: usize, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        self.0.begin(setup)
    }

    fn extend(
        &mut self,
        requests: &mut [(usize, Vec<ExtendRequest<'_>>)],
    ) -> Result<Vec<Vec<Chunk>>, BackendError> {
        requests.iter_mut().map(|(_, r)| self.0.extend(r)).collect()
    }

    fn reorder(&mut self, _: usize, parents: &[usize]) -> Result<(), BackendError> {
        self.0.reorder(parents)
    }

    fn end(&mut self, _: usize) {}
}

struct Running {
    job: usize,
    state: SearchState,
    stats: SearchStats,
    started: Instant,
}

/// Runs `jobs` with one search in flight per guide of `guides` (the place's guide serves
/// each search that runs there, one after another: [`Guide::begin`] starts it afresh),
/// the strong rows of all of them sampled together by `strong`, whose search numbers are
/// the places; one result per job, in job order. See [`search_many_each`].
pub fn search_many(
    jobs: Vec<ManyJob>,
    guides: &mut [&mut dyn Guide],
    strong: &mut dyn ProposerPool,
    progress: &mut dyn FnMut(usize, &Progress<'_>) -> bool,
) -> Result<Vec<Result<SearchOutput, SearchError>>, SearchError> {
    let mut results: Vec<Option<Result<SearchOutput, SearchError>>> =
        (0..jobs.len()).map(|_| None).collect();
    search_many_each(jobs, guides, strong, progress, &mut |job, r| {
        results[job] = Some(r);
        ControlFlow::Continue(())
    })?;
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(Err(SearchError::Cancelled)))
        .collect())
}

/// [`search_many`], each job's result handed to `done(job, result)` as its search ends
/// (in finishing order); `done` returning [`ControlFlow::Break`] ends the call at once,
/// the searches still running dropped. `progress(job, p)` is called after each selection
/// of a job's search; `false` cancels that search (its result is
/// [`SearchError::Cancelled`]). A job's own failure (its prompt, its guide) is its
/// result; a failure of the shared strong model ends the call with `Err`.
///
/// Each search's result is what [`crate::search_guided`] gives for it alone with the same
/// strong model, whenever that model's samples of a row do not depend on which other rows
/// share its batch (true of the deterministic backends; a real model's batched kernels
/// may round differently). A combined call's time is shared equally among the searches
/// in it ([`SearchStats::strong_time`]).
pub fn search_many_each(
    jobs: Vec<ManyJob>,
    guides: &mut [&mut dyn Guide],
    strong: &mut dyn ProposerPool,
    progress: &mut dyn FnMut(usize, &Progress<'_>) -> bool,
    done: &mut dyn FnMut(usize, Result<SearchOutput, SearchError>) -> ControlFlow<()>,
) -> Result<(), SearchError> {
    if guides.is_empty() && !jobs.is_empty() {
        return Err(SearchError::OutOfTurn(
            "no guide: no search can be in flight".into(),
        ));
    }
    let mut queue = jobs.into_iter().enumerate();
    let mut places = Places::new(guides.len());
    let ran = loop {
        let mut stopped = false;
        for (slot, guide) in guides.iter_mut().enumerate() {
            while places.is_free(slot) && !stopped {
                let Some((job, spec)) = queue.next() else {
                    break;
                };
                if let Err(e) = places.start(slot, job, spec, &mut **guide, strong) {
                    stopped = done(job, Err(e)).is_break();
                }
            }
        }
        if stopped || places.is_empty() {
            break Ok(());
        }
        match places.step(guides, strong, progress, done) {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(())) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    places.clear(strong);
    ran
}

/// Searches in flight in numbered places, stepped together: the driver of
/// [`search_many_each`], for a caller whose jobs arrive while others run (a server).
/// Each place holds one search at a time, served by the place's guide and by the strong
/// model's pool under the place's number; [`Places::step`] takes every running search to
/// its next chunk and samples those chunks in one call of the pool.
pub struct Places {
    running: Vec<Option<Running>>,
}

impl Places {
    /// `n` empty places.
    pub fn new(n: usize) -> Self {
        Places {
            running: (0..n).map(|_| None).collect(),
        }
    }

    /// How many places there are.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no search runs.
    pub fn is_empty(&self) -> bool {
        self.running.iter().all(Option::is_none)
    }

    /// Whether place `slot` exists and holds no search.
    pub fn is_free(&self, slot: usize) -> bool {
        self.running.get(slot).is_some_and(Option::is_none)
    }

    /// Searches running.
    pub fn running(&self) -> usize {
        self.running.iter().filter(|r| r.is_some()).count()
    }

    /// Starts job number `job` in the free place `slot`: the strong model's
    /// [`ProposerPool::begin`] under `slot`, then `guide`'s [`Guide::begin`]. `guide`
    /// must be the one [`Places::step`] will be given for `slot`. A failure (the job's
    /// prompt, its guide, a place not free) is the job's: the place stays free.
    pub fn start(
        &mut self,
        slot: usize,
        job: usize,
        spec: ManyJob,
        guide: &mut dyn Guide,
        strong: &mut dyn ProposerPool,
    ) -> Result<(), SearchError> {
        if !self.is_free(slot) {
            return Err(SearchError::OutOfTurn(format!(
                "place {slot} is not free (of {})",
                self.len()
            )));
        }
        match start(slot, job, spec, guide, strong) {
            Ok(run) => {
                self.running[slot] = Some(run);
                Ok(())
            }
            Err(e) => {
                strong.end(slot);
                Err(e)
            }
        }
    }

    /// One round: every running search served by its place's guide (`guides[slot]`)
    /// up to its next chunk or its end, then the chunks of all that want one sampled in
    /// one call of `strong`. A search that ends (done, failed, cancelled by `progress`)
    /// goes to `done(job, result)` and frees its place; `done` returning
    /// [`ControlFlow::Break`] stops the round (the searches still running stay in their
    /// places) and is returned. A failure of `strong` in the combined call is `Err`,
    /// every search left in its place: [`Places::clear`] drops them.
    pub fn step(
        &mut self,
        guides: &mut [&mut dyn Guide],
        strong: &mut dyn ProposerPool,
        progress: &mut dyn FnMut(usize, &Progress<'_>) -> bool,
        done: &mut dyn FnMut(usize, Result<SearchOutput, SearchError>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, SearchError> {
        if guides.len() < self.len() {
            return Err(SearchError::OutOfTurn(format!(
                "{} guides for {} places",
                guides.len(),
                self.len()
            )));
        }
        let mut stopped = false;
        // Every search up to its next chunk (or its end).
        let mut due = vec![false; self.len()];
        for (slot, place) in self.running.iter_mut().enumerate() {
            let Some(run) = place.as_mut().filter(|_| !stopped) else {
                continue;
            };
            let guide = &mut *guides[slot];
            match advance(slot, run, guide, strong, progress) {
                Ok(true) => due[slot] = true,
                outcome => {
                    if let Some(run) = place.take() {
                        let job = run.job;
                        stopped |= done(job, outcome.map(|_| finish(run, guide))).is_break();
                    }
                    strong.end(slot);
                }
            }
        }
        // Their chunks in one call: polling again asks for the same rows.
        let mut batch = Vec::new();
        for (slot, place) in self.running.iter_mut().enumerate() {
            if let (true, Some(run)) = (due[slot] && !stopped, place.as_mut()) {
                if let Action::Extend(requests) = run.state.poll() {
                    batch.push((slot, requests));
                }
            }
        }
        if batch.is_empty() {
            return Ok(flow(stopped));
        }
        let t = Instant::now();
        let chunks = strong.extend(&mut batch).map_err(backend(Role::Strong))?;
        let asked: Vec<usize> = batch.iter().map(|(slot, _)| *slot).collect();
        drop(batch);
        if chunks.len() != asked.len() {
            return Err(SearchError::Contract {
                role: Role::Strong,
                message: format!(
                    "chunks for {} searches, asked {}",
                    chunks.len(),
                    asked.len()
                ),
            });
        }
        let share = t.elapsed() / asked.len() as u32;
        for (slot, chunks) in asked.into_iter().zip(chunks) {
            let Some(run) = self.running[slot].as_mut().filter(|_| !stopped) else {
                continue;
            };
            run.stats.strong_time += share;
            if let Err(e) = run.state.feed_chunks(chunks) {
                let job = run.job;
                self.running[slot] = None;
                strong.end(slot);
                stopped |= done(job, Err(e)).is_break();
            }
        }
        Ok(flow(stopped))
    }

    /// Drops every running search (its place's [`ProposerPool::end`] called) and returns
    /// their job numbers.
    pub fn clear(&mut self, strong: &mut dyn ProposerPool) -> Vec<usize> {
        let mut dropped = Vec::new();
        for (slot, place) in self.running.iter_mut().enumerate() {
            if let Some(run) = place.take() {
                strong.end(slot);
                dropped.push(run.job);
            }
        }
        dropped
    }
}

fn flow(stopped: bool) -> ControlFlow<()> {
    if stopped {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

fn start(
    slot: usize,
    job: usize,
    spec: ManyJob,
    guide: &mut dyn Guide,
    strong: &mut dyn ProposerPool,
) -> Result<Running, SearchError> {
    let started = Instant::now();
    let ManyJob { config, prompt } = spec;
    let mut state = SearchState::new(&config, &prompt)?;
    let mut stats = SearchStats::default();
    timed(&mut stats.strong_time, || {
        strong.begin(slot, &state.proposal_setup())
    })
    .map_err(backend(Role::Strong))?;
    guide.begin(&prompt, state.rows(), config.max_new_tokens(), &mut stats)?;
    state.set_terms(guide.terms());
    Ok(Running {
        job,
        state,
        stats,
        started,
    })
}

/// Serves the search's guide and reorders until it wants a chunk (`true`) or has ended.
fn advance(
    slot: usize,
    run: &mut Running,
    guide: &mut dyn Guide,
    strong: &mut dyn ProposerPool,
    progress: &mut dyn FnMut(usize, &Progress<'_>) -> bool,
) -> Result<bool, SearchError> {
    loop {
        match run.state.poll() {
            Action::Extend(_) => return Ok(true),
            Action::Score(requests) => {
                let values = guide.score(&requests, &mut run.stats)?;
                let terms = guide.last_terms().to_vec();
                run.state.feed_scores(values, &terms)?;
            }
            Action::Selected(p) => {
                if !progress(run.job, &p) {
                    return Err(SearchError::Cancelled);
                }
            }
            Action::Reorder(parents) => {
                timed(&mut run.stats.strong_time, || strong.reorder(slot, parents))
                    .map_err(backend(Role::Strong))?;
                guide.reorder(parents, &mut run.stats)?;
                run.state.reordered();
            }
            Action::Done => return Ok(false),
        }
    }
}

fn finish(run: Running, guide: &mut dyn Guide) -> SearchOutput {
    let Running {
        state,
        mut stats,
        started,
        ..
    } = run;
    guide.finish(&mut stats);
    stats.total_time = started.elapsed();
    state.finish(stats)
}
