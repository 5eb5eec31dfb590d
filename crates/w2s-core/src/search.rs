//! Chunk-level beam search (Algorithm 1 of the method), with Best-of-N and plain
//! sampling as configurations of it: the driver that steps one [`SearchState`] with one
//! strong model and one guide.

use std::time::Instant;

use crate::backend::{Proposer, Scorer};
use crate::config::SearchConfig;
use crate::error::{Role, SearchError};
use crate::guide::{backend, timed, Guide, LogRatio};
use crate::output::{Progress, SearchOutput, SearchStats};
use crate::state::{Action, SearchState};

/// The three models of a weak-to-strong search.
pub struct Models<'m> {
    /// Samples continuations (the large model).
    pub strong: &'m mut dyn Proposer,
    /// The small tuned model.
    pub tuned: &'m mut dyn Scorer,
    /// The small untuned model.
    pub untuned: &'m mut dyn Scorer,
}

/// Runs the search for `prompt`.
pub fn search(
    config: &SearchConfig,
    prompt: &str,
    models: Models<'_>,
) -> Result<SearchOutput, SearchError> {
    search_with_progress(config, prompt, models, &mut |_| true)
}

/// Runs the search; `progress` is called after each selection and may return `false` to
/// cancel (the search then returns [`SearchError::Cancelled`]).
pub fn search_with_progress(
    config: &SearchConfig,
    prompt: &str,
    models: Models<'_>,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<SearchOutput, SearchError> {
    let Models {
        strong,
        tuned,
        untuned,
    } = models;
    let mut guide = LogRatio::new(tuned, untuned, config.beta());
    search_guided(config, prompt, strong, &mut guide, progress)
}

/// Runs the search with any [`Guide`] in place of the tuned / untuned pair (the pair is
/// [`LogRatio`]; the config's `beta` is then not used).
pub fn search_guided(
    config: &SearchConfig,
    prompt: &str,
    strong: &mut dyn Proposer,
    guide: &mut dyn Guide,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<SearchOutput, SearchError> {
    let started = Instant::now();
    let mut state = SearchState::new(config, prompt)?;
    let mut stats = SearchStats::default();
    timed(&mut stats.strong_time, || {
        strong.begin(&state.proposal_setup())
    })
    .map_err(backend(Role::Strong))?;
    guide.begin(prompt, state.rows(), config.max_new_tokens(), &mut stats)?;
    state.set_terms(guide.terms());
    loop {
        match state.poll() {
            Action::Extend(mut requests) => {
                let chunks = timed(&mut stats.strong_time, || strong.extend(&mut requests))
                    .map_err(backend(Role::Strong))?;
                state.feed_chunks(chunks)?;
            }
            Action::Score(requests) => {
                let values = guide.score(&requests, &mut stats)?;
                let terms = guide.last_terms().to_vec();
                state.feed_scores(values, &terms)?;
            }
            Action::Selected(p) => {
                if !progress(&p) {
                    return Err(SearchError::Cancelled);
                }
            }
            Action::Reorder(parents) => {
                timed(&mut stats.strong_time, || strong.reorder(parents))
                    .map_err(backend(Role::Strong))?;
                guide.reorder(parents, &mut stats)?;
                state.reordered();
            }
            Action::Done => break,
        }
    }
    guide.finish(&mut stats);
    stats.total_time = started.elapsed();
    Ok(state.finish(stats))
}
