//! Incremental scoring of a set of rows on one llama.cpp context: what [`LlamaScorer`]
//! does for one prompt template and [`LlamaTwinGuide`] for two sharing a context.
//!
//! A [`RowSet`] is one template's prompt (encoded once, shared by its rows through the
//! KV cache) and its rows. A score call plans, for every request, the tokens to run
//! ([`Plan`]): the response is tokenised again, and only the tokens from the first one
//! whose id changed are fed (usually just the new ones). [`decode_plan`] then runs the
//! planned tokens of every row set through the model, a batch at a time, and writes each
//! token's log-probability into its row.
//!
//! [`LlamaScorer`]: crate::LlamaScorer
//! [`LlamaTwinGuide`]: crate::LlamaTwinGuide

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use w2s_core::sampling::log_sum_exp;
use w2s_core::{Interrupt, ScoreRequest};

use crate::boundary::{response_tokens, Anchor};
use crate::error::LlamaError;
use crate::model::Model;
use crate::seqs::{decode_prompt, SeqBanks};

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

/// One prompt template's rows on a context: the prompt and each row's scored tokens.
pub(crate) struct RowSet {
    pub(crate) rows: Vec<Row>,
    pub(crate) banks: SeqBanks,
    pub(crate) prompt: Vec<LlamaToken>,
    pub(crate) anchor: Option<Anchor>,
    prompt_logits: Arc<Vec<f32>>,
    eos: LlamaToken,
}

#[derive(Clone, Default)]
pub(crate) struct Row {
    /// Prompt tokens this row's sequence drops because the response's first token merged
    /// them (0 almost always): the response starts at position `prompt.len() - cut`.
    cut: usize,
    /// Response token ids scored so far (EOS last once ended).
    pub(crate) ids: Vec<LlamaToken>,
    /// log p of each id given everything before it.
    pub(crate) lps: Vec<f64>,
    /// How many of `ids` are in the KV cache (after the prompt).
    fed: usize,
    /// Logits after `ids[fed - 1]`, predicting the next token.
    tail: Option<Arc<Vec<f32>>>,
}

/// The tokens one score call runs, over one or more row sets.
#[derive(Default)]
pub(crate) struct Plan {
    feeds: Vec<Feed>,
    /// Each planned request's new response ids (EOS last if it ended).
    news: Vec<Vec<LlamaToken>>,
    /// Each planned request's (row set, row).
    targets: Vec<(usize, usize)>,
}

/// One token to run through the model.
struct Feed {
    /// Index of its request in the plan.
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

/// Where a row's scoring resumes.
struct Resume {
    /// Prompt positions to run again before the response (a merge changed where the
    /// response starts).
    refeed: Range<usize>,
    /// How many of the row's ids are unchanged (their log-probs are kept).
    kept: usize,
    /// The first new id to feed.
    start: usize,
}

impl RowSet {
    /// Decodes `prompt` into the first row's sequence of `banks` and shares it with the
    /// other `rows`; `eos` is the token that ends a response.
    pub(crate) fn open(
        ctx: &mut LlamaContext<'_>,
        batch: &mut LlamaBatch<'_>,
        (prompt, anchor): (Vec<LlamaToken>, Option<Anchor>),
        banks: SeqBanks,
        rows: usize,
        eos: LlamaToken,
        interrupt: Option<&Interrupt>,
    ) -> Result<RowSet, LlamaError> {
        let prompt_logits = decode_prompt(ctx, batch, &prompt, banks.seq(0), interrupt)?;
        banks.share_prompt(ctx, rows)?;
        Ok(RowSet {
            rows: vec![Row::default(); rows],
            banks,
            prompt,
            anchor,
            prompt_logits: Arc::new(prompt_logits),
            eos,
        })
    }

    /// Context cells these rows need when each starts afresh on `requests`.
    pub(crate) fn cells_for(&self, model: &Model, requests: &[ScoreRequest<'_>]) -> usize {
        self.prompt.len()
            + requests
                .iter()
                .map(|r| response_tokens(model, self.anchor.as_ref(), r.text).1.len() + 1)
                .sum::<usize>()
    }

    /// Plans the tokens to run for `requests` on these rows (set `set` of `plan`),
    /// dropping from the KV cache whatever a row's new tokens replace. Scores a row's
    /// first new token at once where its logits are already stored.
    pub(crate) fn plan(
        &mut self,
        set: usize,
        model: &Model,
        ctx: &mut LlamaContext<'_>,
        requests: &[ScoreRequest<'_>],
        plan: &mut Plan,
        prof: &mut ScorerProfile,
    ) -> Result<(), LlamaError> {
        for req in requests {
            if req.row >= self.rows.len() {
                return Err(LlamaError::Usage("score of a missing row"));
            }
            let t = Instant::now();
            let (cut, mut new) = response_tokens(model, self.anchor.as_ref(), req.text);
            prof.tokenize += t.elapsed();
            if req.ended {
                new.push(self.eos);
            }
            self.plan_row(req, cut, &new, ctx, plan, prof)?;
            plan.news.push(new);
            plan.targets.push((set, req.row));
        }
        Ok(())
    }

    /// Plans the tokens of `req`'s row for its new ids `new` (the plan's next request).
    fn plan_row(
        &mut self,
        req: &ScoreRequest<'_>,
        cut: usize,
        new: &[LlamaToken],
        ctx: &mut LlamaContext<'_>,
        plan: &mut Plan,
        prof: &mut ScorerProfile,
    ) -> Result<(), LlamaError> {
        let at = plan.news.len();
        let p = self.prompt.len();
        let seq = self.banks.seq(req.row);
        let row = &mut self.rows[req.row];
        let base = p - cut;
        let Resume {
            refeed,
            kept: d,
            start,
        } = row.resume(p, cut, new);
        let first_pos = if refeed.is_empty() {
            base + start
        } else {
            refeed.start
        };
        if p - row.cut + row.fed > first_pos || !refeed.is_empty() {
            let t = Instant::now();
            ctx.kv_cache_seq_rm(seq, Some(first_pos as u32), None)
                .map_err(LlamaError::from)?;
            prof.cache += t.elapsed();
        }
        row.lps.truncate(d);
        row.lps.resize(new.len(), 0.0);
        if refeed.is_empty() && start == d && d < new.len() {
            let t = Instant::now();
            let logits = if d == 0 {
                &self.prompt_logits
            } else {
                row.tail.as_ref().unwrap_or(&self.prompt_logits)
            };
            row.lps[d] = log_prob(logits, new[d]);
            prof.log_softmax += t.elapsed();
        }
        let feed_end = new.len() - usize::from(req.ended);
        row.cut = cut;
        row.fed = start.min(feed_end);
        row.tail = None;
        for i in refeed {
            let out = if i + 1 == base && !new.is_empty() {
                Out::Next(0)
            } else {
                Out::Nothing
            };
            plan.push(at, self.prompt[i], seq, i, out);
        }
        for (j, &token) in new.iter().enumerate().take(feed_end).skip(start) {
            let out = if j + 1 < new.len() {
                Out::Next(j + 1)
            } else {
                Out::Tail(j)
            };
            plan.push(at, token, seq, base + j, out);
        }
        Ok(())
    }
}

impl Row {
    /// Where scoring resumes for new ids `new` whose response starts `cut` tokens before
    /// the end of a `p`-token prompt.
    fn resume(&self, p: usize, cut: usize, new: &[LlamaToken]) -> Resume {
        let base = p - cut;
        if cut != self.cut {
            // Rare: the merge changed; this row starts again from the last prompt
            // token both sequences share.
            let lo = base.min(p - self.cut).max(1) - 1;
            return Resume {
                refeed: lo..base,
                kept: 0,
                start: 0,
            };
        }
        let d = self.ids.iter().zip(new).take_while(|(a, b)| a == b).count();
        // Logits predicting new[d]: the prompt's, the stored tail's, or re-feed
        // new[d-1] (or, for a merged start, the prompt token before it).
        let (refeed, start) = if d == 0 && cut > 0 {
            (base - 1..base, 0)
        } else if d == 0 || (d == self.fed && self.tail.is_some()) {
            (base..base, d)
        } else {
            (base..base, d - 1)
        };
        Resume {
            refeed,
            kept: d,
            start,
        }
    }
}

impl Plan {
    fn push(&mut self, req: usize, token: LlamaToken, seq: i32, pos: usize, out: Out) {
        self.feeds.push(Feed {
            req,
            token,
            seq,
            pos: pos as i32,
            out,
        });
    }

    /// Stores each planned request's new ids in its row and returns each request's sum
    /// of log-probs, in plan order.
    pub(crate) fn finish(self, sets: &mut [&mut RowSet]) -> Vec<f64> {
        self.news
            .into_iter()
            .zip(self.targets)
            .map(|(new, (set, r))| {
                let row = &mut sets[set].rows[r];
                row.ids = new;
                row.lps.iter().sum()
            })
            .collect()
    }
}

/// Runs the tokens of `plan` through the model, at most the context's batch a decode
/// (`batch` holds as many), and writes each scored token's log-prob into its row of `sets`; `evaluated[s]` counts the
/// tokens run for set `s`. Checks `interrupt` before each decode.
pub(crate) fn decode_plan(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    plan: &Plan,
    sets: &mut [&mut RowSet],
    interrupt: Option<&Interrupt>,
    evaluated: &mut [u64],
    prof: &mut ScorerProfile,
) -> Result<(), LlamaError> {
    // llama.cpp caps a context's batch at its size; never hand it more.
    let per_decode = ctx.n_batch().max(1) as usize;
    for piece in plan.feeds.chunks(per_decode) {
        // A cancelled search stops within one piece (the rows are begun afresh next).
        crate::seqs::check(interrupt)?;
        let t = Instant::now();
        batch.clear();
        for f in piece {
            batch
                .add(f.token, f.pos, &[f.seq], f.out != Out::Nothing)
                .map_err(LlamaError::from)?;
        }
        let t = lap(&mut prof.copies, t);
        ctx.decode(batch).map_err(LlamaError::from)?;
        let mut t = lap(&mut prof.decode, t);
        prof.decodes += 1;
        for f in piece {
            evaluated[plan.targets[f.req].0] += 1;
        }
        for (k, f) in piece.iter().enumerate() {
            let (set, r) = plan.targets[f.req];
            let row = &mut sets[set].rows[r];
            match f.out {
                Out::Nothing => {}
                Out::Next(j) => {
                    let logits = ctx.get_logits_ith(k as i32);
                    row.lps[j] = log_prob(logits, plan.news[f.req][j]);
                    if j > 0 {
                        row.fed = j;
                    }
                    t = lap(&mut prof.log_softmax, t);
                }
                Out::Tail(j) => {
                    let logits = ctx.get_logits_ith(k as i32);
                    row.tail = Some(Arc::new(logits.to_vec()));
                    row.fed = j + 1;
                    t = lap(&mut prof.copies, t);
                }
            }
        }
    }
    Ok(())
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
