//! The three models of a search on llama.cpp, for the tests that run whole searches.

use w2s_core::{search, Models, SearchConfig, SearchError, SearchOutput};
use w2s_llama::{LlamaProposer, LlamaScorer};

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
