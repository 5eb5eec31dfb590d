//! Times the twin guide against LogRatio over two scorers for the same score calls:
//! 16 rows growing by about 5 small-model tokens a round after a ~30-token prompt, on
//! SmolLM2-135M-Instruct read under a positive and a negative chat template.
//!
//! cargo run --release -p w2s-llama --example twin_timing [rounds] [repeats]
//!
//! Measured with `twin_timing 3 1` on 2 CPU cores shared with other builds (load about
//! 10, so only roughly): two scorers 33.6 s, twin 11.0 s, ratio 0.33.

use std::time::{Duration, Instant};

use w2s_core::{Guide, LogRatio, PromptTemplate, ScoreRequest, SearchStats};
use w2s_llama::{resolve_model, LlamaScorer, LlamaTwinGuide, LoadOptions, Model};

const ROWS: usize = 16;
const THREADS: usize = 2;
const PROMPT: &str = "I rented this movie last weekend with two friends who had read about it \
                      in the paper, and after the first twenty minutes we all agreed that";
const WORDS: &[&str] = &[
    " the", " acting", " was", " superb", " and", " the", " plot", " moved", " quickly", " but",
    " the", " ending", " felt", " rushed", " to", " me", " overall", " a",
];

fn rounds_of(rounds: usize) -> Vec<Vec<String>> {
    let mut texts = vec![String::new(); ROWS];
    (0..rounds)
        .map(|round| {
            for (r, t) in texts.iter_mut().enumerate() {
                for w in 0..4 {
                    t.push_str(WORDS[(round * 4 + w + r) % WORDS.len()]);
                }
            }
            texts.clone()
        })
        .collect()
}

fn run(guide: &mut dyn Guide, rounds: &[Vec<String>]) -> Duration {
    let mut stats = SearchStats::default();
    let t = Instant::now();
    guide
        .begin(PROMPT, ROWS, 8 * rounds.len(), &mut stats)
        .unwrap();
    for texts in rounds {
        let reqs: Vec<ScoreRequest<'_>> = texts
            .iter()
            .enumerate()
            .map(|(row, text)| ScoreRequest {
                row,
                text,
                ended: false,
            })
            .collect();
        guide.score(&reqs, &mut stats).unwrap();
    }
    t.elapsed()
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap());
    let (n_rounds, repeats) = (args.next().unwrap_or(6), args.next().unwrap_or(3));
    let model = Model::load(
        &resolve_model("smollm2-135m-instruct"),
        LoadOptions::default(),
    )
    .expect("run scripts/fetch-models smollm2-135m-instruct");
    let positive = PromptTemplate::new("chat:Write a very positive movie review.||{prompt}");
    let negative = PromptTemplate::new("chat:Write a very negative movie review.||{prompt}");
    let (positive, negative) = (positive.unwrap(), negative.unwrap());
    let mut tuned = LlamaScorer::new(model.clone(), positive.clone(), THREADS);
    let mut untuned = LlamaScorer::new(model.clone(), negative.clone(), THREADS);
    let mut twin = LlamaTwinGuide::new(model, positive, negative, 1.0, THREADS).unwrap();
    let rounds = rounds_of(n_rounds);
    // Warm both (contexts made, caches touched), then alternate the timed runs.
    run(&mut LogRatio::new(&mut tuned, &mut untuned, 1.0), &rounds);
    run(&mut twin, &rounds);
    let (mut apart, mut joint) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..repeats {
        apart += run(&mut LogRatio::new(&mut tuned, &mut untuned, 1.0), &rounds);
        joint += run(&mut twin, &rounds);
    }
    let per = |d: Duration| d.as_secs_f64() / repeats as f64;
    println!(
        "{ROWS} rows x {n_rounds} rounds, {repeats} repeats: two scorers {:.3} s, twin {:.3} s, \
         twin / two scorers = {:.2}",
        per(apart),
        per(joint),
        joint.as_secs_f64() / apart.as_secs_f64()
    );
}
