//! The three models of a search, built from an [`EngineSpec`] for any mix of local and
//! remote roles.

use std::sync::Arc;

use w2s_core::{
    search_with_progress, BackendError, Chunk, ExtendRequest, Models, Progress, PromptTemplate,
    ProposalSetup, Proposer, Role, ScoreRequest, Scorer, SearchConfig, SearchOutput,
};
use w2s_llama::{LlamaProposer, LlamaScorer, Model};
use w2s_remote::{RemoteProposer, RemoteScorer};

use crate::error::EngineError;
use crate::spec::{EngineSpec, RoleSource, RoleSpec, ROLES};

/// The strong model: llama.cpp in this process, or a remote engine.
pub enum Strong {
    /// A GGUF model on llama.cpp.
    Local(LlamaProposer),
    /// An OpenAI-compatible engine.
    Remote(RemoteProposer),
}

/// A small guide model: llama.cpp in this process, or a remote engine.
pub enum Guide {
    /// A GGUF model on llama.cpp.
    Local(LlamaScorer),
    /// An OpenAI-compatible engine that echoes log-probabilities.
    Remote(RemoteScorer),
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

impl Scorer for Guide {
    fn begin(&mut self, prompt: &str, rows: usize, max_new: usize) -> Result<(), BackendError> {
        match self {
            Guide::Local(s) => s.begin(prompt, rows, max_new),
            Guide::Remote(s) => s.begin(prompt, rows, max_new),
        }
    }
    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        match self {
            Guide::Local(s) => s.score(requests),
            Guide::Remote(s) => s.score(requests),
        }
    }
    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        match self {
            Guide::Local(s) => s.reorder(parents),
            Guide::Remote(s) => s.reorder(parents),
        }
    }
    fn tokens_evaluated(&self) -> u64 {
        match self {
            Guide::Local(s) => s.tokens_evaluated(),
            Guide::Remote(s) => s.tokens_evaluated(),
        }
    }
}

impl Guide {
    fn local_model(&self) -> Option<&Arc<Model>> {
        match self {
            Guide::Local(s) => Some(s.model()),
            Guide::Remote(_) => None,
        }
    }
    fn requests_sent(&self) -> u64 {
        match self {
            Guide::Local(_) => 0,
            Guide::Remote(s) => s.requests_sent(),
        }
    }
}

/// The strong model and the guide pair, ready to search. Local models sharing a file
/// are loaded once.
pub struct Engine {
    /// The strong model.
    pub strong: Strong,
    /// The small tuned model.
    pub tuned: Guide,
    /// The small untuned model.
    pub untuned: Guide,
    spec: EngineSpec,
}

impl Engine {
    /// Loads the local models and sets up the remote ones (no request is sent yet).
    pub fn build(spec: &EngineSpec) -> Result<Engine, EngineError> {
        let load = |role: Role, r: &RoleSpec| -> Result<Option<Arc<Model>>, EngineError> {
            match &r.source {
                RoleSource::Local(path) => Model::load(path, spec.load)
                    .map(Some)
                    .map_err(|source| EngineError::Local { role, source }),
                RoleSource::Remote { .. } => Ok(None),
            }
        };
        let strong = match (&spec.strong.source, load(Role::Strong, &spec.strong)?) {
            (_, Some(m)) => Strong::Local(LlamaProposer::new(
                m,
                spec.strong.template.clone(),
                spec.threads,
            )),
            (RoleSource::Remote { endpoint, .. }, None) => Strong::Remote(
                RemoteProposer::new((**endpoint).clone(), spec.strong.template.clone()).map_err(
                    |source| EngineError::Remote {
                        role: Role::Strong,
                        source,
                    },
                )?,
            ),
            (RoleSource::Local(_), None) => unreachable!("a local role loads a model"),
        };
        let guide = |role: Role, r: &RoleSpec| -> Result<Guide, EngineError> {
            Ok(match (&r.source, load(role, r)?) {
                (_, Some(m)) => Guide::Local(LlamaScorer::new(m, r.template.clone(), spec.threads)),
                (RoleSource::Remote { endpoint, .. }, None) => Guide::Remote(
                    RemoteScorer::new((**endpoint).clone(), r.template.clone())
                        .map_err(|source| EngineError::Remote { role, source })?,
                ),
                (RoleSource::Local(_), None) => unreachable!("a local role loads a model"),
            })
        };
        Ok(Engine {
            tuned: guide(Role::Tuned, &spec.tuned)?,
            untuned: guide(Role::Untuned, &spec.untuned)?,
            strong,
            spec: spec.clone(),
        })
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &EngineSpec {
        &self.spec
    }

    /// The models as the search takes them.
    pub fn models(&mut self) -> Models<'_> {
        Models {
            strong: &mut self.strong,
            tuned: &mut self.tuned,
            untuned: &mut self.untuned,
        }
    }

    /// Runs one search.
    pub fn search(
        &mut self,
        config: &SearchConfig,
        prompt: &str,
    ) -> Result<SearchOutput, EngineError> {
        self.search_with_progress(config, prompt, &mut |_| true)
    }

    /// Runs one search; `progress` is called after each selection and may return `false`
    /// to cancel it.
    pub fn search_with_progress(
        &mut self,
        config: &SearchConfig,
        prompt: &str,
        progress: &mut dyn FnMut(&Progress<'_>) -> bool,
    ) -> Result<SearchOutput, EngineError> {
        Ok(search_with_progress(
            config,
            prompt,
            self.models(),
            progress,
        )?)
    }

    /// The loaded model of a local role.
    pub fn local_model(&self, role: Role) -> Option<&Arc<Model>> {
        match role {
            Role::Strong => match &self.strong {
                Strong::Local(p) => Some(p.model()),
                Strong::Remote(_) => None,
            },
            Role::Tuned => self.tuned.local_model(),
            Role::Untuned => self.untuned.local_model(),
        }
    }

    /// A role's template.
    pub fn template(&self, role: Role) -> &PromptTemplate {
        &self.spec.role(role).template
    }

    /// Strong-model prompt tokens of the last search, where the strong model is local.
    pub fn strong_prompt_tokens(&self) -> Option<usize> {
        match &self.strong {
            Strong::Local(p) => Some(p.last_prompt_tokens()),
            Strong::Remote(_) => None,
        }
    }

    /// HTTP requests sent to remote engines so far, per role (retries included).
    pub fn requests_sent(&self) -> [u64; 3] {
        let strong = match &self.strong {
            Strong::Local(_) => 0,
            Strong::Remote(p) => p.requests_sent(),
        };
        [
            strong,
            self.tuned.requests_sent(),
            self.untuned.requests_sent(),
        ]
    }

    /// Frees the local llama.cpp contexts (the models stay loaded).
    pub fn release_contexts(&mut self) {
        if let Strong::Local(p) = &mut self.strong {
            p.release_context();
        }
        for g in [&mut self.tuned, &mut self.untuned] {
            if let Guide::Local(s) = g {
                s.release_context();
            }
        }
    }

    /// The log-probability of `text` as a whole response to `prompt` under a local guide
    /// model (the end-of-sequence term included if `ended`), in one pass (EFT's responses
    /// are scored this way).
    pub fn score_text(
        &mut self,
        role: Role,
        prompt: &str,
        text: &str,
        ended: bool,
    ) -> Result<f64, EngineError> {
        let guide = match role {
            Role::Tuned => &mut self.tuned,
            Role::Untuned => &mut self.untuned,
            Role::Strong => {
                return Err(EngineError::input(
                    "score_text scores with a guide model, not the strong model",
                ))
            }
        };
        let wrap = |source: BackendError| {
            EngineError::Search(w2s_core::SearchError::Backend { role, source })
        };
        let Guide::Local(s) = guide else {
            return Err(EngineError::input(format!(
                "scoring a whole text in one pass needs the {role} model local"
            )));
        };
        let score = w2s_llama::score_once(s, prompt, text, ended).map_err(wrap)?;
        Ok(score)
    }

    /// A checker of prompt lengths that can run on any thread.
    pub fn prompt_check(&self) -> PromptCheck {
        PromptCheck {
            roles: ROLES
                .into_iter()
                .map(|r| (r, self.local_model(r).cloned(), self.template(r).clone()))
                .collect(),
        }
    }
}

/// Checks that a prompt plus the new tokens fit each local model's context. Remote
/// models are checked by their engine, which refuses a request too long for it (a
/// [`w2s_remote::RemoteError::TooLong`], an input error).
#[derive(Clone)]
pub struct PromptCheck {
    roles: Vec<(Role, Option<Arc<Model>>, PromptTemplate)>,
}

impl PromptCheck {
    /// The strong model's prompt tokens where it is local; an error if any local model's
    /// context is too small. CPU work (tokenisation): call it from a blocking thread.
    pub fn check(&self, prompt: &str, max_new: usize) -> Result<Option<usize>, EngineError> {
        let mut strong_tokens = None;
        for (role, model, template) in &self.roles {
            let Some(model) = model else { continue };
            let local = |source| EngineError::Local {
                role: *role,
                source,
            };
            let filled = template.fill(prompt)?;
            let text = model.render(&filled).map_err(local)?;
            let n = model.tokenize_prompt(&text).len();
            model.check_fits(n, max_new).map_err(local)?;
            if *role == Role::Strong {
                strong_tokens = Some(n);
            }
        }
        Ok(strong_tokens)
    }
}
