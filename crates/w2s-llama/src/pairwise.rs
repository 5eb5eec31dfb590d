//! A GGUF model as a pairwise judge, in the style of AlpacaEval: asked through its own
//! chat template which of two responses to an instruction is better, it answers with
//! the letter A or B, and the verdict is the probability of the first letter against
//! the second under the model (not a sampled word). The answer is begun for it ("The
//! better response is Response"), so that the next token is the letter: asked for a bare
//! letter instead, Qwen2.5-Coder-1.5B-Instruct put 0.54 on "Paris" against an off-topic
//! reply to "What is the capital of France?"; with the answer begun, 0.87. Every pair is judged in both orders,
//! decoded together in one batch, so that position bias cancels in the mean.

use std::sync::Arc;

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use w2s_core::sampling::log_sum_exp;

use crate::chat::Message;
use crate::error::LlamaError;
use crate::model::{Model, ModelContext};

/// What the judge is told about its task.
const SYSTEM: &str =
    "You are a careful and impartial judge of the answers AI assistants give to instructions.";

/// The start of the judge's answer; the next token is the letter.
const ANSWER: &str = "The better response is Response";

/// The letters, as they follow [`ANSWER`].
const LETTERS: [&str; 2] = [" A", " B"];

/// Stands for a response while the prompt is rendered; never in real text.
const SLOT: [&str; 3] = [
    "\u{1}W2S-INSTRUCTION\u{1}",
    "\u{1}W2S-A\u{1}",
    "\u{1}W2S-B\u{1}",
];

/// Tokens decoded in one llama.cpp call at most.
const N_BATCH: u32 = 512;

/// The verdicts on one pair, in both orders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// P(`a` is better) when `a` is shown first (as response A).
    pub a_first: f64,
    /// P(`a` is better) when `a` is shown second (as response B).
    pub a_second: f64,
    /// The probability the judge puts on the two answer letters together, averaged over
    /// the two orders (near 1: it answers as asked).
    pub answer_mass: f64,
}

impl Verdict {
    /// P(`a` is better), the two orders averaged.
    pub fn mean(&self) -> f64 {
        0.5 * (self.a_first + self.a_second)
    }

    /// Whether the two orders prefer different responses.
    pub fn orders_disagree(&self) -> bool {
        (self.a_first > 0.5) != (self.a_second > 0.5)
    }
}

/// A model that compares two responses.
pub struct PairJudge {
    model: Arc<Model>,
    threads: i32,
    letters: [LlamaToken; 2],
    engine: Option<ModelContext>,
}

impl PairJudge {
    /// A judge on `model`: it needs a chat template, and ` A` and ` B` must each be one token.
    pub fn new(model: Arc<Model>, threads: usize) -> Result<Self, LlamaError> {
        let refuse = |reason: String| LlamaError::Judge {
            path: model.path().to_path_buf(),
            reason,
        };
        model
            .chat_template()
            .map_err(|_| refuse("the model file has no chat template".into()))?;
        let mut letters = [LlamaToken(0); 2];
        for (slot, letter) in letters.iter_mut().zip(LETTERS) {
            match model.tokenize_response(letter)[..] {
                [tok] => *slot = tok,
                ref toks => {
                    return Err(refuse(format!(
                        "the answer '{}' is {} tokens in its vocabulary, not one",
                        letter.trim(),
                        toks.len()
                    )))
                }
            }
        }
        if letters[0] == letters[1] {
            return Err(refuse("the answers A and B are the same token".into()));
        }
        Ok(PairJudge {
            model,
            threads: threads.max(1) as i32,
            letters,
            engine: None,
        })
    }

    /// A context of at least `cells` KV cells for `n_seq` sequences, its cache empty.
    fn context(&mut self, cells: usize, n_seq: u32) -> Result<&mut ModelContext, LlamaError> {
        let n_ctx = u32::try_from(cells).map_err(|_| LlamaError::Usage("context too large"))?;
        ModelContext::ensure(
            &mut self.engine,
            &self.model,
            n_ctx,
            n_seq,
            N_BATCH,
            self.threads,
        )
    }

    /// The model file.
    pub fn path(&self) -> &std::path::Path {
        self.model.path()
    }

    /// The user message that asks for a verdict.
    pub fn question(instruction: &str, first: &str, second: &str) -> String {
        format!(
            "Which of two responses answers the instruction better? Prefer the response that is \
             helpful, accurate and on topic.\n\n\
             ## Instruction\n\n{instruction}\n\n## Response A\n\n{first}\n\n## Response B\n\n{second}\n\n\
             Which response is better, A or B?"
        )
    }

    /// The judge's prompt as tokens: the chat markup with special tokens, the instruction
    /// and the responses as plain text (so a response cannot end the turn early).
    pub fn prompt_tokens(
        &self,
        instruction: &str,
        first: &str,
        second: &str,
    ) -> Result<Vec<LlamaToken>, LlamaError> {
        let user = Self::question(SLOT[0], SLOT[1], SLOT[2]);
        let mut text = self
            .model
            .render_messages(
                &[
                    Message {
                        role: "system",
                        content: SYSTEM,
                    },
                    Message {
                        role: "user",
                        content: &user,
                    },
                ],
                true,
            )
            .map_err(|reason| LlamaError::Judge {
                path: self.model.path().to_path_buf(),
                reason: format!("its chat template failed: {reason}"),
            })?;
        text.push_str(ANSWER);
        let mut tokens = Vec::new();
        let mut rest = text.as_str();
        let mut at_start = true;
        for (slot, value) in SLOT.iter().zip([instruction, first, second]) {
            let (markup, after) = rest.split_once(slot).ok_or_else(|| LlamaError::Judge {
                path: self.model.path().to_path_buf(),
                reason: "its chat template drops the user's message".into(),
            })?;
            tokens.extend(self.markup_tokens(markup, at_start));
            tokens.extend(self.model.tokenize_response(value));
            at_start = false;
            rest = after;
        }
        tokens.extend(self.markup_tokens(rest, false));
        Ok(tokens)
    }

    fn markup_tokens(&self, text: &str, at_start: bool) -> Vec<LlamaToken> {
        if at_start {
            self.model.tokenize_prompt(text)
        } else {
            let vocab = self.model.llama().vocab();
            vocab.tokenize(text.as_bytes(), false, true)
        }
    }

    /// Judges `a` against `b` in both orders, the two prompts decoded in one batch (their
    /// common beginning once).
    pub fn compare(&mut self, instruction: &str, a: &str, b: &str) -> Result<Verdict, LlamaError> {
        let orders = [
            self.prompt_tokens(instruction, a, b)?,
            self.prompt_tokens(instruction, b, a)?,
        ];
        let longest = orders[0].len().max(orders[1].len());
        self.model.check_fits(longest, 1)?;
        let shared = orders[0]
            .iter()
            .zip(&orders[1])
            .take_while(|(x, y)| x == y)
            .count()
            .min(orders[0].len().min(orders[1].len()) - 1);
        let cells = orders[0].len() + orders[1].len() - shared + 8;
        let ctx = &mut self.context(cells, 2)?.ctx;
        let mut batch = LlamaBatch::new(N_BATCH as usize, 2);
        // (token, position, sequence, wants logits)
        let mut work: Vec<(LlamaToken, usize, i32, bool)> = Vec::new();
        for (pos, &tok) in orders[0][..shared].iter().enumerate() {
            work.push((tok, pos, 0, false));
        }
        let shared_end = work.len();
        for (seq, toks) in orders.iter().enumerate() {
            for (pos, &tok) in toks.iter().enumerate().skip(shared) {
                work.push((tok, pos, seq as i32, pos + 1 == toks.len()));
            }
        }
        let mut last_logits: [Vec<f32>; 2] = [Vec::new(), Vec::new()];
        let mut start = 0;
        while start < work.len() {
            // The shared beginning goes first, alone, so that it can be copied to the
            // second sequence before that sequence's own tokens are decoded.
            let end = if start < shared_end {
                shared_end.min(start + N_BATCH as usize)
            } else {
                work.len().min(start + N_BATCH as usize)
            };
            batch.clear();
            for &(tok, pos, seq, logits) in &work[start..end] {
                batch
                    .add(tok, pos as i32, &[seq], logits)
                    .map_err(LlamaError::from)?;
            }
            ctx.decode(&mut batch).map_err(LlamaError::from)?;
            for (i, &(_, _, seq, logits)) in work[start..end].iter().enumerate() {
                if logits {
                    last_logits[seq as usize] = ctx.get_logits_ith(i as i32).to_vec();
                }
            }
            if end == shared_end && shared > 0 {
                ctx.kv_cache_seq_cp(0, 1, None, None)
                    .map_err(LlamaError::from)?;
            }
            start = end;
        }
        let [first, second] = last_logits.map(|l| letter_probs(&l, self.letters));
        Ok(Verdict {
            a_first: first.0,
            a_second: 1.0 - second.0,
            answer_mass: 0.5 * (first.1 + second.1),
        })
    }
}

impl PairJudge {
    /// P(response A is better) for one order, decoded alone in a fresh context: the
    /// plain reading that [`PairJudge::compare`]'s batched pass must agree with.
    pub fn p_first_alone(
        &mut self,
        instruction: &str,
        first: &str,
        second: &str,
    ) -> Result<f64, LlamaError> {
        let tokens = self.prompt_tokens(instruction, first, second)?;
        self.model.check_fits(tokens.len(), 1)?;
        self.engine = None;
        let engine = self.context(tokens.len() + 8, 1)?;
        let mut batch = LlamaBatch::new(N_BATCH as usize, 1);
        let logits = crate::seqs::decode_prompt(&mut engine.ctx, &mut batch, &tokens, 0, None)?;
        self.engine = None;
        Ok(letter_probs(&logits, self.letters).0)
    }
}

/// P(first letter | one of the two letters), and the two letters' share of all the
/// probability.
pub fn letter_probs(logits: &[f32], letters: [LlamaToken; 2]) -> (f64, f64) {
    let at = |t: LlamaToken| {
        logits
            .get(t.0.max(0) as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY) as f64
    };
    let (a, b) = (at(letters[0]), at(letters[1]));
    let p_first = 1.0 / (1.0 + (b - a).exp());
    let top = a.max(b);
    let pair = top + ((a - top).exp() + (b - top).exp()).ln();
    let all = log_sum_exp(logits);
    (p_first, (pair - all).exp().min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letter_probabilities_ignore_other_tokens_but_report_their_mass() {
        let mut logits = vec![f32::NEG_INFINITY; 6];
        logits[1] = (3f32).ln(); // A
        logits[4] = 0.0; // B
        let (p, mass) = letter_probs(&logits, [LlamaToken(1), LlamaToken(4)]);
        assert!(
            (p - 0.75).abs() < 1e-6 && (mass - 1.0).abs() < 1e-6,
            "{p} {mass}"
        );
        logits[0] = (4f32).ln(); // another token, as likely as A and B together
        let (p, mass) = letter_probs(&logits, [LlamaToken(1), LlamaToken(4)]);
        assert!(
            (p - 0.75).abs() < 1e-6 && (mass - 0.5).abs() < 1e-6,
            "{p} {mass}"
        );
    }

    #[test]
    fn the_verdict_averages_orders_and_sees_disagreement() {
        let v = Verdict {
            a_first: 0.9,
            a_second: 0.3,
            answer_mass: 1.0,
        };
        assert!((v.mean() - 0.6).abs() < 1e-12 && v.orders_disagree());
        let w = Verdict {
            a_first: 0.7,
            a_second: 0.6,
            answer_mass: 1.0,
        };
        assert!(!w.orders_disagree());
    }
}
