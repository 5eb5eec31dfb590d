//! The models that play each role: the strong model and each small guide model, local
//! (llama.cpp), remote (an OpenAI-compatible engine) or the caller's own scorer, behind
//! the search's traits.

use std::sync::Arc;

use w2s_core::{
    BackendError, Chunk, ExtendRequest, PromptTemplate, ProposalSetup, Proposer, Role,
    ScoreRequest, Scorer,
};
use w2s_llama::{LlamaProposer, LlamaScorer, Model};
use w2s_remote::{RemoteProposer, RemoteScorer};

use crate::error::EngineError;
use crate::spec::RoleSpec;

/// Supplies the scorer of a [`crate::RoleSource::Custom`] role when an engine is built.
pub type CustomScorers<'a> = &'a mut dyn FnMut(Role) -> Option<Box<dyn Scorer + Send>>;

/// The strong model: llama.cpp in this process, or a remote engine.
pub enum Strong {
    /// A GGUF model on llama.cpp.
    Local(LlamaProposer),
    /// An OpenAI-compatible engine.
    Remote(RemoteProposer),
}

/// A small guide model: llama.cpp in this process, a remote engine, or a scorer the
/// caller supplies.
pub enum SmallModel {
    /// A GGUF model on llama.cpp.
    Local(LlamaScorer),
    /// An OpenAI-compatible engine that echoes log-probabilities.
    Remote(RemoteScorer),
    /// Any [`Scorer`] (e.g. a Python object), given to [`crate::Engine::build_with`].
    Custom(Box<dyn Scorer + Send>),
}

impl Proposer for Strong {
    fn begin(&mut self, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        match self {
            Strong::Local(p) => p.begin(setup),
            Strong::Remote(p) => p.begin(setup),
        }
    }
    fn extend(&mut self, requests: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError> {
        match self {
            Strong::Local(p) => p.extend(requests),
            Strong::Remote(p) => p.extend(requests),
        }
    }
    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        match self {
            Strong::Local(p) => p.reorder(parents),
            Strong::Remote(p) => p.reorder(parents),
        }
    }
}

impl Scorer for SmallModel {
    fn begin(&mut self, prompt: &str, rows: usize, max_new: usize) -> Result<(), BackendError> {
        match self {
            SmallModel::Local(s) => s.begin(prompt, rows, max_new),
            SmallModel::Remote(s) => s.begin(prompt, rows, max_new),
            SmallModel::Custom(s) => s.begin(prompt, rows, max_new),
        }
    }
    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        match self {
            SmallModel::Local(s) => s.score(requests),
            SmallModel::Remote(s) => s.score(requests),
            SmallModel::Custom(s) => s.score(requests),
        }
    }
    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        match self {
            SmallModel::Local(s) => s.reorder(parents),
            SmallModel::Remote(s) => s.reorder(parents),
            SmallModel::Custom(s) => s.reorder(parents),
        }
    }
    fn tokens_evaluated(&self) -> u64 {
        match self {
            SmallModel::Local(s) => s.tokens_evaluated(),
            SmallModel::Remote(s) => s.tokens_evaluated(),
            SmallModel::Custom(s) => s.tokens_evaluated(),
        }
    }
}

impl Strong {
    /// The llama.cpp proposer of a local strong model.
    pub fn local(&self) -> Option<&LlamaProposer> {
        match self {
            Strong::Local(p) => Some(p),
            Strong::Remote(_) => None,
        }
    }

    pub(crate) fn local_mut(&mut self) -> Option<&mut LlamaProposer> {
        match self {
            Strong::Local(p) => Some(p),
            Strong::Remote(_) => None,
        }
    }

    pub(crate) fn set_template(&mut self, template: PromptTemplate) {
        match self {
            Strong::Local(p) => p.set_template(template),
            Strong::Remote(p) => p.set_template(template),
        }
    }

    pub(crate) fn requests_sent(&self) -> u64 {
        match self {
            Strong::Local(_) => 0,
            Strong::Remote(p) => p.requests_sent(),
        }
    }
}

impl SmallModel {
    /// The llama.cpp scorer of a local guide model.
    pub fn local(&self) -> Option<&LlamaScorer> {
        match self {
            SmallModel::Local(s) => Some(s),
            SmallModel::Remote(_) | SmallModel::Custom(_) => None,
        }
    }

    /// Another scorer on the same model (a local one gets a context of its own).
    pub(crate) fn replica(
        &self,
        role: Role,
        spec: &RoleSpec,
        threads: usize,
    ) -> Result<SmallModel, EngineError> {
        Ok(match self {
            SmallModel::Local(s) => SmallModel::Local(LlamaScorer::new(
                s.model().clone(),
                spec.template.clone(),
                threads,
            )),
            SmallModel::Remote(s) => SmallModel::Remote(
                s.replica()
                    .map_err(|source| EngineError::Remote { role, source })?,
            ),
            SmallModel::Custom(_) => {
                return Err(EngineError::input(format!(
                    "an engine whose {role} model is {} cannot be replicated",
                    spec.describe()
                )))
            }
        })
    }

    pub(crate) fn set_template(&mut self, template: PromptTemplate) {
        match self {
            SmallModel::Local(s) => s.set_template(template),
            SmallModel::Remote(s) => s.set_template(template),
            SmallModel::Custom(_) => {}
        }
    }

    pub(crate) fn local_mut(&mut self) -> Option<&mut LlamaScorer> {
        match self {
            SmallModel::Local(s) => Some(s),
            SmallModel::Remote(_) | SmallModel::Custom(_) => None,
        }
    }

    pub(crate) fn local_model(&self) -> Option<&Arc<Model>> {
        self.local().map(LlamaScorer::model)
    }
    pub(crate) fn requests_sent(&self) -> u64 {
        match self {
            SmallModel::Local(_) | SmallModel::Custom(_) => 0,
            SmallModel::Remote(s) => s.requests_sent(),
        }
    }
}
