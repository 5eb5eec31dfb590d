//! KV-cache sequence bookkeeping shared by the strong model and the scorers.
//!
//! Rows live in one of two banks of sequence ids. Reordering copies each new row's parent
//! sequence into the other bank (a metadata operation in llama.cpp's unified KV cache: the
//! cells are shared, not copied) and drops the old bank, so no token is re-encoded.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use w2s_core::Interrupt;

use crate::error::LlamaError;

pub(crate) struct SeqBanks {
    base: usize,
    cap: usize,
    bank: usize,
}

impl SeqBanks {
    pub(crate) fn new(rows: usize) -> Self {
        SeqBanks::at(0, rows)
    }

    /// Banks for `rows` rows from sequence id `base` on (one search of several sharing a
    /// context).
    pub(crate) fn at(base: usize, rows: usize) -> Self {
        SeqBanks {
            base,
            cap: rows.max(1),
            bank: 0,
        }
    }

    /// Sequence ids the banks use (from their base).
    pub(crate) fn n_seq(&self) -> u32 {
        (2 * self.cap) as u32
    }

    /// Sequence id of row `row`.
    pub(crate) fn seq(&self, row: usize) -> i32 {
        (self.base + self.bank * self.cap + row) as i32
    }

    /// Drops every cell of both banks from the cache.
    pub(crate) fn clear(&self, ctx: &mut LlamaContext<'_>) -> Result<(), LlamaError> {
        for s in self.base..self.base + 2 * self.cap {
            ctx.kv_cache_seq_rm(s as i32, None, None)
                .map_err(LlamaError::from)?;
        }
        Ok(())
    }

    /// After the prompt was decoded into row 0, lets rows 1..rows share it.
    pub(crate) fn share_prompt(
        &self,
        ctx: &mut LlamaContext<'_>,
        rows: usize,
    ) -> Result<(), LlamaError> {
        for r in 1..rows {
            ctx.kv_cache_seq_cp(self.seq(0), self.seq(r), None, None)
                .map_err(LlamaError::from)?;
        }
        Ok(())
    }

    /// New row `i` continues old row `parents[i]`; returns the new rows' states.
    pub(crate) fn reorder<T: Clone>(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        rows: &[T],
        parents: &[usize],
    ) -> Result<Vec<T>, LlamaError> {
        if parents.len() > self.cap || parents.iter().any(|&p| p >= rows.len()) {
            return Err(LlamaError::Usage("reorder names a missing row"));
        }
        let next = 1 - self.bank;
        let cache = LlamaError::from;
        for (i, &p) in parents.iter().enumerate() {
            let dst = (self.base + next * self.cap + i) as i32;
            ctx.kv_cache_seq_cp(self.seq(p), dst, None, None)
                .map_err(cache)?;
        }
        for r in 0..rows.len() {
            ctx.kv_cache_seq_rm(self.seq(r), None, None)
                .map_err(cache)?;
        }
        self.bank = next;
        Ok(parents.iter().map(|&p| rows[p].clone()).collect())
    }
}

/// Prompt tokens per decode when an interrupt is watched: about a second of work on two
/// CPU cores, so a cancelled prompt stops within a second (llama.cpp's rate on this CPU
/// is flat from 80 to 640 tokens per decode, so smaller pieces cost little).
pub(crate) const INTERRUPTIBLE_PIECE: usize = 256;

/// Decodes `tokens` into sequence `seq` from position 0, in pieces of the batch's size,
/// and returns the logits after the last token. With `interrupt`, pieces are at most
/// [`INTERRUPTIBLE_PIECE`] tokens and it is checked before each: a long prompt stops
/// within one piece of being cancelled.
pub(crate) fn decode_prompt(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    tokens: &[LlamaToken],
    seq: i32,
    interrupt: Option<&Interrupt>,
) -> Result<Vec<f32>, LlamaError> {
    let mut size = ctx.n_batch().max(1) as usize;
    if interrupt.is_some() {
        size = size.min(INTERRUPTIBLE_PIECE);
    }
    let mut last = 0;
    for (c, piece) in tokens.chunks(size).enumerate() {
        check(interrupt)?;
        batch.clear();
        for (j, &tok) in piece.iter().enumerate() {
            let pos = c * size + j;
            let is_last = pos + 1 == tokens.len();
            batch
                .add(tok, pos as i32, &[seq], is_last)
                .map_err(LlamaError::from)?;
            if is_last {
                last = j as i32;
            }
        }
        ctx.decode(batch).map_err(LlamaError::from)?;
    }
    Ok(ctx.get_logits_ith(last).to_vec())
}

/// Fails with [`LlamaError::Cancelled`] if `interrupt` says stop (and records progress).
pub(crate) fn check(interrupt: Option<&Interrupt>) -> Result<(), LlamaError> {
    match interrupt.map(Interrupt::check) {
        Some(Err(e)) => Err(LlamaError::Cancelled(e.to_string())),
        _ => Ok(()),
    }
}
