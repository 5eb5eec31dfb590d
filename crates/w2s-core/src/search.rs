//! Chunk-level beam search (Algorithm 1 of the method), with Best-of-N and plain
//! sampling as configurations of it: one search, with one strong model and one guide
//! (the driver of [`crate::search_many`] with one place).

use std::ops::ControlFlow;

use crate::backend::{Proposer, Scorer};
use crate::config::SearchConfig;
use crate::error::SearchError;
use crate::guide::{Guide, LogRatio};
use crate::many::{search_many_each, Alone, ManyJob};
use crate::output::{Progress, SearchOutput};

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
    // One search is `search_many` with one place, its strong model a pool of one.
    let job = ManyJob {
        config: config.clone(),
        prompt: prompt.to_string(),
    };
    let mut result = None;
    search_many_each(
        vec![job],
        &mut [guide],
        &mut Alone(strong),
        &mut |_, p| progress(p),
        &mut |_, r| {
            result = Some(r);
            ControlFlow::Break(())
        },
    )?;
    result.unwrap_or(Err(SearchError::Cancelled))
}
