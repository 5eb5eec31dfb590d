//! What only local (llama.cpp) models have: their loaded files, the memory of their
//! contexts, their work profiles and a prompt-length check against their contexts. The
//! search itself goes through [`Engine::run`]; a front end that manages memory (the
//! server) or reports local work (the bench) uses these.

use std::sync::Arc;

use w2s_core::Role;
use w2s_llama::{LlamaProposer, LlamaScorer, Model, ScorerProfile};

use crate::engine::{request_template, Engine};
use crate::prompt_check::PromptCheck;
use crate::roles::SmallModel;
use crate::spec::ROLES;

/// The local-only operations of an engine.
pub trait LocalModels {
    /// The work profiles of the local guide models (tuned, untuned) since their last
    /// search began. Where both halves are one twin guide, its work split between them as
    /// their time is.
    fn scorer_profiles(&self) -> [Option<ScorerProfile>; 2];
    /// The loaded model of a local role.
    fn local_model(&self, role: Role) -> Option<&Arc<Model>>;
    /// Strong-model prompt tokens of the last search, where the strong model is local.
    fn strong_prompt_tokens(&self) -> Option<usize>;
    /// Frees each local llama.cpp context that holds more than `max_tokens` tokens (a
    /// context grows to the largest request seen and would keep that memory); the next
    /// search makes a new one of its size. Whether any was freed.
    fn shrink_contexts(&mut self, max_tokens: usize) -> bool;
    /// Frees the local llama.cpp contexts (the models stay loaded).
    fn release_contexts(&mut self);
    /// A checker of prompt lengths that can run on any thread.
    fn prompt_check(&self) -> PromptCheck;
}

impl LocalModels for Engine {
    fn scorer_profiles(&self) -> [Option<ScorerProfile>; 2] {
        if let Some(t) = self.twin.as_ref().filter(|_| self.twin_ready) {
            return t.half_profiles().map(Some);
        }
        [&self.tuned, &self.untuned].map(|m| m.local().map(LlamaScorer::profile))
    }

    fn local_model(&self, role: Role) -> Option<&Arc<Model>> {
        self.role_model(role)
    }

    fn strong_prompt_tokens(&self) -> Option<usize> {
        self.strong.local().map(LlamaProposer::last_prompt_tokens)
    }

    fn shrink_contexts(&mut self, max_tokens: usize) -> bool {
        let mut freed = false;
        if let Some(p) = self.strong.local_mut() {
            if p.context_tokens() > max_tokens {
                p.release_context();
                freed = true;
            }
        }
        for s in self.small_models().filter_map(SmallModel::local_mut) {
            if s.context_tokens() > max_tokens {
                s.release_context();
                freed = true;
            }
        }
        if let Some(t) = self
            .twin
            .as_mut()
            .filter(|t| t.context_tokens() > max_tokens)
        {
            t.release_context();
            freed = true;
        }
        freed
    }

    fn release_contexts(&mut self) {
        if let Some(p) = self.strong.local_mut() {
            p.release_context();
        }
        for s in self.small_models().filter_map(SmallModel::local_mut) {
            s.release_context();
        }
        if let Some(t) = &mut self.twin {
            t.release_context();
        }
    }

    fn prompt_check(&self) -> PromptCheck {
        PromptCheck {
            roles: ROLES
                .into_iter()
                .map(|r| {
                    let model = self.role_model(r).cloned();
                    let chat = request_template(&self.spec, r, model.as_deref(), true);
                    (r, model, self.template(r).clone(), chat)
                })
                .collect(),
        }
    }
}
