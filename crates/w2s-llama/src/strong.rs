//! The strong model on llama.cpp: every live row of a step sampled in one batched decode,
//! the prompt encoded once and shared by all rows through KV-cache sequence copies.

use std::sync::Arc;

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use w2s_core::sampling::sample_token;
use w2s_core::text::{find_stop, stop_prefix_len, stop_search_start, Utf8Accumulator};
use w2s_core::{
    BackendError, Chunk, EntropyEnd, ExtendRequest, Finish, Interrupt, PromptTemplate,
    ProposalSetup, Proposer, SamplingParams,
};

use crate::error::LlamaError;
use crate::model::{Engine, Model};
use crate::seqs::{decode_prompt, SeqBanks};

/// Most rows one llama.cpp context serves (two banks of sequence ids within its 256).
pub const MAX_SEQUENCES: usize = 128;

/// The strong model: samples continuations with llama.cpp.
pub struct LlamaProposer {
    model: Arc<Model>,
    template: PromptTemplate,
    threads: i32,
    engine: Option<Engine>,
    state: Option<State>,
    record: bool,
    interrupt: Option<Arc<Interrupt>>,
}

struct State {
    rows: Vec<Row>,
    banks: SeqBanks,
    prompt_len: usize,
    prompt_logits: Vec<f32>,
    sampling: SamplingParams,
    stop: Vec<String>,
    max_new: usize,
    batch: LlamaBatch<'static>,
    chunk_end: Option<EntropyEnd>,
    logprobs: bool,
}

#[derive(Clone, Default)]
struct Row {
    /// Last sampled token, not yet in the KV cache (fed at the next step).
    pending: Option<LlamaToken>,
    /// Tokens sampled (an end-of-generation token included).
    n_tokens: usize,
    /// Complete text decoded so far.
    text: String,
    /// Bytes of `text` already handed to the search.
    emitted: usize,
    utf8: Utf8Accumulator,
    done: bool,
    /// (token piece, log-probability) of every sampled token, when recording.
    sampled: Vec<(Vec<u8>, f64)>,
    /// The next-token logits of a row whose chunk ended where the model was unsure
    /// (adaptive chunk ends): its last token is in the KV cache, and its copies sample
    /// from these at the next step.
    held: Option<Vec<f32>>,
}

impl LlamaProposer {
    /// A proposer on `model` that gives it the prompt through `template`, with `threads`
    /// CPU threads.
    pub fn new(model: Arc<Model>, template: PromptTemplate, threads: usize) -> Self {
        LlamaProposer {
            model,
            template,
            threads: threads.max(1) as i32,
            engine: None,
            state: None,
            record: false,
            interrupt: None,
        }
    }

    /// Records every sampled token's piece and log-probability under the model (before
    /// temperature), for [`LlamaProposer::sampled_tokens`]. Costs one log-sum-exp over the
    /// vocabulary per token.
    pub fn set_record_tokens(&mut self, record: bool) {
        self.record = record;
    }

    /// The (piece bytes, log-probability) of each token row `row` sampled, when recording.
    pub fn sampled_tokens(&self, row: usize) -> &[(Vec<u8>, f64)] {
        self.state
            .as_ref()
            .and_then(|s| s.rows.get(row))
            .map_or(&[], |r| r.sampled.as_slice())
    }

    /// The template prompts are read through.
    pub fn template(&self) -> &PromptTemplate {
        &self.template
    }

    /// Reads the prompt through `template` from the next search on (e.g. one carrying a
    /// request's earlier chat turns).
    pub fn set_template(&mut self, template: PromptTemplate) {
        self.template = template;
    }

    /// Checks `interrupt` between pieces of long work (each micro-batch of a prompt, each
    /// sampling step), so that a cancelled job stops within one piece.
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

    /// Tokens of the templated prompt of the last search (0 before any).
    pub fn last_prompt_tokens(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.prompt_len)
    }

    /// Frees the llama.cpp context (KV cache and buffers); the next search makes a new one.
    pub fn release_context(&mut self) {
        self.state = None;
        self.engine = None;
    }

    fn begin_inner(&mut self, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        if setup.rows > MAX_SEQUENCES {
            return Err(LlamaError::TooManyRows {
                rows: setup.rows,
                max: MAX_SEQUENCES,
            }
            .into());
        }
        let text = self.model.render(&self.template.fill(setup.prompt)?)?;
        let prompt = self.model.tokenize_prompt(&text);
        if prompt.is_empty() {
            return Err(w2s_core::ConfigError::EmptyPrompt.into());
        }
        self.model.check_fits(prompt.len(), setup.max_new_tokens)?;
        let n_ctx = prompt.len() + setup.rows * setup.max_new_tokens + 8;
        let n_batch = 512.max(setup.rows);
        let banks = SeqBanks::new(setup.rows);
        let engine = Engine::ensure(
            &mut self.engine,
            &self.model,
            u32::try_from(n_ctx).map_err(|_| LlamaError::Usage("context too large"))?,
            banks.n_seq(),
            n_batch as u32,
            self.threads,
        )?;
        let mut batch = LlamaBatch::new(n_batch, 1);
        let prompt_logits = decode_prompt(
            &mut engine.ctx,
            &mut batch,
            &prompt,
            banks.seq(0),
            self.interrupt.as_deref(),
        )?;
        banks.share_prompt(&mut engine.ctx, setup.rows)?;
        self.state = Some(State {
            rows: vec![Row::default(); setup.rows],
            banks,
            prompt_len: prompt.len(),
            prompt_logits,
            sampling: *setup.sampling,
            stop: setup.stop.to_vec(),
            max_new: setup.max_new_tokens,
            batch,
            chunk_end: setup.chunk_end,
            logprobs: setup.logprobs,
        });
        Ok(())
    }

    fn extend_inner(
        &mut self,
        requests: &mut [ExtendRequest<'_>],
    ) -> Result<Vec<Chunk>, LlamaError> {
        let (Some(engine), Some(st)) = (self.engine.as_mut(), self.state.as_mut()) else {
            return Err(LlamaError::Usage("extend before begin"));
        };
        let vocab = engine.model.llama().vocab();
        let mut produced = vec![0usize; requests.len()];
        let mut finish: Vec<Option<Finish>> = vec![None; requests.len()];
        let mut logit_at: Vec<Option<i32>> = vec![None; requests.len()];
        let mut logprob = vec![0f64; requests.len()];
        for req in requests.iter() {
            if req.row >= st.rows.len() || st.rows[req.row].done {
                return Err(LlamaError::Usage("extend of a missing or ended row"));
            }
        }
        let steps = requests.iter().map(|r| r.max_tokens).max().unwrap_or(0);
        let mut unsure = vec![false; requests.len()];
        for _ in 0..steps {
            // A cancelled search stops within one token of every row.
            crate::seqs::check(self.interrupt.as_deref())?;
            let active: Vec<bool> = requests
                .iter()
                .enumerate()
                .map(|(i, req)| finish[i].is_none() && !unsure[i] && produced[i] < req.max_tokens)
                .collect();
            if !active.contains(&true) {
                break;
            }
            // Feed every active row's pending token in one batch.
            st.batch.clear();
            for (i, req) in requests.iter().enumerate() {
                logit_at[i] = None;
                if !active[i] {
                    continue;
                }
                let row = &st.rows[req.row];
                if let Some(tok) = row.pending {
                    let pos = (st.prompt_len + row.n_tokens - 1) as i32;
                    logit_at[i] = Some(st.batch.n_tokens());
                    st.batch
                        .add(tok, pos, &[st.banks.seq(req.row)], true)
                        .map_err(|e| LlamaError::Decode(e.to_string()))?;
                }
            }
            if st.batch.n_tokens() > 0 {
                engine
                    .ctx
                    .decode(&mut st.batch)
                    .map_err(|e| LlamaError::Decode(e.to_string()))?;
            }
            // Sample one token for every active row.
            for (i, req) in requests.iter_mut().enumerate() {
                if !active[i] {
                    continue;
                }
                let held = st.rows[req.row].held.take();
                let logits = match (logit_at[i], &held) {
                    (Some(b), _) => engine.ctx.get_logits_ith(b),
                    (None, Some(h)) => h.as_slice(),
                    (None, None) => &st.prompt_logits,
                };
                let row = &mut st.rows[req.row];
                // Adaptive chunk ends: stop before a token the model is unsure of, and
                // keep its distribution for the row's copies to sample from.
                if let Some(end) = st.chunk_end {
                    if produced[i] >= end.min_tokens()
                        && w2s_core::sampling::entropy(logits) > end.entropy()
                    {
                        row.pending = None;
                        row.held = Some(logits.to_vec());
                        unsure[i] = true;
                        continue;
                    }
                }
                let tok = LlamaToken(sample_token(logits, &st.sampling, req.rng) as i32);
                if self.record || st.logprobs {
                    let lp = logits
                        .get(tok.0.max(0) as usize)
                        .copied()
                        .unwrap_or(f32::NEG_INFINITY) as f64
                        - w2s_core::sampling::log_sum_exp(logits);
                    logprob[i] += lp;
                    if self.record {
                        row.sampled
                            .push((vocab.token_to_piece(tok, true, None), lp));
                    }
                }
                row.pending = None;
                row.n_tokens += 1;
                produced[i] += 1;
                if vocab.is_eog(tok) {
                    finish[i] = Some(Finish::Eos);
                    continue;
                }
                let piece = row.utf8.push(&vocab.token_to_piece(tok, false, None));
                if append_and_check_stop(row, &piece, &st.stop) {
                    finish[i] = Some(Finish::Stop);
                    continue;
                }
                row.pending = Some(tok);
            }
        }
        let mut chunks = Vec::with_capacity(requests.len());
        for (i, req) in requests.iter().enumerate() {
            let row = &mut st.rows[req.row];
            let ended = finish[i].is_some() || row.n_tokens >= st.max_new;
            if ended && finish[i] != Some(Finish::Stop) {
                let tail = row.utf8.finish();
                if append_and_check_stop(row, &tail, &st.stop) {
                    finish[i] = Some(Finish::Stop);
                }
            }
            let end = if ended {
                row.done = true;
                row.text.len()
            } else {
                (row.text.len() - stop_prefix_len(&row.text, &st.stop)).max(row.emitted)
            };
            chunks.push(Chunk {
                text: row.text[row.emitted..end].to_string(),
                tokens: produced[i],
                finish: finish[i],
                logprob: st.logprobs.then_some(logprob[i]),
            });
            row.emitted = end;
        }
        Ok(chunks)
    }

    fn reorder_inner(&mut self, parents: &[usize]) -> Result<(), LlamaError> {
        let (Some(engine), Some(st)) = (self.engine.as_mut(), self.state.as_mut()) else {
            return Err(LlamaError::Usage("reorder before begin"));
        };
        st.rows = st.banks.reorder(&mut engine.ctx, &st.rows, parents)?;
        Ok(())
    }
}

/// Appends `piece` to the row's text; if a stop string now appears, cuts the text there
/// and returns true.
fn append_and_check_stop(row: &mut Row, piece: &str, stop: &[String]) -> bool {
    row.text.push_str(piece);
    if stop.is_empty() {
        return false;
    }
    let from = stop_search_start(row.text.len(), piece.len(), stop).max(row.emitted);
    match find_stop(&row.text, stop, from) {
        Some(at) => {
            row.text.truncate(at.max(row.emitted));
            true
        }
        None => false,
    }
}

impl Proposer for LlamaProposer {
    fn begin(&mut self, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        self.state = None;
        self.begin_inner(setup)
    }

    fn extend(&mut self, requests: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError> {
        Ok(self.extend_inner(requests)?)
    }

    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        Ok(self.reorder_inner(parents)?)
    }
}
