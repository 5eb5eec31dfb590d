//! The task an evaluation's prompts are for.

use crate::golds::GoldKind;

/// What the prompts are, which sets the default templates and gold rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Task {
    /// Continue movie reviews positively; gold: VADER of prompt + response.
    Sentiment,
    /// Follow instructions through each model's chat template; gold: the pairwise judge
    /// against the reference method.
    Instruct,
}

impl Task {
    /// The task's name in result files.
    pub fn name(self) -> &'static str {
        match self {
            Task::Sentiment => "sentiment",
            Task::Instruct => "instruct",
        }
    }

    /// The gold rewards used when none are named.
    pub fn default_golds(self) -> Vec<GoldKind> {
        match self {
            Task::Sentiment => vec![GoldKind::Vader],
            Task::Instruct => vec![GoldKind::Pairwise],
        }
    }
}
