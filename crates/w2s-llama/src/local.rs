//! The three models of a search, all local, loaded from GGUF files (a file used by two
//! roles is loaded once).

use std::path::PathBuf;

use w2s_core::{search, Models, PromptTemplate, SearchConfig, SearchError, SearchOutput};

use crate::error::LlamaError;
use crate::model::{LoadOptions, Model};
use crate::scorer::LlamaScorer;
use crate::strong::LlamaProposer;

/// Which files and templates to use.
#[derive(Debug, Clone)]
pub struct LocalSpec {
    /// Strong model file.
    pub strong: PathBuf,
    /// Tuned small model file.
    pub tuned: PathBuf,
    /// Untuned small model file.
    pub untuned: PathBuf,
    /// Strong model's template.
    pub strong_template: PromptTemplate,
    /// Tuned model's template.
    pub tuned_template: PromptTemplate,
    /// Untuned model's template.
    pub untuned_template: PromptTemplate,
    /// CPU threads per model.
    pub threads: usize,
    /// Load options (GPU offload).
    pub load: LoadOptions,
}

/// A strong model and a guide pair on llama.cpp.
pub struct LocalModels {
    /// The strong model.
    pub strong: LlamaProposer,
    /// The tuned small model.
    pub tuned: LlamaScorer,
    /// The untuned small model.
    pub untuned: LlamaScorer,
}

impl LocalModels {
    /// Loads the three models.
    pub fn load(spec: &LocalSpec) -> Result<Self, LlamaError> {
        let strong = Model::load(&spec.strong, spec.load)?;
        let tuned = Model::load(&spec.tuned, spec.load)?;
        let untuned = Model::load(&spec.untuned, spec.load)?;
        Ok(LocalModels {
            strong: LlamaProposer::new(strong, spec.strong_template.clone(), spec.threads),
            tuned: LlamaScorer::new(tuned, spec.tuned_template.clone(), spec.threads),
            untuned: LlamaScorer::new(untuned, spec.untuned_template.clone(), spec.threads),
        })
    }

    /// The models as the search takes them.
    pub fn models(&mut self) -> Models<'_> {
        Models {
            strong: &mut self.strong,
            tuned: &mut self.tuned,
            untuned: &mut self.untuned,
        }
    }

    /// Frees the three llama.cpp contexts (the models stay loaded).
    pub fn release_contexts(&mut self) {
        self.strong.release_context();
        self.tuned.release_context();
        self.untuned.release_context();
    }

    /// Runs one search.
    pub fn search(
        &mut self,
        config: &SearchConfig,
        prompt: &str,
    ) -> Result<SearchOutput, SearchError> {
        search(config, prompt, self.models())
    }
}
