//! Scoring a finished line with the run's gold rewards: the per-response rewards (VADER,
//! the rating judge, a caller's own) and the pairwise judge, which compares the line's
//! response with the reference method's response to the same (seed, prompt).

use std::time::Instant;

use w2s_core::GoldReward;
use w2s_llama::{Judge, LoadOptions, Model, PairJudge, Rubric};

use crate::error::EvalError;
use crate::golds::{GoldKind, JudgeGold, Vader};
use crate::outdir::model_name;
use crate::store::{GoldScore, PairScore, Record};

/// One gold reward of the run, in the order the records list them.
pub(crate) enum Gold {
    /// A reward of one response.
    Reward(Box<dyn GoldReward + Send>),
    /// The pairwise judge's P(better than the reference).
    Pairwise,
}

/// The pairwise judge and what it compares against.
pub(crate) struct Pairwise {
    pub judge: PairJudge,
    /// The judge model's file name (recorded with each verdict).
    pub judge_name: String,
    /// The reference method.
    pub reference: String,
}

/// Every gold reward of a run.
pub(crate) struct Scoring {
    pub golds: Vec<Gold>,
    pub pairwise: Option<Pairwise>,
}

impl Scoring {
    /// The caller's gold rewards, then the named ones; the judge models are loaded now.
    pub fn build(
        custom: Vec<Box<dyn GoldReward + Send>>,
        golds: &[GoldKind],
        rubric: Rubric,
        judge: &str,
        load: LoadOptions,
        threads: usize,
        reference: Option<String>,
    ) -> Result<Scoring, EvalError> {
        let mut scoring = Scoring {
            golds: custom.into_iter().map(Gold::Reward).collect(),
            pairwise: None,
        };
        let judge_model = || -> Result<std::sync::Arc<Model>, EvalError> {
            Ok(Model::load(&w2s_llama::resolve_model(judge), load)?)
        };
        for g in golds {
            scoring.golds.push(match g {
                GoldKind::Vader => Gold::Reward(Box::new(Vader::new())),
                GoldKind::Judge => Gold::Reward(Box::new(JudgeGold(Judge::new(
                    judge_model()?,
                    rubric,
                    threads,
                )?))),
                GoldKind::Pairwise => {
                    let judge = PairJudge::new(judge_model()?, threads)?;
                    let judge_name = model_name(&judge.path().display().to_string());
                    scoring.pairwise = Some(Pairwise {
                        judge,
                        judge_name,
                        reference: reference.clone().unwrap_or_default(),
                    });
                    Gold::Pairwise
                }
            });
        }
        Ok(scoring)
    }

    /// The gold names a finished line carries, in order.
    pub fn names(&self) -> Vec<String> {
        self.golds
            .iter()
            .map(|g| match g {
                Gold::Reward(r) => r.name().to_string(),
                Gold::Pairwise => crate::golds::GoldKind::Pairwise.name().to_string(),
            })
            .collect()
    }

    /// Whether `rec` carries every gold reward of this run (and, for the pairwise one,
    /// a verdict against this reference by this judge).
    pub fn is_scored(&self, rec: &Record) -> bool {
        let names: Vec<&str> = rec.gold.iter().map(|g| g.name.as_str()).collect();
        names == self.names()
            && self.pairwise.as_ref().is_none_or(|p| {
                rec.pair
                    .as_ref()
                    .is_some_and(|v| v.reference == p.reference && v.judge == p.judge_name)
            })
    }

    /// Scores `rec` with every gold reward of the run, keeping the scores it already has
    /// of the same rewards (and dropping the others);
    /// `reference` is the reference method's record of the same (seed, prompt).
    pub fn score(&mut self, rec: &mut Record, reference: Option<&Record>) -> Result<(), EvalError> {
        let t = Instant::now();
        // Scores the line already has are kept: a rerun that adds a gold reward does not
        // ask the judge again.
        let old_golds = std::mem::take(&mut rec.gold);
        let old_pair = rec.pair.take().filter(|v| {
            self.pairwise
                .as_ref()
                .is_some_and(|p| v.reference == p.reference && v.judge == p.judge_name)
        });
        let kept = |name: &str| old_golds.iter().find(|g| g.name == name).map(|g| g.value);
        let mut scored_anew = false;
        for g in self.golds.iter_mut() {
            let (name, value) = match g {
                Gold::Reward(r) if kept(r.name()).is_some() => {
                    (r.name().to_string(), kept(r.name()).unwrap_or(f64::NAN))
                }
                Gold::Pairwise if old_pair.is_some() => {
                    rec.pair = old_pair.clone();
                    let v = old_pair
                        .as_ref()
                        .map_or(f64::NAN, |v| 0.5 * (v.first + v.second));
                    (crate::golds::GoldKind::Pairwise.name().to_string(), v)
                }
                Gold::Reward(r) => {
                    scored_anew = true;
                    let value = r.score(&rec.prompt, &rec.response).map_err(|e| {
                        EvalError::Internal(format!("gold reward {}: {e}", r.name()))
                    })?;
                    (r.name().to_string(), value)
                }
                Gold::Pairwise => {
                    scored_anew = true;
                    let p = self.pairwise.as_mut().ok_or_else(|| {
                        EvalError::Internal("the pairwise judge was not set up".into())
                    })?;
                    let verdict = judge_pair(p, rec, reference)?;
                    let value = 0.5 * (verdict.first + verdict.second);
                    rec.pair = Some(verdict);
                    (crate::golds::GoldKind::Pairwise.name().to_string(), value)
                }
            };
            rec.gold.push(GoldScore { name, value });
        }
        if scored_anew {
            rec.timings.gold_s = t.elapsed().as_secs_f64();
        }
        Ok(())
    }
}

fn judge_pair(
    p: &mut Pairwise,
    rec: &Record,
    reference: Option<&Record>,
) -> Result<PairScore, EvalError> {
    let reference = if rec.method == p.reference {
        Some(rec)
    } else {
        reference
    };
    let reference = reference.ok_or_else(|| {
        EvalError::Internal(format!(
            "no {} line for seed {} prompt {} to judge {} against",
            p.reference, rec.seed, rec.prompt_id, rec.method
        ))
    })?;
    let mut verdict = PairScore {
        reference: p.reference.clone(),
        judge: p.judge_name.clone(),
        first: 0.5,
        second: 0.5,
        answer_mass: f64::NAN,
        identical: true,
        reference_chars: reference.response.chars().count(),
    };
    if rec.method != reference.method && rec.response != reference.response {
        let v = p
            .judge
            .compare(&rec.prompt, &rec.response, &reference.response)?;
        verdict.first = v.a_first;
        verdict.second = v.a_second;
        verdict.answer_mass = v.answer_mass;
        verdict.identical = false;
    }
    Ok(verdict)
}
