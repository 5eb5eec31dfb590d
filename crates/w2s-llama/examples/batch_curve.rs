//! How llama.cpp's throughput on this machine grows with the rows decoded together: the
//! figure that decides whether merging several searches' rows into one decode pays.
//!
//! For each row count it prints the strong model's sampling rate (one token per row per
//! decode, as in a search's chunk) and a small model's scoring rate (chunks of 5 tokens
//! per row, as the guide scores them), both warm and net of context creation and prompt.
//!
//! ```sh
//! cargo run --release -p w2s-llama --example batch_curve -- STRONG.gguf SMALL.gguf [THREADS]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use w2s_core::{PromptTemplate, SamplingParams, ScoreRequest, Scorer};
use w2s_llama::{raw_batch_sample, LlamaScorer, LoadOptions, Model, RawBatch};

const ROWS: [usize; 5] = [8, 16, 32, 64, 128];
const WORDS: &[&str] = &[
    " the", " film", " was", " quite", " good", " and", " I", " liked", " its", " story", " but",
    " not", " ending", " which", " felt", " rushed", " a", " bit", " too", " much",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(strong), Some(small)) = (args.first(), args.get(1)) else {
        return Err("usage: batch_curve STRONG.gguf SMALL.gguf [THREADS]".into());
    };
    let threads: usize = args.get(2).map_or(Ok(2), |t| t.parse())?;
    let strong = Model::load(&PathBuf::from(strong), LoadOptions::default())?;
    let small = Model::load(&PathBuf::from(small), LoadOptions::default())?;
    let template = PromptTemplate::bare();
    let prompt = "I rented this movie last weekend and";
    let sampling = SamplingParams::default();

    println!("rows  strong sample tok/s  (x vs 16)   small sample tok/s  (x vs 16)   small score tok/s  (x vs 16)");
    let mut base: Option<(f64, f64, f64)> = None;
    for (i, rows) in ROWS.iter().copied().enumerate() {
        let rate = |model: &std::sync::Arc<Model>| -> Result<f64, Box<dyn std::error::Error>> {
            let run = |tokens| {
                raw_batch_sample(
                    model,
                    &template,
                    prompt,
                    &RawBatch {
                        rows,
                        tokens,
                        sampling,
                        seed: 1,
                        threads,
                        beams: None,
                    },
                )
            };
            if i == 0 {
                run(4)?; // warm-up
            }
            let short = run(2)?;
            let long = run(26)?;
            Ok((rows * 24) as f64 / (long.wall - short.wall).as_secs_f64())
        };
        let s = rate(&strong)?;
        let m = rate(&small)?;
        let score = score_rate(&small, &template, prompt, rows, threads, i == 0)?;
        let b = *base.get_or_insert((s, m, score));
        if rows < 16 {
            base = None;
        }
        println!(
            "{rows:>4}  {s:>19.1}  {:>9.2}   {m:>18.1}  {:>9.2}   {score:>17.1}  {:>9.2}",
            s / b.0,
            m / b.1,
            score / b.2
        );
    }
    Ok(())
}

/// Tokens per second scored by `rows` rows growing 5 words a step for 6 steps, net of the
/// prompt (a run of 1 step is subtracted).
fn score_rate(
    model: &std::sync::Arc<Model>,
    template: &PromptTemplate,
    prompt: &str,
    rows: usize,
    threads: usize,
    warm: bool,
) -> Result<f64, Box<dyn std::error::Error>> {
    let texts: Vec<String> = (0..rows)
        .map(|r| {
            (0..30)
                .map(|j| WORDS[(r * 7 + j * (r % 5 + 1)) % WORDS.len()])
                .collect::<String>()
        })
        .collect();
    let run = |steps: usize| -> Result<(u64, f64), Box<dyn std::error::Error>> {
        let mut scorer = LlamaScorer::new(model.clone(), template.clone(), threads);
        let t = Instant::now();
        scorer.begin(prompt, rows, 64)?;
        for step in 1..=steps {
            let cut: Vec<String> = texts
                .iter()
                .map(|t| t.split_inclusive(' ').take(step * 5 + 1).collect())
                .collect();
            let reqs = ScoreRequest::per_text(&cut, false);
            scorer.score(&reqs)?;
        }
        Ok((scorer.tokens_evaluated(), t.elapsed().as_secs_f64()))
    };
    if warm {
        run(2)?;
    }
    let (t1, s1) = run(1)?;
    let (t6, s6) = run(6)?;
    Ok((t6 - t1) as f64 / (s6 - s1))
}
