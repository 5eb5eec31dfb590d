//! Emulated fine-tuning (proxy tuning): at every token the strong model samples from
//! softmax(strong + beta * (tuned - untuned)) over one shared vocabulary, with the same
//! sampler as the search. Token-level, so each of the three models keeps its own KV cache
//! of the row (its own template's prompt, then the shared response tokens).

use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use w2s_core::sampling::sample_token;
use w2s_core::text::{find_stop, stop_search_start, Utf8Accumulator};
use w2s_core::{Finish, PromptTemplate, RowRng, SamplingParams};

use crate::error::LlamaError;
use crate::model::{Model, ModelContext};
use crate::seqs::decode_prompt;

/// Checks that two models have the same token list (same count, same text of every
/// token), else says where they differ.
pub fn same_vocabulary(a: &Model, b: &Model) -> Result<(), LlamaError> {
    let differ = |what: String| {
        LlamaError::Vocabulary(format!(
            "EFT needs one shared vocabulary, but {} and {} differ: {what}; use models of one family (e.g. Qwen2.5-Coder 1.5B and 0.5B) or another method",
            a.path().display(),
            b.path().display()
        ))
    };
    let (na, nb) = (a.n_vocab(), b.n_vocab());
    if na != nb {
        return Err(differ(format!("{na} versus {nb} tokens")));
    }
    let (va, vb) = (a.llama().vocab(), b.llama().vocab());
    for id in 0..na as i32 {
        let (ta, tb) = (va.text(LlamaToken(id)), vb.text(LlamaToken(id)));
        if ta != tb {
            let show = |t: Option<&std::ffi::CStr>| {
                t.map_or("(none)".into(), |c| c.to_string_lossy().into_owned())
            };
            return Err(differ(format!(
                "token {id} is {:?} versus {:?}",
                show(ta),
                show(tb)
            )));
        }
    }
    Ok(())
}

/// One EFT response.
#[derive(Debug, Clone, PartialEq)]
pub struct EftOutput {
    /// The response (prompt excluded).
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// Tokens sampled (an end-of-generation token included).
    pub tokens: usize,
    /// Time in the strong model.
    pub strong_time: Duration,
    /// Time in the tuned model.
    pub tuned_time: Duration,
    /// Time in the untuned model.
    pub untuned_time: Duration,
    /// Wall time.
    pub total_time: Duration,
}

/// A model with its template and, while generating, its context.
struct Part {
    model: Arc<Model>,
    template: PromptTemplate,
    engine: Option<ModelContext>,
}

/// Proxy tuning over three models that share one vocabulary.
pub struct ProxyTuner {
    parts: [Part; 3],
    threads: i32,
}

impl ProxyTuner {
    /// Strong, tuned and untuned models with their templates; refuses models whose
    /// vocabularies differ.
    pub fn new(
        strong: (Arc<Model>, PromptTemplate),
        tuned: (Arc<Model>, PromptTemplate),
        untuned: (Arc<Model>, PromptTemplate),
        threads: usize,
    ) -> Result<Self, LlamaError> {
        same_vocabulary(&strong.0, &tuned.0)?;
        if !Arc::ptr_eq(&tuned.0, &untuned.0) {
            same_vocabulary(&strong.0, &untuned.0)?;
        }
        let part = |(model, template): (Arc<Model>, PromptTemplate)| Part {
            model,
            template,
            engine: None,
        };
        Ok(ProxyTuner {
            parts: [part(strong), part(tuned), part(untuned)],
            threads: threads.max(1) as i32,
        })
    }

    /// Generates one response to `prompt` with weight `beta`; row 0 of a search with the
    /// same seed draws the same random numbers, so beta = 0 is plain sampling.
    pub fn generate(
        &mut self,
        prompt: &str,
        beta: f64,
        max_new: usize,
        sampling: &SamplingParams,
        stop: &[String],
        seed: u64,
    ) -> Result<EftOutput, LlamaError> {
        let started = Instant::now();
        let mut times = [Duration::ZERO; 3];
        let mut batch = LlamaBatch::new(512, 1);
        let mut logits: Vec<Vec<f32>> = Vec::with_capacity(3);
        let mut prompt_lens = [0usize; 3];
        for (i, part) in self.parts.iter_mut().enumerate() {
            let t = Instant::now();
            let text = part.model.render(&part.template.fill(prompt)?)?;
            let tokens = part.model.tokenize_prompt(&text);
            if tokens.is_empty() {
                return Err(w2s_core::ConfigError::EmptyPrompt.into());
            }
            part.model.check_fits(tokens.len(), max_new)?;
            let n_ctx = u32::try_from(tokens.len() + max_new + 8)
                .map_err(|_| LlamaError::Usage("context too large"))?;
            let engine =
                ModelContext::ensure(&mut part.engine, &part.model, n_ctx, 1, 512, self.threads)?;
            logits.push(decode_prompt(
                &mut engine.ctx,
                &mut batch,
                &tokens,
                0,
                None,
            )?);
            prompt_lens[i] = tokens.len();
            times[i] += t.elapsed();
        }
        let strong = self.parts[0].model.clone();
        let vocab = strong.llama().vocab();
        let mut rng = RowRng::new(seed, 0);
        let (mut text, mut utf8) = (String::new(), Utf8Accumulator::new());
        let mut mixed = vec![0f32; logits[0].len()];
        let mut finish = Finish::Length;
        let mut n = 0;
        while n < max_new {
            for (j, m) in mixed.iter_mut().enumerate() {
                let (s, t, u) = (logits[0][j], logits[1][j], logits[2][j]);
                *m = (s as f64 + beta * (t as f64 - u as f64)) as f32;
            }
            let tok = LlamaToken(sample_token(&mixed, sampling, &mut rng) as i32);
            n += 1;
            if vocab.is_eog(tok) {
                finish = Finish::Eos;
                break;
            }
            let piece = utf8.push(&vocab.token_to_piece(tok, false, None));
            text.push_str(&piece);
            let from = stop_search_start(text.len(), piece.len(), stop);
            if let Some(at) = find_stop(&text, stop, from) {
                text.truncate(at);
                finish = Finish::Stop;
                break;
            }
            if n == max_new {
                break;
            }
            for (i, part) in self.parts.iter_mut().enumerate() {
                let t = Instant::now();
                let engine = part
                    .engine
                    .as_mut()
                    .ok_or(LlamaError::Usage("no context"))?;
                batch.clear();
                batch
                    .add(tok, (prompt_lens[i] + n - 1) as i32, &[0], true)
                    .map_err(LlamaError::from)?;
                engine.ctx.decode(&mut batch).map_err(LlamaError::from)?;
                logits[i].clear();
                logits[i].extend_from_slice(engine.ctx.get_logits_ith(0));
                times[i] += t.elapsed();
            }
        }
        if finish != Finish::Stop {
            text.push_str(&utf8.finish());
        }
        Ok(EftOutput {
            text,
            finish,
            tokens: n,
            strong_time: times[0],
            tuned_time: times[1],
            untuned_time: times[2],
            total_time: started.elapsed(),
        })
    }
}
