//! A small model on llama.cpp that scores responses incrementally.
//!
//! Each row keeps its own KV-cache sequence holding prompt + response tokens, the
//! log-probability of each response token, and the logits after its last token. A new
//! chunk is scored by tokenising the whole response again and evaluating only from the
//! first token whose id changed (usually just the new tokens), so each token of a
//! surviving beam is run through the model about once.
//!
//! The response's tokens are those of the joint tokenisation of prompt + response (see
//! [`crate::split_response`]), so "prompt excluded" is exact on every vocabulary.

use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use w2s_core::{BackendError, Interrupt, PromptTemplate, ScoreRequest, Scorer};

use crate::boundary::{anchor_of, Anchor};
use crate::error::LlamaError;
use crate::incremental::{decode_plan, Plan, RowSet, ScorerProfile};
use crate::model::{Model, ModelContext};
use crate::seqs::SeqBanks;
use crate::strong::MAX_SEQUENCES;

/// Tokens per scoring decode at most (and the context's batch): bounds the output and
/// compute buffers, each tokens x vocabulary logits.
pub(crate) const SCORE_BATCH: usize = 128;

/// A small model that scores responses (the tuned or the untuned one of a guide pair).
pub struct LlamaScorer {
    model: Arc<Model>,
    template: PromptTemplate,
    threads: i32,
    engine: Option<ModelContext>,
    state: Option<State>,
    evaluated: u64,
    interrupt: Option<Arc<Interrupt>>,
    // Boxed: it is counters, and the scorer is held by value in enums.
    profile: Box<ScorerProfile>,
}

struct State {
    set: RowSet,
    batch: LlamaBatch<'static>,
}

impl LlamaScorer {
    /// A scorer on `model` that reads the prompt through `template`.
    pub fn new(model: Arc<Model>, template: PromptTemplate, threads: usize) -> Self {
        LlamaScorer {
            model,
            template,
            threads: threads.max(1) as i32,
            engine: None,
            state: None,
            evaluated: 0,
            interrupt: None,
            profile: Box::default(),
        }
    }

    /// Checks `interrupt` between pieces of long work (each micro-batch of a prompt or of
    /// the responses scored), so that a cancelled job stops within one piece.
    pub fn set_interrupt(&mut self, interrupt: Option<Arc<Interrupt>>) {
        self.interrupt = interrupt;
    }

    /// Tokens the current llama.cpp context holds (0 without one).
    pub fn context_tokens(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.ctx.n_ctx() as usize)
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Where this scorer's time went in the current search.
    pub fn profile(&self) -> ScorerProfile {
        *self.profile
    }

    /// Frees the llama.cpp context (KV cache and buffers); the next search makes a new one.
    pub fn release_context(&mut self) {
        self.state = None;
        self.engine = None;
    }

    /// Reads the prompt through `template` from the next search on (e.g. one carrying a
    /// request's earlier chat turns).
    pub fn set_template(&mut self, template: PromptTemplate) {
        self.template = template;
    }

    /// Each response token row `row` was last scored with, as (piece bytes, log p given
    /// everything before it); the end-of-sequence token of an ended row is included.
    pub fn row_tokens(&self, row: usize) -> Vec<(Vec<u8>, f64)> {
        let vocab = self.model.llama().vocab();
        self.state
            .as_ref()
            .and_then(|s| s.set.rows.get(row))
            .map(|r| {
                r.ids
                    .iter()
                    .zip(&r.lps)
                    .map(|(&t, &lp)| (vocab.token_to_piece(t, true, None), lp))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The template.
    pub fn template(&self) -> &PromptTemplate {
        &self.template
    }

    /// Tokens of the templated prompt for `prompt` (for context checks and tests).
    pub fn prompt_tokens(&self, prompt: &str) -> Result<Vec<LlamaToken>, BackendError> {
        let text = self.model.render(&self.template.fill(prompt)?)?;
        Ok(self.model.tokenize_prompt(&text))
    }

    /// The token that ends a response for this model: end-of-turn for chat templates
    /// where the model has one, else end-of-sequence.
    fn end_token(&self) -> LlamaToken {
        let vocab = self.model.llama().vocab();
        let eot = vocab.eot();
        if self.template.is_chat() && eot.0 >= 0 {
            eot
        } else {
            vocab.eos()
        }
    }

    fn begin_inner(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new: usize,
    ) -> Result<(), BackendError> {
        if rows > MAX_SEQUENCES {
            return Err(LlamaError::TooManyRows {
                rows,
                max: MAX_SEQUENCES,
            }
            .into());
        }
        let text = self.model.render(&self.template.fill(prompt)?)?;
        let tokens = self.model.tokenize_prompt(&text);
        if tokens.is_empty() {
            return Err(w2s_core::ConfigError::EmptyPrompt.into());
        }
        self.model.check_fits(tokens.len(), max_new)?;
        *self.profile = ScorerProfile::default();
        let started = Instant::now();
        let anchor = anchor_of(&self.model, &text, &tokens);
        // Response tokens per row: the small tokenizer may need more tokens than the
        // strong one for the same text; a row that outgrows this makes the context grow.
        let per_row = max_new + max_new / 2 + 16;
        let n_ctx = tokens.len() + rows * per_row;
        self.open(tokens, anchor, rows, n_ctx)?;
        self.evaluated = 0;
        self.profile.setup += started.elapsed();
        Ok(())
    }

    /// (Re)creates the context for `rows` rows and encodes the prompt once.
    fn open(
        &mut self,
        prompt: Vec<LlamaToken>,
        anchor: Option<Anchor>,
        rows: usize,
        n_ctx: usize,
    ) -> Result<(), LlamaError> {
        let banks = SeqBanks::new(rows);
        let eos = self.end_token();
        let n_ctx = u32::try_from(n_ctx).map_err(|_| LlamaError::Usage("context too large"))?;
        let engine = ModelContext::ensure(
            &mut self.engine,
            &self.model,
            n_ctx,
            banks.n_seq(),
            SCORE_BATCH as u32,
            self.threads,
        )?;
        let mut batch = LlamaBatch::new(SCORE_BATCH, 1);
        let set = RowSet::open(
            &mut engine.ctx,
            &mut batch,
            (prompt, anchor),
            banks,
            rows,
            eos,
            self.interrupt.as_deref(),
        )?;
        self.state = Some(State { set, batch });
        Ok(())
    }

    fn score_inner(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, LlamaError> {
        match self.try_score(requests) {
            Err(LlamaError::Decode(DecodeError::NoKvCacheSlot)) => {
                // A row's text needed more small-model tokens than planned: grow the
                // context, start every row afresh and score again.
                let st = self
                    .state
                    .take()
                    .ok_or(LlamaError::Usage("score before begin"))?;
                let n_ctx = self.engine.as_ref().map_or(0, |e| e.n_ctx as usize);
                // Every row starts afresh, so the requests alone say what is needed.
                let needed = st.set.cells_for(&self.model, requests);
                let n_ctx = (2 * n_ctx).max(needed + needed / 4 + 16);
                tracing::debug!(n_ctx, "scorer context full; growing it");
                self.engine = None;
                let rows = st.set.rows.len();
                self.open(st.set.prompt, st.set.anchor, rows, n_ctx)?;
                self.try_score(requests)
            }
            other => other,
        }
    }

    fn try_score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, LlamaError> {
        let Some(mut st) = self.state.take() else {
            return Err(LlamaError::Usage("score before begin"));
        };
        let result = self.score_rows(&mut st, requests);
        self.state = Some(st);
        result
    }

    fn score_rows(
        &mut self,
        st: &mut State,
        requests: &[ScoreRequest<'_>],
    ) -> Result<Vec<f64>, LlamaError> {
        let engine = engine_of(&mut self.engine)?;
        let prof = &mut *self.profile;
        let mut plan = Plan::default();
        st.set
            .plan(0, &self.model, &mut engine.ctx, requests, &mut plan, prof)?;
        let mut evaluated = [self.evaluated];
        let decoded = decode_plan(
            &mut engine.ctx,
            &mut st.batch,
            &plan,
            &mut [&mut st.set],
            self.interrupt.as_deref(),
            &mut evaluated,
            prof,
        );
        self.evaluated = evaluated[0];
        decoded?;
        Ok(plan.finish(&mut [&mut st.set]))
    }
}

fn engine_of(engine: &mut Option<ModelContext>) -> Result<&mut ModelContext, LlamaError> {
    engine
        .as_mut()
        .ok_or(LlamaError::Usage("score before begin"))
}

/// Scores `text` as a response to `prompt` in one pass, with no cache reuse: the
/// reference that incremental scoring is checked against.
pub fn score_once(
    scorer: &mut LlamaScorer,
    prompt: &str,
    text: &str,
    ended: bool,
) -> Result<f64, BackendError> {
    let max_new = scorer.model.tokenize_response(text).len() + 1;
    scorer.begin(prompt, 1, max_new)?;
    let got = scorer.score(&[ScoreRequest {
        row: 0,
        text,
        ended,
    }])?;
    Ok(got[0])
}

impl Scorer for LlamaScorer {
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new_tokens: usize,
    ) -> Result<(), BackendError> {
        self.state = None;
        self.begin_inner(prompt, rows, max_new_tokens)
    }

    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        Ok(self.score_inner(requests)?)
    }

    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        let (Some(engine), Some(st)) = (self.engine.as_mut(), self.state.as_mut()) else {
            return Err(LlamaError::Usage("reorder before begin").into());
        };
        let t = Instant::now();
        st.set.rows = st
            .set
            .banks
            .reorder(&mut engine.ctx, &st.set.rows, parents)?;
        self.profile.cache += t.elapsed();
        Ok(())
    }

    fn tokens_evaluated(&self) -> u64 {
        self.evaluated
    }
}
