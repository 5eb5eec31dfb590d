//! Parts of an engine that a library caller supplies instead of a model w2s runs: a
//! scorer for the tuned or untuned role ([`crate::RoleSource::Custom`]), or a guide that
//! replaces the pair (e.g. Python objects).

use w2s_core::{BackendError, Guide, Role, ScoreRequest, Scorer};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::spec::EngineSpec;

/// The scorer of a role that a custom guide ([`CustomParts`]) makes unused: every
/// call is an internal error, so a search that reached it would say so.
pub struct UnusedScorer(pub Role);

impl Scorer for UnusedScorer {
    fn begin(&mut self, _: &str, _: usize, _: usize) -> Result<(), BackendError> {
        Err(self.error())
    }
    fn score(&mut self, _: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        Err(self.error())
    }
    fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> {
        Err(self.error())
    }
    fn tokens_evaluated(&self) -> u64 {
        0
    }
}

impl UnusedScorer {
    fn error(&self) -> BackendError {
        BackendError::internal(format!(
            "the {} model is not used: a custom guide ranks the rows",
            self.0
        ))
    }
}

/// Parts of an engine that a library caller supplies (e.g. Python objects): scorers for
/// the tuned or untuned role, or a guide that replaces the pair.
#[derive(Default)]
pub struct CustomParts {
    /// A scorer for a small-model role, with the label that names it in reports.
    pub scorers: Vec<(Role, String, Box<dyn Scorer + Send>)>,
    /// A guide that replaces the tuned / untuned pair, with its label.
    pub guide: Option<(String, Box<dyn Guide + Send>)>,
}

impl CustomParts {
    /// Names the custom roles in `run` (see [`crate::RunSettings::custom`]): an input
    /// error if a role is also given a model, or if a guide comes with a tuned or untuned
    /// model (it replaces them).
    pub fn name_in(&self, run: &mut crate::RunSettings) -> Result<(), EngineError> {
        if let Some((label, _)) = &self.guide {
            if run.tuned.is_some() || run.untuned.is_some() || !self.scorers.is_empty() {
                return Err(EngineError::input(format!(
                    "the guide {label} replaces the tuned / untuned pair: give no tuned or untuned model with it"
                )));
            }
            for role in [Role::Tuned, Role::Untuned] {
                run.custom.push((role, format!("unused (guide {label})")));
            }
        }
        for (role, label, _) in &self.scorers {
            if *role == Role::Strong {
                return Err(EngineError::input(format!(
                    "{label} cannot play the strong model: it must be a GGUF file or URL#MODEL"
                )));
            }
            if run.custom.iter().any(|(r, _)| r == role) {
                return Err(EngineError::input(format!(
                    "the {role} model is given twice"
                )));
            }
            run.custom.push((*role, label.clone()));
        }
        Ok(())
    }

    /// Builds the engine of `spec` (checked from settings [`CustomParts::name_in`]
    /// marked) with these parts.
    pub fn build(self, spec: &EngineSpec) -> Result<Engine, EngineError> {
        let CustomParts { scorers, guide } = self;
        let mut scorers: Vec<_> = scorers.into_iter().map(Some).collect();
        let with_guide = guide.is_some();
        let mut engine = Engine::build_with(spec, &mut |role| {
            if with_guide {
                return Some(Box::new(UnusedScorer(role)));
            }
            scorers
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|(r, _, _)| *r == role))
                .and_then(Option::take)
                .map(|(_, _, s)| s)
        })?;
        engine.set_guide(guide.map(|(_, g)| g));
        Ok(engine)
    }
}
