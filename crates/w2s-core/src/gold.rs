//! Gold rewards: the measure an evaluation reports, which the search never sees.

use crate::error::BackendError;

/// Something that scores a finished response to a prompt (a sentiment lexicon, a judge
/// model, a reward model behind an HTTP API). Higher is better.
pub trait GoldReward {
    /// A short name for reports and result files (e.g. `vader`, `judge`).
    fn name(&self) -> &str;
    /// The reward of `response` to `prompt`.
    fn score(&mut self, prompt: &str, response: &str) -> Result<f64, BackendError>;
}
