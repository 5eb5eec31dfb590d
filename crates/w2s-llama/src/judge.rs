//! A GGUF model as a judge: asked through its own chat template to rate a response with
//! one digit, it scores the response by the expected rating under its probabilities of
//! the digit tokens (not by a sampled number), so the score is smooth and deterministic.

use std::sync::Arc;

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use w2s_core::sampling::log_sum_exp;

use crate::chat::Message;
use crate::error::LlamaError;
use crate::model::{Model, ModelContext};
use crate::seqs::decode_prompt;

/// Lowest and highest rating: single digits, one token each in common vocabularies.
pub const RATINGS: std::ops::RangeInclusive<u32> = 1..=9;

/// What the judge is asked to rate (a closed set: each has its own wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rubric {
    /// How positive the text (prompt + response, a movie review) is.
    Positivity,
    /// How helpful, correct and clear the response to the instruction is.
    Helpfulness,
}

/// A model that rates responses.
pub struct Judge {
    model: Arc<Model>,
    rubric: Rubric,
    threads: i32,
    digits: Vec<(LlamaToken, f64)>,
    engine: Option<ModelContext>,
}

impl Judge {
    /// A judge on `model` (it needs a chat template, and each rating digit must be one token).
    pub fn new(model: Arc<Model>, rubric: Rubric, threads: usize) -> Result<Self, LlamaError> {
        model.chat_template()?;
        let mut digits = Vec::new();
        for d in RATINGS {
            match model.tokenize_response(&d.to_string())[..] {
                [tok] => digits.push((tok, d as f64)),
                _ => {
                    return Err(LlamaError::ChatTemplate {
                        path: model.path().to_path_buf(),
                        reason: format!("rating {d} is not a single token, so it cannot judge"),
                    })
                }
            }
        }
        Ok(Judge {
            model,
            rubric,
            threads: threads.max(1) as i32,
            digits,
            engine: None,
        })
    }

    /// The chat message that asks for a rating.
    pub fn question(&self, prompt: &str, response: &str) -> String {
        match self.rubric {
            Rubric::Positivity => format!(
                "Here is the text of a movie review:\n\n{prompt}{response}\n\nHow positive is this review? \
                 Answer with one digit from 1 (very negative) to 9 (very positive) and nothing else."
            ),
            Rubric::Helpfulness => format!(
                "Here is an instruction and a response to it.\n\nInstruction:\n{prompt}\n\nResponse:\n{response}\n\n\
                 How helpful, correct and clear is the response? Answer with one digit from 1 (useless) \
                 to 9 (excellent) and nothing else."
            ),
        }
    }

    /// The expected rating in [1, 9].
    pub fn rate(&mut self, prompt: &str, response: &str) -> Result<f64, LlamaError> {
        let question = self.question(prompt, response);
        let text = self
            .model
            .render_messages(
                &[Message {
                    role: "user",
                    content: &question,
                }],
                true,
            )
            .map_err(|reason| LlamaError::ChatTemplate {
                path: self.model.path().to_path_buf(),
                reason,
            })?;
        let tokens = self.model.tokenize_prompt(&text);
        self.model.check_fits(tokens.len(), 1)?;
        let n_ctx =
            u32::try_from(tokens.len() + 8).map_err(|_| LlamaError::Usage("context too large"))?;
        let engine =
            ModelContext::ensure(&mut self.engine, &self.model, n_ctx, 1, 512, self.threads)?;
        let mut batch = LlamaBatch::new(512, 1);
        let logits = decode_prompt(&mut engine.ctx, &mut batch, &tokens, 0, None)?;
        Ok(expected_rating(&logits, &self.digits))
    }
}

/// Expected rating under the softmax restricted to the rating tokens.
pub fn expected_rating(logits: &[f32], digits: &[(LlamaToken, f64)]) -> f64 {
    let picked: Vec<f32> = digits
        .iter()
        .map(|(t, _)| {
            logits
                .get(t.0.max(0) as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY)
        })
        .collect();
    let z = log_sum_exp(&picked);
    digits
        .iter()
        .zip(&picked)
        .map(|((_, v), &l)| v * (l as f64 - z).exp())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_rating_weights_digits_by_probability() {
        let digits: Vec<(LlamaToken, f64)> =
            (0..9).map(|i| (LlamaToken(i), (i + 1) as f64)).collect();
        let mut logits = vec![f32::NEG_INFINITY; 12];
        logits[2] = 0.0; // rating 3
        logits[6] = 0.0; // rating 7
        logits[10] = 50.0; // not a rating token: ignored
        assert!((expected_rating(&logits, &digits) - 5.0).abs() < 1e-9);
        logits[6] = (3f32).ln(); // 3:1 for rating 7
        assert!((expected_rating(&logits, &digits) - 6.0).abs() < 1e-6);
    }
}
