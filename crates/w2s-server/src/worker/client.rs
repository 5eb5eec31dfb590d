//! Failures on their way to a client: the typed error behind one ([`Reason`]) and how it
//! is said to the client ([`ModelInfo::client_error`]): the model files named by the roles
//! they play, a llama.cpp limit in the request's fields.

use std::sync::Arc;

use w2s_llama::LlamaError;

use super::ModelInfo;

/// The typed error behind a failure, rendered for the client where it is answered
/// ([`ModelInfo::client_error`]).
#[derive(Debug, Clone)]
pub struct Reason(pub Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Reason {
    /// `e` on its way to a client.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Reason(Arc::new(e))
    }
}

impl From<String> for Reason {
    fn from(message: String) -> Self {
        let e: Box<dyn std::error::Error + Send + Sync> = message.into();
        Reason(e.into())
    }
}

impl ModelInfo {
    /// An error as a client may see it: the model files are named by the roles they play,
    /// and a llama.cpp limit says which request fields to change.
    pub fn client_error(&self, e: &(dyn std::error::Error + 'static)) -> String {
        self.client_error_naming(e, &|path| self.model_name(path))
    }

    /// [`ModelInfo::client_error`] with the model files named by `name`.
    pub fn client_error_naming(
        &self,
        e: &(dyn std::error::Error + 'static),
        name: &dyn Fn(&str) -> String,
    ) -> String {
        self.scrub_paths(request_words(e, name))
    }

    /// `text` with each model file's path replaced by the roles it plays.
    pub fn scrub_paths(&self, mut text: String) -> String {
        for (path, roles) in &self.paths {
            text = text.replace(path.as_str(), &format!("the {roles} model"));
        }
        text
    }

    fn model_name(&self, path: &str) -> String {
        match self.paths.iter().find(|(p, _)| p == path) {
            Some((_, roles)) => format!("the {roles} model"),
            None => path.to_string(),
        }
    }
}

/// `e`'s text with a llama.cpp limit inside it said in the request's words.
fn request_words(e: &(dyn std::error::Error + 'static), name: &dyn Fn(&str) -> String) -> String {
    let mut text = e.to_string();
    let mut at = Some(e);
    while let Some(err) = at {
        if let Some(own) = llama_error(err).and_then(|l| llama_client_text(l, name)) {
            let inner = err.to_string();
            text = if text.contains(&inner) {
                text.replace(&inner, &own)
            } else {
                own
            };
            break;
        }
        at = err.source();
    }
    text
}

/// The llama.cpp error in `err`, where it is one (directly or inside a backend error).
fn llama_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a LlamaError> {
    err.downcast_ref::<LlamaError>().or_else(|| {
        err.downcast_ref::<w2s_core::BackendError>()
            .and_then(|b| b.get_ref().downcast_ref::<LlamaError>())
    })
}

/// A llama.cpp limit in the request's words (`max_tokens`, `search.w * search.k`, `n`)
/// instead of the command line's; `None` for an error that names no setting.
fn llama_client_text(e: &LlamaError, name: &dyn Fn(&str) -> String) -> Option<String> {
    Some(match e {
        LlamaError::PromptTooLong {
            path,
            prompt_tokens,
            max_new,
            n_ctx_train,
        } => format!(
            "the prompt is {prompt_tokens} tokens for {}; with max_tokens {max_new} that \
             exceeds its context of {n_ctx_train} tokens: shorten the prompt or lower max_tokens",
            name(&path.display().to_string())
        ),
        LlamaError::Context { path, n_ctx } => format!(
            "llama.cpp could not create a context of {n_ctx} tokens for {}: out of memory? \
             lower W*K or max_tokens",
            name(&path.display().to_string())
        ),
        LlamaError::TooManyRows { rows, max } => format!(
            "{rows} rows is more than the llama.cpp backend's limit of {max}; lower \
             search.w * search.k or n"
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use w2s_core::{BackendError, Role, SearchError};
    use w2s_engine::EngineError;
    use w2s_llama::LlamaError;

    use super::request_words;

    fn named(path: &str) -> String {
        format!("the model at {path}")
    }

    #[test]
    fn a_prompt_too_long_is_said_in_the_request_s_fields_behind_its_role() {
        let e = EngineError::Local {
            role: Role::Tuned,
            source: LlamaError::PromptTooLong {
                path: PathBuf::from("/m/a.gguf"),
                prompt_tokens: 900,
                max_new: 200,
                n_ctx_train: 1024,
            },
        };
        assert_eq!(
            request_words(&e, &named),
            "tuned model: the prompt is 900 tokens for the model at /m/a.gguf; with max_tokens \
             200 that exceeds its context of 1024 tokens: shorten the prompt or lower max_tokens"
        );
    }

    #[test]
    fn too_many_rows_inside_a_search_error_names_the_search_fields() {
        let e = SearchError::Backend {
            role: Role::Strong,
            source: BackendError::from(LlamaError::TooManyRows {
                rows: 300,
                max: 256,
            }),
        };
        let text = request_words(&e, &named);
        assert!(
            text.ends_with(
                "300 rows is more than the llama.cpp backend's limit of 256; lower \
                 search.w * search.k or n"
            ),
            "{text}"
        );
        assert!(!text.contains("W*K"), "{text}");
    }

    #[test]
    fn an_error_with_no_limit_keeps_its_text() {
        let e = EngineError::input("the prompt is empty");
        assert_eq!(request_words(&e, &named), e.to_string());
    }
}
