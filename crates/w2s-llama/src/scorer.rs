//! A small model on llama.cpp that scores responses incrementally.
//!
//! Each row keeps its own KV-cache sequence holding prompt + response tokens, the
//! log-probability of each response token, and the logits after its last token. A new
//! chunk is scored by tokenising the whole response again and evaluating only from the
//! first token whose id changed (usually just the new tokens), so each token of a
//! surviving beam is run through the model about once.
//!
//! The prompt and the response are tokenised separately and concatenated: the prompt's
//! tokens never change, and "prompt excluded" is exact.

use std::sync::Arc;

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use w2s_core::sampling::log_sum_exp;
use w2s_core::{BackendError, Interrupt, PromptTemplate, ScoreRequest, Scorer};

use crate::error::LlamaError;
use crate::model::{Engine, Model};
use crate::seqs::{decode_prompt, SeqBanks};
use crate::strong::MAX_SEQUENCES;

/// Tokens per scoring decode at most: bounds the logits buffer (tokens x vocabulary).
const SCORE_BATCH: usize = 128;

/// A small model that scores responses (the tuned or the untuned one of a guide pair).
pub struct LlamaScorer {
    model: Arc<Model>,
    template: PromptTemplate,
    threads: i32,
    engine: Option<Engine>,
    state: Option<State>,
    evaluated: u64,
    interrupt: Option<Arc<Interrupt>>,
}

struct State {
    rows: Vec<Row>,
    banks: SeqBanks,
    prompt: Vec<LlamaToken>,
    prompt_logits: Arc<Vec<f32>>,
    eos: LlamaToken,
    batch: LlamaBatch<'static>,
}

#[derive(Clone, Default)]
struct Row {
    /// Response token ids scored so far (EOS last once ended).
    ids: Vec<LlamaToken>,
    /// log p of each id given everything before it.
    lps: Vec<f64>,
    /// How many of `ids` are in the KV cache (after the prompt).
    fed: usize,
    /// Logits after `ids[fed - 1]`, predicting the next token.
    tail: Option<Arc<Vec<f32>>>,
}

/// One token to run through the model.
struct Feed {
    req: usize,
    /// Index in the request's new ids.
    j: usize,
    seq: i32,
    pos: i32,
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
            .and_then(|s| s.rows.get(row))
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
        let tokens = self.prompt_tokens(prompt)?;
        if tokens.is_empty() {
            return Err(w2s_core::ConfigError::EmptyPrompt.into());
        }
        self.model.check_fits(tokens.len(), max_new)?;
        // Response tokens per row: the small tokenizer may need more tokens than the
        // strong one for the same text; a row that outgrows this makes the context grow.
        let per_row = max_new + max_new / 2 + 16;
        let n_ctx = tokens.len() + rows * per_row;
        self.open(tokens, rows, n_ctx)?;
        self.evaluated = 0;
        Ok(())
    }

    /// (Re)creates the context for `rows` rows and encodes the prompt once.
    fn open(
        &mut self,
        prompt: Vec<LlamaToken>,
        rows: usize,
        n_ctx: usize,
    ) -> Result<(), LlamaError> {
        let banks = SeqBanks::new(rows);
        let n_ctx = u32::try_from(n_ctx).map_err(|_| LlamaError::Usage("context too large"))?;
        Engine::ensure(
            &mut self.engine,
            &self.model,
            n_ctx,
            banks.n_seq(),
            512,
            self.threads,
        )?;
        let engine = self
            .engine
            .as_mut()
            .ok_or(LlamaError::Usage("no context"))?;
        let mut batch = LlamaBatch::new(512.max(SCORE_BATCH), 1);
        let prompt_logits = decode_prompt(
            &mut engine.ctx,
            &mut batch,
            &prompt,
            banks.seq(0),
            self.interrupt.as_deref(),
        )?;
        banks.share_prompt(&mut engine.ctx, rows)?;
        self.state = Some(State {
            rows: vec![Row::default(); rows],
            banks,
            prompt,
            prompt_logits: Arc::new(prompt_logits),
            eos: self.end_token(),
            batch,
        });
        Ok(())
    }

    fn score_inner(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, LlamaError> {
        match self.try_score(requests) {
            Err(LlamaError::Decode(msg)) if msg == DecodeError::NoKvCacheSlot.to_string() => {
                // A row's text needed more small-model tokens than planned: grow the
                // context, start every row afresh and score again.
                let (prompt, rows, n_ctx) = {
                    let st = self
                        .state
                        .as_ref()
                        .ok_or(LlamaError::Usage("score before begin"))?;
                    let n_ctx = self.engine.as_ref().map_or(0, |e| e.n_ctx as usize);
                    (st.prompt.clone(), st.rows.len(), n_ctx)
                };
                // Every row starts afresh, so the requests alone say what is needed.
                let needed: usize = prompt.len()
                    + requests
                        .iter()
                        .map(|r| self.model.tokenize_response(r.text).len() + 1)
                        .sum::<usize>();
                let n_ctx = (2 * n_ctx).max(needed + needed / 4 + 16);
                tracing::debug!(n_ctx, "scorer context full; growing it");
                self.engine = None;
                self.open(prompt, rows, n_ctx)?;
                self.try_score(requests)
            }
            other => other,
        }
    }

    fn try_score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, LlamaError> {
        let (Some(engine), Some(st)) = (self.engine.as_mut(), self.state.as_mut()) else {
            return Err(LlamaError::Usage("score before begin"));
        };
        let p = st.prompt.len();
        let mut news: Vec<Vec<LlamaToken>> = Vec::with_capacity(requests.len());
        let mut feeds: Vec<Feed> = Vec::new();
        for (r, req) in requests.iter().enumerate() {
            if req.row >= st.rows.len() {
                return Err(LlamaError::Usage("score of a missing row"));
            }
            let mut new = self.model.tokenize_response(req.text);
            if req.ended {
                new.push(st.eos);
            }
            let row = &mut st.rows[req.row];
            let d = row.ids.iter().zip(&new).take_while(|(a, b)| a == b).count();
            // Logits predicting new[d]: the prompt's, the stored tail's, or re-feed new[d-1].
            let start = if d == 0 || (d == row.fed && row.tail.is_some()) {
                d
            } else {
                d - 1
            };
            if row.fed > start {
                let from = Some((p + start) as u32);
                engine
                    .ctx
                    .kv_cache_seq_rm(st.banks.seq(req.row), from, None)
                    .map_err(|e| LlamaError::Cache(e.to_string()))?;
            }
            row.lps.truncate(d);
            row.lps.resize(new.len(), 0.0);
            if start == d && d < new.len() {
                let logits = if d == 0 {
                    &st.prompt_logits
                } else {
                    row.tail.as_ref().unwrap_or(&st.prompt_logits)
                };
                row.lps[d] = log_prob(logits, new[d]);
            }
            let feed_end = new.len() - usize::from(req.ended);
            row.fed = start.min(feed_end);
            row.tail = None;
            for j in start..feed_end {
                feeds.push(Feed {
                    req: r,
                    j,
                    seq: st.banks.seq(req.row),
                    pos: (p + j) as i32,
                });
            }
            news.push(new);
        }
        // llama.cpp caps a context's batch at its size; never hand it more.
        let per_decode = SCORE_BATCH.min(engine.ctx.n_batch().max(1) as usize);
        for piece in feeds.chunks(per_decode) {
            // A cancelled search stops within one piece (the rows are begun afresh next).
            crate::seqs::check(self.interrupt.as_deref())?;
            st.batch.clear();
            for f in piece {
                st.batch
                    .add(news[f.req][f.j], f.pos, &[f.seq], true)
                    .map_err(|e| LlamaError::Decode(e.to_string()))?;
            }
            engine
                .ctx
                .decode(&mut st.batch)
                .map_err(|e| LlamaError::Decode(e.to_string()))?;
            self.evaluated += piece.len() as u64;
            for (k, f) in piece.iter().enumerate() {
                let new = &news[f.req];
                let row = &mut st.rows[requests[f.req].row];
                let logits = engine.ctx.get_logits_ith(k as i32);
                if f.j + 1 < new.len() {
                    row.lps[f.j + 1] = log_prob(logits, new[f.j + 1]);
                } else {
                    row.tail = Some(Arc::new(logits.to_vec()));
                }
                row.fed = f.j + 1;
            }
        }

        let mut out = Vec::with_capacity(requests.len());
        for (req, new) in requests.iter().zip(news) {
            let row = &mut st.rows[req.row];
            row.ids = new;
            out.push(row.lps.iter().sum());
        }
        Ok(out)
    }
}

fn log_prob(logits: &[f32], token: LlamaToken) -> f64 {
    let v = logits
        .get(token.0.max(0) as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    v as f64 - log_sum_exp(logits)
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
        st.rows = st.banks.reorder(&mut engine.ctx, &st.rows, parents)?;
        Ok(())
    }

    fn tokens_evaluated(&self) -> u64 {
        self.evaluated
    }
}
