//! Prompt-length checks against every local model's context, runnable on any thread
//! (e.g. before a request is admitted).

use std::sync::Arc;

use w2s_core::{ChatTurn, PromptTemplate, Role};
use w2s_llama::Model;

use crate::error::EngineError;

/// Checks that a prompt plus the new tokens fit each local model's context. Remote
/// models are checked by their engine, which refuses a request too long for it (a
/// [`w2s_remote::RemoteError::TooLong`], an input error).
#[derive(Clone)]
pub struct PromptCheck {
    /// Each role, its local model, its template and the template of a chat request.
    pub(crate) roles: Vec<(Role, Option<Arc<Model>>, PromptTemplate, PromptTemplate)>,
}

impl PromptCheck {
    /// The strong model's prompt tokens where it is local; an error if any local model's
    /// context is too small. CPU work (tokenisation): call it from a blocking thread.
    pub fn check(&self, prompt: &str, max_new: usize) -> Result<Option<usize>, EngineError> {
        Ok(self.check_turns(&[], prompt, max_new, false)?.strong)
    }

    /// [`PromptCheck::check`] for a prompt after earlier chat turns (see
    /// [`crate::SearchRequest::history`]).
    pub fn check_chat(
        &self,
        history: &[ChatTurn],
        prompt: &str,
        max_new: usize,
    ) -> Result<PromptTokens, EngineError> {
        self.check_turns(history, prompt, max_new, false)
    }

    /// [`PromptCheck::check_chat`] as [`crate::Engine::run`] renders a request: for a chat
    /// request (`chat`) a role with no template given reads it through its model's own
    /// chat template.
    pub fn check_turns(
        &self,
        history: &[ChatTurn],
        prompt: &str,
        max_new: usize,
        chat: bool,
    ) -> Result<PromptTokens, EngineError> {
        let mut tokens = PromptTokens::default();
        for (role, model, template, chat_template) in &self.roles {
            let template = if chat { chat_template } else { template };
            let template = template
                .with_history(history)
                .map_err(|e| EngineError::input(format!("the {role} model's {e}")))?;
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
                tokens.strong = Some(n);
            }
            tokens.local_total += n;
            tokens.largest = tokens.largest.max(n);
        }
        Ok(tokens)
    }
}

/// Prompt lengths of one request in the local models' tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptTokens {
    /// The strong model's, where it is local.
    pub strong: Option<usize>,
    /// Summed over the local models (the prompt work a search does here).
    pub local_total: usize,
    /// The longest of them.
    pub largest: usize,
}
