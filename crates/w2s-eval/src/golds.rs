//! The gold rewards an evaluation can use: VADER and a model judge.

use w2s_core::{BackendError, GoldReward};

use crate::error::{usage, EvalError};

/// VADER's compound sentiment score of prompt + response, in [-1, 1] (the lexicon is
/// built into the `vader_sentiment` crate).
pub struct Vader {
    analyzer: vader_sentiment::SentimentIntensityAnalyzer<'static>,
}

impl Vader {
    pub fn new() -> Self {
        Vader {
            analyzer: vader_sentiment::SentimentIntensityAnalyzer::new(),
        }
    }

    /// The compound score of `text`.
    pub fn compound(&self, text: &str) -> Result<f64, BackendError> {
        // The crate indexes tokens freely; a panic on odd text becomes an error here.
        let scores = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.analyzer.polarity_scores(text).get("compound").copied()
        }))
        .map_err(|_| "VADER failed on this text")?;
        scores.ok_or_else(|| "VADER gave no compound score".into())
    }
}

impl Default for Vader {
    fn default() -> Self {
        Vader::new()
    }
}

impl GoldReward for Vader {
    fn name(&self) -> &str {
        "vader"
    }

    fn score(&mut self, prompt: &str, response: &str) -> Result<f64, BackendError> {
        self.compound(&format!("{prompt}{response}"))
    }
}

/// A model judge ([`w2s_llama::Judge`]) as a gold reward: its expected rating.
pub struct JudgeGold(pub w2s_llama::Judge);

impl GoldReward for JudgeGold {
    fn name(&self) -> &str {
        "judge"
    }

    fn score(&mut self, prompt: &str, response: &str) -> Result<f64, BackendError> {
        Ok(self.0.rate(prompt, response)?)
    }
}

/// The judge model of the `judge` and `pairwise` gold rewards when none is named (a name
/// `scripts/fetch-models` knows).
pub const DEFAULT_JUDGE: &str = "qwen2.5-coder-1.5b-instruct";

/// A gold reward named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoldKind {
    /// VADER's compound sentiment score.
    Vader,
    /// The judge's expected 1-9 rating of one response.
    Judge,
    /// The judge's probability that the response beats the reference method's response
    /// to the same (seed, prompt), both orders averaged (see [`w2s_llama::PairJudge`]).
    Pairwise,
}

impl GoldKind {
    /// The name in result files and reports.
    pub fn name(self) -> &'static str {
        match self {
            GoldKind::Vader => "vader",
            GoldKind::Judge => "judge",
            GoldKind::Pairwise => "pairwise",
        }
    }

    /// Whether it needs the judge model.
    pub fn uses_judge(self) -> bool {
        matches!(self, GoldKind::Judge | GoldKind::Pairwise)
    }
}

/// Parses `--gold vader,judge,pairwise`.
pub fn parse_golds(spec: &str) -> Result<Vec<GoldKind>, EvalError> {
    let mut out = Vec::new();
    for name in spec.split(',').map(str::trim) {
        let kind = match name {
            "vader" => GoldKind::Vader,
            "judge" => GoldKind::Judge,
            "pairwise" => GoldKind::Pairwise,
            other => {
                return Err(usage(format!(
                    "--gold: unknown gold reward '{other}': use vader, judge and/or pairwise"
                )))
            }
        };
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vader_ranks_positive_above_negative_text() {
        let mut v = Vader::new();
        let good = v
            .score("This movie was", " wonderful, I loved it!")
            .unwrap();
        let bad = v
            .score("This movie was", " awful and boring. I hated it.")
            .unwrap();
        let flat = v.score("The film is", " ninety minutes long.").unwrap();
        assert!(good > 0.5 && bad < -0.5, "{good} {bad}");
        assert_eq!(flat, 0.0);
    }

    #[test]
    fn vader_survives_odd_text() {
        let v = Vader::new();
        for t in [
            "",
            "!!!",
            "not",
            "never so",
            "without doubt",
            "at least",
            "kind of",
            "😀 no",
            "but",
        ] {
            let s = v.compound(t).unwrap();
            assert!((-1.0..=1.0).contains(&s), "{t}: {s}");
        }
    }

    #[test]
    fn parses_gold_names() {
        assert_eq!(
            parse_golds("vader, judge,pairwise,vader").unwrap(),
            vec![GoldKind::Vader, GoldKind::Judge, GoldKind::Pairwise]
        );
        assert!(parse_golds("rm").unwrap_err().to_string().contains("'rm'"));
    }
}
