//! The guide: what the search maximises. By default the log-probability ratio of a small
//! tuned / untuned pair ([`LogRatio`]); any other value of (prompt, response so far,
//! ended), such as a reward model or a process reward model, plugs in through [`Guide`].

use std::time::{Duration, Instant};

use crate::backend::{ScoreRequest, Scorer};
use crate::error::{BackendError, ConfigError, Role, SearchError};
use crate::output::SearchStats;
use crate::trace::TermName;

/// The guide's value of one response so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuideScore {
    /// What the search ranks by (higher is better).
    pub value: f64,
    /// log pi_tuned(response | prompt) for the log-ratio pair; NaN for other guides.
    pub tuned: f64,
    /// log pi_untuned(response | prompt) for the log-ratio pair; NaN for other guides.
    pub untuned: f64,
}

impl GuideScore {
    /// A value from a guide that is not a tuned / untuned pair.
    pub fn value(value: f64) -> Self {
        GuideScore {
            value,
            tuned: f64::NAN,
            untuned: f64::NAN,
        }
    }
}

/// Values responses for the search. Stateful like the model traits: `begin` starts a
/// search with up to `rows` rows, `score` values whole responses so far (each request
/// extends what was last valued for its row), `reorder` renumbers rows as
/// [`crate::Proposer::reorder`] does. Each method may add its time and work to `stats`.
pub trait Guide {
    /// Starts a search on `prompt` (as the user gave it; a guide applies its own template).
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new_tokens: usize,
        stats: &mut SearchStats,
    ) -> Result<(), SearchError>;
    /// One value per request, in order.
    fn score(
        &mut self,
        requests: &[ScoreRequest<'_>],
        stats: &mut SearchStats,
    ) -> Result<Vec<GuideScore>, SearchError>;
    /// Renumbers rows: new row `i` continues old row `parents[i]`.
    fn reorder(&mut self, parents: &[usize], stats: &mut SearchStats) -> Result<(), SearchError>;
    /// Called once when the search ends, to record final counters.
    fn finish(&mut self, _stats: &mut SearchStats) {}
    /// The terms of a guide that sums several, with their weights (empty: one term).
    fn terms(&self) -> Vec<TermName> {
        Vec::new()
    }
    /// Each term's value (weight not applied) for each request of the last
    /// [`Guide::score`] call, in request order (empty: one term).
    fn last_terms(&self) -> &[Vec<f64>] {
        &[]
    }
}

/// A guide borrowed: what it does, through the reference (a driver holding guides of
/// several kinds, some borrowed, some its own, as `Box<dyn Guide>`).
impl<G: Guide + ?Sized> Guide for &mut G {
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new_tokens: usize,
        stats: &mut SearchStats,
    ) -> Result<(), SearchError> {
        (**self).begin(prompt, rows, max_new_tokens, stats)
    }
    fn score(
        &mut self,
        requests: &[ScoreRequest<'_>],
        stats: &mut SearchStats,
    ) -> Result<Vec<GuideScore>, SearchError> {
        (**self).score(requests, stats)
    }
    fn reorder(&mut self, parents: &[usize], stats: &mut SearchStats) -> Result<(), SearchError> {
        (**self).reorder(parents, stats)
    }
    fn finish(&mut self, stats: &mut SearchStats) {
        (**self).finish(stats)
    }
    fn terms(&self) -> Vec<TermName> {
        (**self).terms()
    }
    fn last_terms(&self) -> &[Vec<f64>] {
        (**self).last_terms()
    }
}

/// The method's guide: `beta * (log pi_tuned(y | x) - log pi_untuned(y | x))`, each
/// small model's time and tokens in its own counters.
pub struct LogRatio<'m> {
    tuned: &'m mut dyn Scorer,
    untuned: &'m mut dyn Scorer,
    beta: f64,
}

impl<'m> LogRatio<'m> {
    /// The pair, weighted by `beta`.
    pub fn new(tuned: &'m mut dyn Scorer, untuned: &'m mut dyn Scorer, beta: f64) -> Self {
        LogRatio {
            tuned,
            untuned,
            beta,
        }
    }
}

impl Guide for LogRatio<'_> {
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new: usize,
        stats: &mut SearchStats,
    ) -> Result<(), SearchError> {
        timed(&mut stats.tuned_time, || {
            self.tuned.begin(prompt, rows, max_new)
        })
        .map_err(backend(Role::Tuned))?;
        timed(&mut stats.untuned_time, || {
            self.untuned.begin(prompt, rows, max_new)
        })
        .map_err(backend(Role::Untuned))
    }

    fn score(
        &mut self,
        requests: &[ScoreRequest<'_>],
        stats: &mut SearchStats,
    ) -> Result<Vec<GuideScore>, SearchError> {
        let t = timed(&mut stats.tuned_time, || self.tuned.score(requests))
            .map_err(backend(Role::Tuned))?;
        let u = timed(&mut stats.untuned_time, || self.untuned.score(requests))
            .map_err(backend(Role::Untuned))?;
        for (role, got) in [(Role::Tuned, t.len()), (Role::Untuned, u.len())] {
            if got != requests.len() {
                return Err(SearchError::Contract {
                    role,
                    message: format!("{got} scores for {} rows", requests.len()),
                });
            }
        }
        Ok(t.into_iter()
            .zip(u)
            .map(|(tuned, untuned)| GuideScore {
                value: self.beta * (tuned - untuned),
                tuned,
                untuned,
            })
            .collect())
    }

    fn reorder(&mut self, parents: &[usize], stats: &mut SearchStats) -> Result<(), SearchError> {
        timed(&mut stats.tuned_time, || self.tuned.reorder(parents))
            .map_err(backend(Role::Tuned))?;
        timed(&mut stats.untuned_time, || self.untuned.reorder(parents))
            .map_err(backend(Role::Untuned))
    }

    fn finish(&mut self, stats: &mut SearchStats) {
        stats.tuned_tokens_evaluated = self.tuned.tokens_evaluated();
        stats.untuned_tokens_evaluated = self.untuned.tokens_evaluated();
    }
}

/// A guide that values each response by a function of (prompt, whole responses so far,
/// ended flags) with no state of its own between calls: a reward model, a judge, any
/// program. Its time goes to [`SearchStats::guide_time`].
pub struct ValueFn<F> {
    prompt: String,
    f: F,
}

impl<F> ValueFn<F>
where
    F: FnMut(&str, &[&str], &[bool]) -> Result<Vec<f64>, BackendError>,
{
    /// `f(prompt, texts, ended)` returns one value per text.
    pub fn new(f: F) -> Self {
        ValueFn {
            prompt: String::new(),
            f,
        }
    }
}

impl<F> Guide for ValueFn<F>
where
    F: FnMut(&str, &[&str], &[bool]) -> Result<Vec<f64>, BackendError>,
{
    fn begin(
        &mut self,
        prompt: &str,
        _: usize,
        _: usize,
        _: &mut SearchStats,
    ) -> Result<(), SearchError> {
        self.prompt = prompt.to_string();
        Ok(())
    }

    fn score(
        &mut self,
        requests: &[ScoreRequest<'_>],
        stats: &mut SearchStats,
    ) -> Result<Vec<GuideScore>, SearchError> {
        let texts: Vec<&str> = requests.iter().map(|r| r.text).collect();
        let ended: Vec<bool> = requests.iter().map(|r| r.ended).collect();
        let values = timed(&mut stats.guide_time, || {
            (self.f)(&self.prompt, &texts, &ended)
        })
        .map_err(|source| SearchError::Guide { source })?;
        if values.len() != requests.len() {
            return Err(SearchError::GuideContract(format!(
                "{} values for {} responses",
                values.len(),
                requests.len()
            )));
        }
        if let Some(i) = values.iter().position(|v| v.is_nan()) {
            return Err(SearchError::GuideContract(format!(
                "the value of response {i} is NaN"
            )));
        }
        Ok(values.into_iter().map(GuideScore::value).collect())
    }

    fn reorder(&mut self, _: &[usize], _: &mut SearchStats) -> Result<(), SearchError> {
        Ok(())
    }
}

/// Checks the terms of a weighted guide: at least one, every weight finite, not all
/// zero (every response would then have the same value).
pub fn check_weights(terms: &[TermName]) -> Result<(), ConfigError> {
    if terms.is_empty() {
        return Err(ConfigError::Weights(
            "a weighted guide needs at least one term".into(),
        ));
    }
    if let Some(t) = terms.iter().find(|t| !t.weight.is_finite()) {
        return Err(ConfigError::Weights(format!(
            "the weight of {} is {}; weights must be finite numbers",
            t.name, t.weight
        )));
    }
    if terms.iter().all(|t| t.weight == 0.0) {
        return Err(ConfigError::Weights(
            "every weight is 0 (beta included), so every response would have the same value".into(),
        ));
    }
    Ok(())
}

/// A guide that is a weighted sum of others: `sum_i weight_i * value_i`, e.g. a
/// sentiment pair with weight 1 and a fluency pair with weight 0.5. Each term keeps its
/// own state; the trace shows each term's value ([`Guide::last_terms`]).
pub struct WeightedSum<'g> {
    terms: Vec<(TermName, Box<dyn Guide + 'g>)>,
    last: Vec<Vec<f64>>,
}

impl<'g> WeightedSum<'g> {
    /// The sum of `terms`; an error if there are none, or a weight is not finite, or
    /// every weight is zero.
    pub fn new(terms: Vec<(TermName, Box<dyn Guide + 'g>)>) -> Result<Self, ConfigError> {
        let names: Vec<TermName> = terms.iter().map(|(t, _)| t.clone()).collect();
        check_weights(&names)?;
        Ok(WeightedSum {
            terms,
            last: Vec::new(),
        })
    }
}

impl Guide for WeightedSum<'_> {
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new: usize,
        stats: &mut SearchStats,
    ) -> Result<(), SearchError> {
        self.terms
            .iter_mut()
            .try_for_each(|(_, g)| g.begin(prompt, rows, max_new, stats))
    }

    fn score(
        &mut self,
        requests: &[ScoreRequest<'_>],
        stats: &mut SearchStats,
    ) -> Result<Vec<GuideScore>, SearchError> {
        let mut sums = vec![0.0; requests.len()];
        self.last = vec![Vec::with_capacity(self.terms.len()); requests.len()];
        for (name, g) in &mut self.terms {
            let values = g.score(requests, stats)?;
            if values.len() != requests.len() {
                return Err(SearchError::GuideContract(format!(
                    "{} gave {} values for {} rows",
                    name.name,
                    values.len(),
                    requests.len()
                )));
            }
            for (i, v) in values.iter().enumerate() {
                sums[i] += name.weight * v.value;
                self.last[i].push(v.value);
            }
        }
        Ok(sums.into_iter().map(GuideScore::value).collect())
    }

    fn reorder(&mut self, parents: &[usize], stats: &mut SearchStats) -> Result<(), SearchError> {
        self.terms
            .iter_mut()
            .try_for_each(|(_, g)| g.reorder(parents, stats))
    }

    fn finish(&mut self, stats: &mut SearchStats) {
        let (mut tuned, mut untuned) = (0, 0);
        for (_, g) in &mut self.terms {
            let mut own = SearchStats::default();
            g.finish(&mut own);
            tuned += own.tuned_tokens_evaluated;
            untuned += own.untuned_tokens_evaluated;
        }
        stats.tuned_tokens_evaluated = tuned;
        stats.untuned_tokens_evaluated = untuned;
    }

    fn terms(&self) -> Vec<TermName> {
        self.terms.iter().map(|(t, _)| t.clone()).collect()
    }

    fn last_terms(&self) -> &[Vec<f64>] {
        &self.last
    }
}

pub(crate) fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    *acc += t.elapsed();
    out
}

pub(crate) fn backend(role: Role) -> impl Fn(BackendError) -> SearchError {
    move |source| SearchError::Backend { role, source }
}
