//! The strong model serving several searches from one llama.cpp context
//! ([`w2s_core::ProposerPool`], driven by [`w2s_core::search_many`]): each search's rows
//! in sequence ids of their own, its prompt decoded once and shared by its rows, and the
//! rows of every search due for a chunk sampled in one decode per token.

use std::sync::Arc;

use llama_cpp_2::llama_batch::LlamaBatch;
use w2s_core::{
    BackendError, Chunk, ExtendRequest, Interrupt, PromptTemplate, ProposalSetup, ProposerPool,
};

use crate::error::LlamaError;
use crate::model::{Model, ModelContext};
use crate::seqs::SeqBanks;
use crate::strong::{extend_searches, prompt_tokens, Search};

/// Sequence ids one llama.cpp context has (llama.cpp's `LLAMA_MAX_SEQ`).
const MAX_SEQ: usize = 256;

/// Up to `searches` searches on one context of the strong model; see the module docs.
pub struct LlamaProposerPool {
    model: Arc<Model>,
    template: PromptTemplate,
    engine: ModelContext,
    batch: LlamaBatch<'static>,
    searches: Vec<Option<Search>>,
    rows: usize,
    max_new: usize,
    prompt_tokens: usize,
    interrupt: Option<Arc<Interrupt>>,
}

impl LlamaProposerPool {
    /// A context for `searches` searches at once, each of up to `rows` rows (W * K) of up
    /// to `max_new` new tokens after a templated prompt of up to `prompt_tokens` tokens,
    /// read through `template`, on `threads` CPU threads. Each search takes two banks of
    /// `rows` sequence ids of the context's 256.
    pub fn new(
        model: Arc<Model>,
        template: PromptTemplate,
        threads: usize,
        searches: usize,
        rows: usize,
        max_new: usize,
        prompt_tokens: usize,
    ) -> Result<Self, LlamaError> {
        let (searches, rows) = (searches.max(1), rows.max(1));
        if searches * 2 * rows > MAX_SEQ {
            return Err(LlamaError::PoolLimit(format!(
                "{searches} searches of {rows} rows need {} sequence ids; one llama.cpp context has {MAX_SEQ}: lower the searches in flight or W*K",
                searches * 2 * rows
            )));
        }
        let n_ctx = searches * (prompt_tokens + rows * max_new + 8);
        let n_batch = 512.max(searches * rows);
        let engine = ModelContext::new(
            model.clone(),
            u32::try_from(n_ctx).map_err(|_| LlamaError::Usage("context too large"))?,
            (searches * 2 * rows) as u32,
            n_batch as u32,
            threads.max(1) as i32,
        )?;
        Ok(LlamaProposerPool {
            model,
            template,
            engine,
            batch: LlamaBatch::new(n_batch, 1),
            searches: (0..searches).map(|_| None).collect(),
            rows,
            max_new,
            prompt_tokens,
            interrupt: None,
        })
    }

    /// Checks `interrupt` between pieces of long work (each micro-batch of a prompt, each
    /// token's decode): a cancelled set of searches stops within one piece.
    pub fn set_interrupt(&mut self, interrupt: Option<Arc<Interrupt>>) {
        self.interrupt = interrupt;
    }

    /// The most searches of `rows` rows one pool can hold (each takes two banks of
    /// `rows` of a context's 256 sequence ids); 0 where one search is too wide.
    pub fn max_searches(rows: usize) -> usize {
        MAX_SEQ / (2 * rows.max(1))
    }

    /// Searches the pool holds at once.
    pub fn capacity(&self) -> usize {
        self.searches.len()
    }

    /// Reads the prompts of the searches begun from now on through `template` (a
    /// server's requests each bring their chat history and template).
    pub fn set_template(&mut self, template: PromptTemplate) {
        self.template = template;
    }

    /// Whether a search of `rows` rows (W * K), `max_new` new tokens and a templated
    /// prompt of `prompt_tokens` tokens fits the pool as it was made.
    pub fn fits(&self, rows: usize, max_new: usize, prompt_tokens: usize) -> bool {
        rows <= self.rows && max_new <= self.max_new && prompt_tokens <= self.prompt_tokens
    }

    /// Tokens of cache the pool's context holds (its memory, whatever runs).
    pub fn context_tokens(&self) -> usize {
        self.engine.ctx.n_ctx() as usize
    }

    fn begin_inner(
        &mut self,
        search: usize,
        setup: &ProposalSetup<'_>,
    ) -> Result<(), BackendError> {
        if search >= self.searches.len() {
            return Err(LlamaError::PoolLimit(format!(
                "search {search} of a pool of {}",
                self.searches.len()
            ))
            .into());
        }
        if setup.rows > self.rows || setup.max_new_tokens > self.max_new {
            return Err(LlamaError::PoolLimit(format!(
                "a search of {} rows and {} new tokens in a pool made for {} rows and {} tokens",
                setup.rows, setup.max_new_tokens, self.rows, self.max_new
            ))
            .into());
        }
        let prompt = prompt_tokens(&self.model, &self.template, setup)?;
        if prompt.len() > self.prompt_tokens {
            return Err(LlamaError::PoolLimit(format!(
                "the prompt is {} tokens; the pool was made for prompts of at most {}",
                prompt.len(),
                self.prompt_tokens
            ))
            .into());
        }
        self.end(search);
        let banks = SeqBanks::at(search * 2 * self.rows, setup.rows);
        let ctx = &mut self.engine.ctx;
        let interrupt = self.interrupt.as_deref();
        let started = Search::start(
            ctx,
            &mut self.batch,
            &prompt,
            setup,
            banks,
            false,
            interrupt,
        )?;
        self.searches[search] = Some(started);
        Ok(())
    }

    fn extend_inner(
        &mut self,
        requests: &mut [(usize, Vec<ExtendRequest<'_>>)],
    ) -> Result<Vec<Vec<Chunk>>, LlamaError> {
        let mut slots: Vec<Option<&mut Search>> =
            self.searches.iter_mut().map(Option::as_mut).collect();
        let mut jobs = Vec::with_capacity(requests.len());
        for (search, reqs) in requests.iter_mut() {
            let Some(s) = slots.get_mut(*search).and_then(Option::take) else {
                return Err(LlamaError::Usage(
                    "extend of a search that has not begun, or named twice",
                ));
            };
            jobs.push((s, reqs.as_mut_slice()));
        }
        extend_searches(
            &mut self.engine.ctx,
            &self.model,
            &mut self.batch,
            &mut jobs,
            self.interrupt.as_deref(),
        )
    }
}

impl ProposerPool for LlamaProposerPool {
    fn begin(&mut self, search: usize, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        self.begin_inner(search, setup)
    }

    fn extend(
        &mut self,
        requests: &mut [(usize, Vec<ExtendRequest<'_>>)],
    ) -> Result<Vec<Vec<Chunk>>, BackendError> {
        Ok(self.extend_inner(requests)?)
    }

    fn reorder(&mut self, search: usize, parents: &[usize]) -> Result<(), BackendError> {
        let Some(Some(s)) = self.searches.get_mut(search) else {
            return Err(LlamaError::Usage("reorder of a search that has not begun").into());
        };
        Ok(s.reorder(&mut self.engine.ctx, parents)?)
    }

    fn end(&mut self, search: usize) {
        if let Some(Some(s)) = self.searches.get_mut(search).map(Option::take) {
            if let Err(e) = s.banks.clear(&mut self.engine.ctx) {
                tracing::warn!(error = %e, search, "could not free a search's cache cells");
            }
        }
    }
}

/// Tokens of `prompt` read through `template` by `model`: what a pool's `prompt_tokens`
/// must hold.
pub fn templated_prompt_tokens(
    model: &Model,
    template: &PromptTemplate,
    prompt: &str,
) -> Result<usize, BackendError> {
    let text = model.render(&template.fill(prompt)?)?;
    Ok(model.tokenize_prompt(&text).len())
}
