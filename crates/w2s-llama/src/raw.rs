//! The practical speed limit of the search: a minimal loop straight on llama.cpp that
//! samples `rows` rows of `tokens` tokens in one batch from the strong model, with the
//! same sampler and prompt sharing as the search, and nothing else (no text, no stop
//! strings, no scoring, no selection). `w2s bench` compares every method against it.
//!
//! For CBS the loop also keeps the search's cache layout: every L tokens, W rows are kept
//! and each is copied K times (by sequence copies, as the search does), so the rows share
//! prefixes as beams do and attention runs over as many cells as in the search. Which rows
//! are kept does not change the cost, so the first of every K is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use w2s_core::sampling::sample_token;
use w2s_core::{PromptTemplate, RowRng, SamplingParams};

use crate::error::LlamaError;
use crate::model::{Model, ModelContext};
use crate::seqs::{decode_prompt, SeqBanks};

/// What the raw loop did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawRun {
    /// Tokens sampled over all rows.
    pub tokens: usize,
    /// Wall time, context creation and prompt encoding included (as in a search).
    pub wall: Duration,
}

/// The raw loop's settings: `rows` rows of `tokens` tokens each.
#[derive(Debug, Clone, Copy)]
pub struct RawBatch {
    /// Rows sampled together (W*K).
    pub rows: usize,
    /// Tokens per row.
    pub tokens: usize,
    /// The sampler (as in the search).
    pub sampling: SamplingParams,
    /// Seed of the rows' random streams.
    pub seed: u64,
    /// CPU threads.
    pub threads: usize,
    /// CBS's layout: `(K, L)`: every L tokens the first row of every K is kept and
    /// copied K times. `None`: independent rows (Best-of-N, sampling).
    pub beams: Option<(usize, usize)>,
}

/// Samples `rows` x `tokens` tokens (end-of-generation tokens are sampled like any
/// other, so every row runs to `tokens`).
pub fn raw_batch_sample(
    model: &Arc<Model>,
    template: &PromptTemplate,
    prompt: &str,
    spec: &RawBatch,
) -> Result<RawRun, LlamaError> {
    let RawBatch {
        rows,
        tokens,
        sampling,
        seed,
        threads,
        beams,
    } = *spec;
    let sampling = &sampling;
    let started = Instant::now();
    let text = model.render(&template.fill(prompt)?)?;
    let prompt = model.tokenize_prompt(&text);
    model.check_fits(prompt.len(), tokens)?;
    let mut banks = SeqBanks::new(rows);
    let n_ctx = (prompt.len() + rows * tokens + 8) as u32;
    let n_batch = 512.max(rows);
    let mut engine = ModelContext::new(
        model.clone(),
        n_ctx,
        banks.n_seq(),
        n_batch as u32,
        threads.max(1) as i32,
    )?;
    let mut batch = LlamaBatch::new(n_batch, 1);
    let first = decode_prompt(&mut engine.ctx, &mut batch, &prompt, banks.seq(0), None)?;
    banks.share_prompt(&mut engine.ctx, rows)?;
    let mut rngs: Vec<RowRng> = (0..rows as u64).map(|i| RowRng::new(seed, i)).collect();
    let mut last: Vec<LlamaToken> = rngs
        .iter_mut()
        .map(|rng| LlamaToken(sample_token(&first, sampling, rng) as i32))
        .collect();
    let layout = vec![(); rows];
    for step in 1..tokens {
        if let Some((k, _)) = beams.filter(|&(k, l)| k > 0 && l > 0 && step % l == 0) {
            let parents: Vec<usize> = (0..rows).map(|i| (i / k) * k).collect();
            banks.reorder(&mut engine.ctx, &layout, &parents)?;
            last = parents.iter().map(|&p| last[p]).collect();
        }
        batch.clear();
        for (r, &tok) in last.iter().enumerate() {
            let pos = (prompt.len() + step - 1) as i32;
            batch
                .add(tok, pos, &[banks.seq(r)], true)
                .map_err(LlamaError::from)?;
        }
        engine.ctx.decode(&mut batch).map_err(LlamaError::from)?;
        for (r, rng) in rngs.iter_mut().enumerate() {
            let logits = engine.ctx.get_logits_ith(r as i32);
            last[r] = LlamaToken(sample_token(logits, sampling, rng) as i32);
        }
    }
    Ok(RawRun {
        tokens: rows * tokens,
        wall: started.elapsed(),
    })
}
