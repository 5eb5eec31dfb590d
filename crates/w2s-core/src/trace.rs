//! A record of what a search did: every candidate of every selection step, what each
//! model said of it, and which were kept. Asked for with
//! [`crate::SearchConfig::with_trace`]; serialises to JSON and back.

use serde::{Deserialize, Serialize};

use crate::backend::Finish;

/// One candidate of one selection step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// The candidate of the previous step this one continues (its index in that step's
    /// `rows`); `None` at the first step.
    pub parent: Option<usize>,
    /// The text this step added (empty for a response that had already ended and
    /// competes again with its final value).
    pub chunk: String,
    /// Strong-model tokens this step added.
    pub tokens: usize,
    /// The strong model's log-probability of those tokens (temperature 1), where the
    /// backend reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strong_logprob: Option<f64>,
    /// log pi_tuned(response so far | prompt) (`None` for a guide that is not the pair).
    #[serde(with = "finite")]
    pub tuned: Option<f64>,
    /// log pi_untuned(response so far | prompt) (`None` for a guide that is not the pair).
    #[serde(with = "finite")]
    pub untuned: Option<f64>,
    /// The guide value the search ranked by (`None` if it was not a number).
    #[serde(with = "finite")]
    pub value: Option<f64>,
    /// Each term's value (weight not applied) when the guide is a weighted sum, in the
    /// order of [`Trace::terms`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<f64>,
    /// Why the response ended, if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<Finish>,
    /// Kept for the next step (or, at the last step, among the final beams' top W).
    pub kept: bool,
}

/// One selection: the pool of candidates after sampling and scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    /// Chunks sampled so far (1 at the first selection).
    pub chunk: usize,
    /// The pool, in the search's row order.
    pub rows: Vec<TraceRow>,
}

/// Every selection step of one search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Names of the guide's terms with their weights, when it is a weighted sum
    /// (empty: one guide).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<TermName>,
    /// The steps, first to last.
    pub steps: Vec<TraceStep>,
}

/// One term of a weighted guide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermName {
    /// What the term is (e.g. the pair's models).
    pub name: String,
    /// Its weight in the sum.
    pub weight: f64,
}

impl Trace {
    /// The path of candidates, last step first, that ends at row `row` of the last step.
    pub fn lineage(&self, row: usize) -> Vec<(usize, usize)> {
        let mut path = Vec::new();
        let mut at = Some(row);
        for (s, step) in self.steps.iter().enumerate().rev() {
            let Some(r) = at else { break };
            let Some(cand) = step.rows.get(r) else { break };
            path.push((s, r));
            at = cand.parent;
        }
        path
    }
}

/// Non-finite numbers as JSON `null` (JSON has no NaN), read back as `None`.
mod finite {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) if x.is_finite() => s.serialize_f64(*x),
            _ => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<f64>::deserialize(d)
    }
}

/// `Some(x)` unless `x` is NaN.
pub(crate) fn known(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}
