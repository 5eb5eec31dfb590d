//! The strong model on llama.cpp: every live row of a step sampled in one batched decode,
//! the prompt encoded once and shared by all rows through KV-cache sequence copies.

use std::sync::Arc;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use w2s_core::sampling::sample_token;
use w2s_core::text::{find_stop, stop_prefix_len, stop_search_start, Utf8Accumulator};
use w2s_core::{
    BackendError, Chunk, EntropyEnd, ExtendRequest, Finish, Interrupt, PromptTemplate,
    ProposalSetup, Proposer, SamplingParams,
};

use crate::error::LlamaError;
use crate::model::{Model, ModelContext};
use crate::seqs::{decode_prompt, SeqBanks};

/// Most rows one llama.cpp context serves (two banks of sequence ids within its 256).
pub const MAX_SEQUENCES: usize = 128;

/// The strong model: samples continuations with llama.cpp.
pub struct LlamaProposer {
    model: Arc<Model>,
    template: PromptTemplate,
    threads: i32,
    engine: Option<ModelContext>,
    state: Option<State>,
    record: bool,
    interrupt: Option<Arc<Interrupt>>,
}

struct State {
    search: Search,
    batch: LlamaBatch<'static>,
}

/// One search's rows on a llama.cpp context: the single proposer's, or one of a pool's
/// ([`crate::LlamaProposerPool`]).
pub(crate) struct Search {
    rows: Vec<Row>,
    pub(crate) banks: SeqBanks,
    prompt_len: usize,
    prompt_logits: Vec<f32>,
    params: Params,
}

/// How a search samples.
struct Params {
    sampling: SamplingParams,
    stop: Vec<String>,
    max_new: usize,
    chunk_end: Option<EntropyEnd>,
    /// Each chunk's log-probability is asked for.
    logprobs: bool,
    /// Every sampled token is recorded (piece and log-probability).
    record: bool,
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
            .and_then(|s| s.search.rows.get(row))
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
        self.state.as_ref().map_or(0, |s| s.search.prompt_len)
    }

    /// Frees the llama.cpp context (KV cache and buffers); the next search makes a new one.
    pub fn release_context(&mut self) {
        self.state = None;
        self.engine = None;
    }

    fn begin_inner(&mut self, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        let prompt = prompt_tokens(&self.model, &self.template, setup)?;
        let n_ctx = prompt.len() + setup.rows * setup.max_new_tokens + 8;
        let n_batch = 512.max(setup.rows);
        let banks = SeqBanks::new(setup.rows);
        let engine = ModelContext::ensure(
            &mut self.engine,
            &self.model,
            u32::try_from(n_ctx).map_err(|_| LlamaError::Usage("context too large"))?,
            banks.n_seq(),
            n_batch as u32,
            self.threads,
        )?;
        let mut batch = LlamaBatch::new(n_batch, 1);
        let search = Search::start(
            &mut engine.ctx,
            &mut batch,
            &prompt,
            setup,
            banks,
            self.record,
            self.interrupt.as_deref(),
        )?;
        self.state = Some(State { search, batch });
        Ok(())
    }

    fn extend_inner(
        &mut self,
        requests: &mut [ExtendRequest<'_>],
    ) -> Result<Vec<Chunk>, LlamaError> {
        let (Some(engine), Some(st)) = (self.engine.as_mut(), self.state.as_mut()) else {
            return Err(LlamaError::Usage("extend before begin"));
        };
        let mut jobs = [(&mut st.search, requests)];
        let mut out = extend_searches(
            &mut engine.ctx,
            &engine.model,
            &mut st.batch,
            &mut jobs,
            self.interrupt.as_deref(),
        )?;
        Ok(out.pop().unwrap_or_default())
    }

    fn reorder_inner(&mut self, parents: &[usize]) -> Result<(), LlamaError> {
        let (Some(engine), Some(st)) = (self.engine.as_mut(), self.state.as_mut()) else {
            return Err(LlamaError::Usage("reorder before begin"));
        };
        st.search.reorder(&mut engine.ctx, parents)
    }
}

/// The templated prompt's tokens for `setup`, checked: rows within
/// [`MAX_SEQUENCES`], a prompt that is not empty and fits the model with its new tokens.
pub(crate) fn prompt_tokens(
    model: &Model,
    template: &PromptTemplate,
    setup: &ProposalSetup<'_>,
) -> Result<Vec<LlamaToken>, BackendError> {
    if setup.rows > MAX_SEQUENCES {
        return Err(LlamaError::TooManyRows {
            rows: setup.rows,
            max: MAX_SEQUENCES,
        }
        .into());
    }
    let text = model.render(&template.fill(setup.prompt)?)?;
    let prompt = model.tokenize_prompt(&text);
    if prompt.is_empty() {
        return Err(w2s_core::ConfigError::EmptyPrompt.into());
    }
    model.check_fits(prompt.len(), setup.max_new_tokens)?;
    Ok(prompt)
}

impl Search {
    /// Decodes `prompt` into the banks' first row and shares it with the others.
    pub(crate) fn start(
        ctx: &mut LlamaContext<'static>,
        batch: &mut LlamaBatch<'static>,
        prompt: &[LlamaToken],
        setup: &ProposalSetup<'_>,
        banks: SeqBanks,
        record: bool,
        interrupt: Option<&Interrupt>,
    ) -> Result<Search, LlamaError> {
        let prompt_logits = decode_prompt(ctx, batch, prompt, banks.seq(0), interrupt)?;
        banks.share_prompt(ctx, setup.rows)?;
        Ok(Search {
            rows: vec![Row::default(); setup.rows],
            banks,
            prompt_len: prompt.len(),
            prompt_logits,
            params: Params {
                sampling: *setup.sampling,
                stop: setup.stop.to_vec(),
                max_new: setup.max_new_tokens,
                chunk_end: setup.chunk_end,
                logprobs: setup.logprobs,
                record,
            },
        })
    }

    pub(crate) fn reorder(
        &mut self,
        ctx: &mut LlamaContext<'static>,
        parents: &[usize],
    ) -> Result<(), LlamaError> {
        self.rows = self.banks.reorder(ctx, &self.rows, parents)?;
        Ok(())
    }
}

/// Samples the requested rows of several searches on one context: one decode per token
/// step carries the rows of all of them. One list of chunks per search, in order.
pub(crate) fn extend_searches(
    ctx: &mut LlamaContext<'static>,
    model: &Model,
    batch: &mut LlamaBatch<'static>,
    jobs: &mut [(&mut Search, &mut [ExtendRequest<'_>])],
    interrupt: Option<&Interrupt>,
) -> Result<Vec<Vec<Chunk>>, LlamaError> {
    let vocab = model.llama().vocab();
    for (search, requests) in jobs.iter() {
        if requests
            .iter()
            .any(|r| r.row >= search.rows.len() || search.rows[r.row].done)
        {
            return Err(LlamaError::Usage("extend of a missing or ended row"));
        }
    }
    // Every request of every search, as (search, request).
    let items: Vec<(usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, (_, r))| (0..r.len()).map(move |i| (j, i)))
        .collect();
    let n = items.len();
    let mut produced = vec![0usize; n];
    let mut finish: Vec<Option<Finish>> = vec![None; n];
    let mut logit_at: Vec<Option<i32>> = vec![None; n];
    let mut logprob = vec![0f64; n];
    let mut unsure = vec![false; n];
    let steps = items
        .iter()
        .map(|&(j, i)| jobs[j].1[i].max_tokens)
        .max()
        .unwrap_or(0);
    for _ in 0..steps {
        // A cancelled search stops within one token of every row.
        crate::seqs::check(interrupt)?;
        let active: Vec<bool> = items
            .iter()
            .enumerate()
            .map(|(k, &(j, i))| {
                finish[k].is_none() && !unsure[k] && produced[k] < jobs[j].1[i].max_tokens
            })
            .collect();
        if !active.contains(&true) {
            break;
        }
        // Feed every active row's pending token in one batch.
        batch.clear();
        for (k, &(j, i)) in items.iter().enumerate() {
            logit_at[k] = None;
            if !active[k] {
                continue;
            }
            let (search, requests) = &jobs[j];
            let row = &search.rows[requests[i].row];
            if let Some(tok) = row.pending {
                let pos = (search.prompt_len + row.n_tokens - 1) as i32;
                logit_at[k] = Some(batch.n_tokens());
                batch
                    .add(tok, pos, &[search.banks.seq(requests[i].row)], true)
                    .map_err(LlamaError::from)?;
            }
        }
        if batch.n_tokens() > 0 {
            ctx.decode(batch).map_err(LlamaError::from)?;
        }
        // Sample one token for every active row.
        for (k, &(j, i)) in items.iter().enumerate() {
            if !active[k] {
                continue;
            }
            let (search, requests) = &mut jobs[j];
            let req = &mut requests[i];
            let held = search.rows[req.row].held.take();
            let logits = match (logit_at[k], &held) {
                (Some(b), _) => ctx.get_logits_ith(b),
                (None, Some(h)) => h.as_slice(),
                (None, None) => &search.prompt_logits,
            };
            let row = &mut search.rows[req.row];
            match take_token(row, logits, &search.params, produced[k], req.rng, &vocab) {
                Took::Unsure => unsure[k] = true,
                Took::Token {
                    logprob: lp,
                    finish: f,
                } => {
                    logprob[k] += lp;
                    produced[k] += 1;
                    finish[k] = f;
                }
            }
        }
    }
    let mut out: Vec<Vec<Chunk>> = jobs
        .iter()
        .map(|(_, r)| Vec::with_capacity(r.len()))
        .collect();
    for (k, &(j, i)) in items.iter().enumerate() {
        let (search, requests) = &mut jobs[j];
        let row = &mut search.rows[requests[i].row];
        out[j].push(close_chunk(
            row,
            &search.params,
            produced[k],
            finish[k],
            logprob[k],
        ));
    }
    Ok(out)
}

/// The chunk a row's step gave: its new text (a possible stop string's start held back
/// unless the row ended), tokens, finish and log-probability.
fn close_chunk(
    row: &mut Row,
    params: &Params,
    tokens: usize,
    mut finish: Option<Finish>,
    logprob: f64,
) -> Chunk {
    let ended = finish.is_some() || row.n_tokens >= params.max_new;
    if ended && finish != Some(Finish::Stop) {
        let tail = row.utf8.finish();
        if append_and_check_stop(row, &tail, &params.stop) {
            finish = Some(Finish::Stop);
        }
    }
    let end = if ended {
        row.done = true;
        row.text.len()
    } else {
        (row.text.len() - stop_prefix_len(&row.text, &params.stop)).max(row.emitted)
    };
    let chunk = Chunk {
        text: row.text[row.emitted..end].to_string(),
        tokens,
        finish,
        logprob: params.logprobs.then_some(logprob),
    };
    row.emitted = end;
    chunk
}

/// What a row did with its next-token distribution.
enum Took {
    /// The model is unsure (adaptive chunk ends): the chunk ends before this token, and
    /// the row keeps the distribution for its copies to sample from.
    Unsure,
    /// A token was sampled: its log-probability (0 when not asked for) and whether it
    /// ended the row.
    Token {
        logprob: f64,
        finish: Option<Finish>,
    },
}

/// Samples the next token of `row` (its `produced`-th of this chunk) from `logits`.
fn take_token(
    row: &mut Row,
    logits: &[f32],
    params: &Params,
    produced: usize,
    rng: &mut w2s_core::RowRng,
    vocab: &llama_cpp_2::vocab::LlamaVocab<'_>,
) -> Took {
    if let Some(end) = params.chunk_end {
        if produced >= end.min_tokens() && w2s_core::sampling::entropy(logits) > end.entropy() {
            row.pending = None;
            row.held = Some(logits.to_vec());
            return Took::Unsure;
        }
    }
    let tok = LlamaToken(sample_token(logits, &params.sampling, rng) as i32);
    let mut logprob = 0.0;
    if params.record || params.logprobs {
        logprob = logits
            .get(tok.0.max(0) as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY) as f64
            - w2s_core::sampling::log_sum_exp(logits);
        if params.record {
            row.sampled
                .push((vocab.token_to_piece(tok, true, None), logprob));
        }
    }
    row.pending = None;
    row.n_tokens += 1;
    if vocab.is_eog(tok) {
        return Took::Token {
            logprob,
            finish: Some(Finish::Eos),
        };
    }
    let piece = row.utf8.push(&vocab.token_to_piece(tok, false, None));
    if append_and_check_stop(row, &piece, &params.stop) {
        return Took::Token {
            logprob,
            finish: Some(Finish::Stop),
        };
    }
    row.pending = Some(tok);
    Took::Token {
        logprob,
        finish: None,
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
