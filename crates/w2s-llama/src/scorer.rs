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
use std::time::{Duration, Instant};

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use w2s_core::sampling::log_sum_exp;
use w2s_core::{BackendError, Interrupt, PromptTemplate, ScoreRequest, Scorer};

use crate::boundary::{anchor_of, response_tokens, Anchor};
use crate::error::LlamaError;
use crate::model::{Model, ModelContext};
use crate::seqs::{decode_prompt, SeqBanks};
use crate::strong::MAX_SEQUENCES;

/// Tokens per scoring decode at most (and the context's batch): bounds the output and
/// compute buffers, each tokens x vocabulary logits.
const SCORE_BATCH: usize = 128;

/// Where a scorer's time went in the current search (since its last `begin`), measured
/// on the calling thread around each step. `decode` is llama.cpp's forward pass; the rest
/// is work around it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScorerProfile {
    /// Context creation (or reuse) and the prompt's encoding.
    pub setup: Duration,
    /// Tokenising responses.
    pub tokenize: Duration,
    /// `llama_decode` on response tokens.
    pub decode: Duration,
    /// Log-softmax over the vocabulary for each scored token.
    pub log_softmax: Duration,
    /// Keeping each row's last logits and building batches.
    pub copies: Duration,
    /// KV-cache removals and the beam reorders' sequence copies.
    pub cache: Duration,
    /// `llama_decode` calls on response tokens.
    pub decodes: u64,
}

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
    rows: Vec<Row>,
    banks: SeqBanks,
    prompt: Vec<LlamaToken>,
    anchor: Option<Anchor>,
    prompt_logits: Arc<Vec<f32>>,
    eos: LlamaToken,
    batch: LlamaBatch<'static>,
}

#[derive(Clone, Default)]
struct Row {
    /// Prompt tokens this row's sequence drops because the response's first token merged
    /// them (0 almost always): the response starts at position `prompt.len() - cut`.
    cut: usize,
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
    token: LlamaToken,
    seq: i32,
    pos: i32,
    /// What its logits are for.
    out: Out,
}

#[derive(Clone, Copy, PartialEq)]
enum Out {
    /// A prompt token re-fed before a merged response: no logits needed.
    Nothing,
    /// The log-probability of the request's new id `j`.
    Next(usize),
    /// The row's last fed token: keep its logits; `fed` becomes `j + 1`.
    Tail(usize),
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
            anchor,
            prompt,
            prompt_logits: Arc::new(prompt_logits),
            eos: self.end_token(),
            batch,
        });
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
                let needed: usize = st.prompt.len()
                    + requests
                        .iter()
                        .map(|r| {
                            response_tokens(&self.model, st.anchor.as_ref(), r.text)
                                .1
                                .len()
                                + 1
                        })
                        .sum::<usize>();
                let n_ctx = (2 * n_ctx).max(needed + needed / 4 + 16);
                tracing::debug!(n_ctx, "scorer context full; growing it");
                self.engine = None;
                self.open(st.prompt, st.anchor, st.rows.len(), n_ctx)?;
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
        let p = st.prompt.len();
        let mut news: Vec<Vec<LlamaToken>> = Vec::with_capacity(requests.len());
        let mut feeds: Vec<Feed> = Vec::new();
        for (r, req) in requests.iter().enumerate() {
            if req.row >= st.rows.len() {
                return Err(LlamaError::Usage("score of a missing row"));
            }
            let t = Instant::now();
            let (cut, mut new) = response_tokens(&self.model, st.anchor.as_ref(), req.text);
            self.profile.tokenize += t.elapsed();
            if req.ended {
                new.push(st.eos);
            }
            let row = &mut st.rows[req.row];
            let seq = st.banks.seq(req.row);
            let base = p - cut;
            // The prompt tokens to run again before the response (a merge changed where
            // the response starts), and the first new id to feed.
            let (refeed, d, start) = if cut == row.cut {
                let d = row.ids.iter().zip(&new).take_while(|(a, b)| a == b).count();
                // Logits predicting new[d]: the prompt's, the stored tail's, or re-feed
                // new[d-1] (or, for a merged start, the prompt token before it).
                if d == 0 && cut > 0 {
                    (base - 1..base, 0, 0)
                } else if d == 0 || (d == row.fed && row.tail.is_some()) {
                    (base..base, d, d)
                } else {
                    (base..base, d, d - 1)
                }
            } else {
                // Rare: the merge changed; this row starts again from the last prompt
                // token both sequences share.
                let lo = base.min(p - row.cut).max(1) - 1;
                (lo..base, 0, 0)
            };
            let first_pos = if refeed.is_empty() {
                base + start
            } else {
                refeed.start
            };
            if p - row.cut + row.fed > first_pos || !refeed.is_empty() {
                let t = Instant::now();
                engine_of(&mut self.engine)?
                    .ctx
                    .kv_cache_seq_rm(seq, Some(first_pos as u32), None)
                    .map_err(LlamaError::from)?;
                self.profile.cache += t.elapsed();
            }
            row.lps.truncate(d);
            row.lps.resize(new.len(), 0.0);
            if refeed.is_empty() && start == d && d < new.len() {
                let t = Instant::now();
                let logits = if d == 0 {
                    &st.prompt_logits
                } else {
                    row.tail.as_ref().unwrap_or(&st.prompt_logits)
                };
                row.lps[d] = log_prob(logits, new[d]);
                self.profile.log_softmax += t.elapsed();
            }
            let feed_end = new.len() - usize::from(req.ended);
            row.cut = cut;
            row.fed = start.min(feed_end);
            row.tail = None;
            for i in refeed.clone() {
                feeds.push(Feed {
                    req: r,
                    token: st.prompt[i],
                    seq,
                    pos: i as i32,
                    out: if i + 1 == base && !new.is_empty() {
                        Out::Next(0)
                    } else {
                        Out::Nothing
                    },
                });
            }
            for j in start..feed_end {
                feeds.push(Feed {
                    req: r,
                    token: new[j],
                    seq,
                    pos: (base + j) as i32,
                    out: if j + 1 < new.len() {
                        Out::Next(j + 1)
                    } else {
                        Out::Tail(j)
                    },
                });
            }
            news.push(new);
        }
        let engine = engine_of(&mut self.engine)?;
        let prof = &mut self.profile;
        // llama.cpp caps a context's batch at its size; never hand it more.
        let per_decode = SCORE_BATCH.min(engine.ctx.n_batch().max(1) as usize);
        for piece in feeds.chunks(per_decode) {
            // A cancelled search stops within one piece (the rows are begun afresh next).
            crate::seqs::check(self.interrupt.as_deref())?;
            let t = Instant::now();
            st.batch.clear();
            for f in piece {
                st.batch
                    .add(f.token, f.pos, &[f.seq], f.out != Out::Nothing)
                    .map_err(LlamaError::from)?;
            }
            let t = lap(&mut prof.copies, t);
            engine.ctx.decode(&mut st.batch).map_err(LlamaError::from)?;
            let mut t = lap(&mut prof.decode, t);
            prof.decodes += 1;
            self.evaluated += piece.len() as u64;
            for (k, f) in piece.iter().enumerate() {
                let row = &mut st.rows[requests[f.req].row];
                match f.out {
                    Out::Nothing => {}
                    Out::Next(j) => {
                        let logits = engine.ctx.get_logits_ith(k as i32);
                        row.lps[j] = log_prob(logits, news[f.req][j]);
                        if j > 0 {
                            row.fed = j;
                        }
                        t = lap(&mut prof.log_softmax, t);
                    }
                    Out::Tail(j) => {
                        let logits = engine.ctx.get_logits_ith(k as i32);
                        row.tail = Some(Arc::new(logits.to_vec()));
                        row.fed = j + 1;
                        t = lap(&mut prof.copies, t);
                    }
                }
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

fn engine_of(engine: &mut Option<ModelContext>) -> Result<&mut ModelContext, LlamaError> {
    engine
        .as_mut()
        .ok_or(LlamaError::Usage("score before begin"))
}

/// Adds the time since `since` to `into`; returns now.
fn lap(into: &mut Duration, since: Instant) -> Instant {
    let now = Instant::now();
    *into += now - since;
    now
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
        let t = Instant::now();
        st.rows = st.banks.reorder(&mut engine.ctx, &st.rows, parents)?;
        self.profile.cache += t.elapsed();
        Ok(())
    }

    fn tokens_evaluated(&self) -> u64 {
        self.evaluated
    }
}
