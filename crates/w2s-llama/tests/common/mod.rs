//! What the llama.cpp tests share: the real models by name, and the three models of a
//! search.

use std::sync::Arc;

use w2s_core::{search, Models, SearchConfig, SearchError, SearchOutput};
use w2s_llama::{resolve_model, LlamaProposer, LlamaScorer, LoadOptions, Model};

/// A model that `scripts/fetch-models` provides, loaded (a clear failure if it is missing).
pub fn model(name: &str) -> Arc<Model> {
    let path = resolve_model(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models {name}",
        path.display()
    );
    Model::load(&path, LoadOptions::default()).unwrap()
}

/// A strong model and a guide pair on llama.cpp.
pub struct LocalModels {
    pub strong: LlamaProposer,
    pub tuned: LlamaScorer,
    pub untuned: LlamaScorer,
}

impl LocalModels {
    /// Runs one search.
    pub fn search(
        &mut self,
        config: &SearchConfig,
        prompt: &str,
    ) -> Result<SearchOutput, SearchError> {
        let models = Models {
            strong: &mut self.strong,
            tuned: &mut self.tuned,
            untuned: &mut self.untuned,
        };
        search(config, prompt, models)
    }
}
