//! A model served plainly (no search), as OpenAI-style completion engines serve it:
//! sampling continuations of a raw prompt, and echoing a text's per-token log-probabilities.
//! This is what lets one w2s process be the remote sampler or scorer of another.

use std::sync::Arc;

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use w2s_core::sampling::{log_sum_exp, sample_token};
use w2s_core::{
    ExtendRequest, Finish, PromptTemplate, ProposalSetup, Proposer, RowRng, SamplingParams,
};

use crate::error::LlamaError;
use crate::model::{Model, ModelContext};
use crate::strong::LlamaProposer;

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainChoice {
    /// The text (cut before a stop string).
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// Tokens sampled (an end-of-generation token included).
    pub n_tokens: usize,
    /// (token text, log-probability) of each sampled token, when asked for.
    pub tokens: Vec<(String, f64)>,
}

/// How to sample plainly.
#[derive(Debug, Clone)]
pub struct PlainSampling {
    /// Continuations.
    pub n: usize,
    /// Tokens per continuation at most.
    pub max_tokens: usize,
    /// The sampler.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Seed.
    pub seed: u64,
    /// Also return each sampled token with its log-probability.
    pub with_tokens: bool,
}

/// One token of an echoed text.
#[derive(Debug, Clone, PartialEq)]
pub struct EchoToken {
    /// The token's text.
    pub text: String,
    /// Byte offset of the token in the returned text.
    pub offset: usize,
    /// log p(token | everything before it); None for the first token.
    pub logprob: Option<f64>,
}

/// A model answering plain completion requests.
pub struct PlainModel {
    model: Arc<Model>,
    threads: usize,
    proposer: LlamaProposer,
    interrupt: Option<Arc<w2s_core::Interrupt>>,
}

impl PlainModel {
    /// Serves `model` plainly with `threads` CPU threads.
    pub fn new(model: Arc<Model>, threads: usize) -> Self {
        PlainModel {
            proposer: LlamaProposer::new(model.clone(), PromptTemplate::bare(), threads),
            model,
            threads,
            interrupt: None,
        }
    }

    /// Checks `interrupt` between micro-batches of a prompt (see
    /// [`LlamaProposer::set_interrupt`]).
    pub fn set_interrupt(&mut self, interrupt: Option<Arc<w2s_core::Interrupt>>) {
        self.proposer.set_interrupt(interrupt.clone());
        self.interrupt = interrupt;
    }

    /// Tokens its sampling context holds (echo makes a context per call and frees it).
    pub fn context_tokens(&self) -> usize {
        self.proposer.context_tokens()
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Samples `req.n` continuations of `prompt` (given to the model as is) in one batch.
    pub fn sample(
        &mut self,
        prompt: &str,
        req: &PlainSampling,
    ) -> Result<Vec<PlainChoice>, w2s_core::BackendError> {
        let PlainSampling {
            n,
            max_tokens,
            ref sampling,
            ref stop,
            seed,
            with_tokens,
        } = *req;
        let (sampling, stop) = (sampling, stop.as_slice());
        self.proposer.set_record_tokens(with_tokens);
        self.proposer.begin(&ProposalSetup {
            prompt,
            rows: n,
            max_new_tokens: max_tokens,
            sampling,
            stop,
            chunk_end: None,
            logprobs: false,
        })?;
        let mut rngs: Vec<RowRng> = (0..n as u64).map(|i| RowRng::new(seed, i)).collect();
        let mut texts = vec![String::new(); n];
        let mut finish: Vec<Option<Finish>> = vec![None; n];
        let mut used = vec![0usize; n];
        while finish.iter().any(Option::is_none) {
            let mut reqs: Vec<ExtendRequest<'_>> = rngs
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| finish[*i].is_none())
                .map(|(row, rng)| ExtendRequest {
                    row,
                    max_tokens: max_tokens - used[row],
                    rng,
                })
                .collect();
            let rows: Vec<usize> = reqs.iter().map(|r| r.row).collect();
            let chunks = self.proposer.extend(&mut reqs)?;
            for (row, c) in rows.into_iter().zip(chunks) {
                texts[row].push_str(&c.text);
                used[row] += c.tokens;
                finish[row] = c
                    .finish
                    .or((used[row] >= max_tokens).then_some(Finish::Length));
            }
        }
        Ok((0..n)
            .map(|row| PlainChoice {
                text: std::mem::take(&mut texts[row]),
                finish: finish[row].unwrap_or(Finish::Length),
                n_tokens: used[row],
                tokens: self
                    .proposer
                    .sampled_tokens(row)
                    .iter()
                    .map(|(b, lp)| (String::from_utf8_lossy(b).into_owned(), *lp))
                    .collect(),
            })
            .collect())
    }

    /// Echoes `prompt` token by token with each token's log-probability given the ones
    /// before it, then samples `max_tokens` more tokens (greedy at temperature 0), also
    /// with their log-probabilities. Offsets index the returned text (prompt + sample).
    pub fn echo(
        &mut self,
        prompt: &str,
        max_tokens: usize,
        sampling: &SamplingParams,
        seed: u64,
    ) -> Result<(String, Vec<EchoToken>), LlamaError> {
        let tokens = self.model.tokenize_prompt(prompt);
        if tokens.is_empty() {
            return Err(w2s_core::ConfigError::EmptyPrompt.into());
        }
        self.model.check_fits(tokens.len(), max_tokens)?;
        let n_ctx = (tokens.len() + max_tokens + 8) as u32;
        let mut engine = ModelContext::new(self.model.clone(), n_ctx, 1, 512, self.threads as i32)?;
        let mut size = engine.ctx.n_batch().max(1) as usize;
        if self.interrupt.is_some() {
            size = size.min(crate::seqs::INTERRUPTIBLE_PIECE);
        }
        let mut batch = LlamaBatch::new(size.max(1), 1);
        let vocab = self.model.llama().vocab();
        let mut out: Vec<EchoToken> = Vec::with_capacity(tokens.len() + max_tokens);
        let mut text = String::new();
        let push =
            |out: &mut Vec<EchoToken>, text: &mut String, tok: LlamaToken, lp: Option<f64>| {
                let piece =
                    String::from_utf8_lossy(&vocab.token_to_piece(tok, false, None)).into_owned();
                out.push(EchoToken {
                    offset: text.len(),
                    text: piece.clone(),
                    logprob: lp,
                });
                text.push_str(&piece);
            };
        let mut last_logits = Vec::new();
        for (c, piece) in tokens.chunks(size).enumerate() {
            crate::seqs::check(self.interrupt.as_deref())?;
            batch.clear();
            for (j, &tok) in piece.iter().enumerate() {
                batch
                    .add(tok, (c * size + j) as i32, &[0], true)
                    .map_err(LlamaError::from)?;
            }
            engine.ctx.decode(&mut batch).map_err(LlamaError::from)?;
            for (j, &tok) in piece.iter().enumerate() {
                let lp = (!last_logits.is_empty()).then(|| logprob(&last_logits, tok));
                push(&mut out, &mut text, tok, lp);
                last_logits = engine.ctx.get_logits_ith(j as i32).to_vec();
            }
        }
        let mut rng = RowRng::new(seed, 0);
        for step in 0..max_tokens {
            let tok = LlamaToken(sample_token(&last_logits, sampling, &mut rng) as i32);
            push(&mut out, &mut text, tok, Some(logprob(&last_logits, tok)));
            if vocab.is_eog(tok) || step + 1 == max_tokens {
                break;
            }
            batch.clear();
            batch
                .add(tok, (tokens.len() + step) as i32, &[0], true)
                .map_err(LlamaError::from)?;
            engine.ctx.decode(&mut batch).map_err(LlamaError::from)?;
            last_logits = engine.ctx.get_logits_ith(0).to_vec();
        }
        Ok((text, out))
    }
}

fn logprob(logits: &[f32], tok: LlamaToken) -> f64 {
    logits
        .get(tok.0.max(0) as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY) as f64
        - log_sum_exp(logits)
}
