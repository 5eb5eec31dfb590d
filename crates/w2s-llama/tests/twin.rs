//! The twin guide (one model file under two templates, one context) against the pair of
//! scorers it replaces, on the real SmolLM2-135M-Instruct file.
//!
//! Tolerance: both compute the same log-probs from the same tokens, but llama.cpp's
//! kernels round differently with the batch a token shares (the twin's decodes hold both
//! halves' tokens, a scorer's one half's). The difference is measured per token of a
//! row; a real bug (a token skipped, scored twice, scored in the other half's sequence,
//! the end term missing) moves a row's value by whole nats.

#[allow(dead_code)] // shared with the tests that run whole searches
mod common;

use common::model;
use std::sync::{Mutex, MutexGuard};

use w2s_core::*;
use w2s_llama::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const THREADS: usize = 2;
const SMALL: &str = "smollm2-135m-instruct";
const POSITIVE: &str = "chat:Write a very positive movie review.||{prompt}";
const NEGATIVE: &str = "chat:Write a very negative movie review.||{prompt}";
const PROMPT: &str = "I rented this movie last weekend and";
/// Most a row's value may differ between the twin and a scorer, in nats per token of the
/// row (plus 0.1): the bound the scorer tests use between batch shapes. Measured on this
/// file: up to 0.021 nats per token (0.36 on a row) through reorders and ended rows, up
/// to 0.035 per token (0.81 on a row) when the context grows mid-search.
const PER_TOKEN: f64 = 0.05;

/// Chunks the rows grow by; some end inside a word, some after a multi-byte character,
/// so a chunk edge changes tokens.
const CHUNKS: &[&str] = &[
    " the acting",
    " was superb, unbeliev",
    "ably good",
    " and the café",
    " scenes (très",
    " bien!) were",
    " dull. The plot",
    " dragged on for",
    " hours",
    " — 10/10, would",
    " never watch again.",
    " I loved every",
];

fn templates() -> (PromptTemplate, PromptTemplate) {
    (
        PromptTemplate::new(POSITIVE).unwrap(),
        PromptTemplate::new(NEGATIVE).unwrap(),
    )
}

fn twin(beta: f64) -> LlamaTwinGuide {
    let (t, u) = templates();
    LlamaTwinGuide::new(model(SMALL), t, u, beta, THREADS).unwrap()
}

fn scorers() -> (LlamaScorer, LlamaScorer) {
    let (t, u) = templates();
    (
        LlamaScorer::new(model(SMALL), t, THREADS),
        LlamaScorer::new(model(SMALL), u, THREADS),
    )
}

/// The score calls of a small beam search on `rows` rows: rows grow by a chunk a step,
/// a selection after steps 1 and 3 renumbers them, row 2 ends at step 2 and is scored
/// again as ended after that, every row ends at the last step.
enum Call {
    Score(Vec<(usize, String, bool)>),
    Reorder(Vec<usize>),
}

fn beam_calls(rows: usize, steps: usize) -> Vec<Call> {
    let mut texts = vec![String::new(); rows];
    let mut ended = vec![false; rows];
    let mut calls = Vec::new();
    for step in 0..steps {
        for r in 0..rows {
            if !ended[r] {
                texts[r].push_str(CHUNKS[(step * 5 + r * 3) % CHUNKS.len()]);
                ended[r] = (step == 2 && r == 2) || step + 1 == steps;
            }
        }
        let reqs = (0..rows).map(|r| (r, texts[r].clone(), ended[r])).collect();
        calls.push(Call::Score(reqs));
        if step == 1 || step == 3 {
            // Row 1 is kept twice, the last row dropped.
            let parents: Vec<usize> = (0..rows).map(|i| [1, 1, 0, 2][i % 4]).collect();
            texts = parents.iter().map(|&p| texts[p].clone()).collect();
            ended = parents.iter().map(|&p| ended[p]).collect();
            calls.push(Call::Reorder(parents));
        }
    }
    calls
}

/// (max difference per token, max difference) between the twin's tuned / untuned
/// values and the two scorers' over `calls`; checks the values and the work match.
fn compare(calls: &[Call], rows: usize, max_new: usize) -> (f64, f64) {
    let (mut tuned, mut untuned) = scorers();
    let mut guide = twin(1.0);
    let mut stats = SearchStats::default();
    guide.begin(PROMPT, rows, max_new, &mut stats).unwrap();
    tuned.begin(PROMPT, rows, max_new).unwrap();
    untuned.begin(PROMPT, rows, max_new).unwrap();
    let (mut per_token, mut most) = (0.0f64, 0.0f64);
    for call in calls {
        let reqs = match call {
            Call::Reorder(parents) => {
                guide.reorder(parents, &mut stats).unwrap();
                tuned.reorder(parents).unwrap();
                untuned.reorder(parents).unwrap();
                continue;
            }
            Call::Score(reqs) => reqs,
        };
        let reqs: Vec<ScoreRequest<'_>> = reqs
            .iter()
            .map(|(row, text, ended)| ScoreRequest {
                row: *row,
                text,
                ended: *ended,
            })
            .collect();
        let got = guide.score(&reqs, &mut stats).unwrap();
        let t = tuned.score(&reqs).unwrap();
        let u = untuned.score(&reqs).unwrap();
        for (i, g) in got.iter().enumerate() {
            let n = tuned.row_tokens(reqs[i].row).len().max(1) as f64;
            for (twin, alone) in [(g.tuned, t[i]), (g.untuned, u[i])] {
                let diff = (twin - alone).abs();
                per_token = per_token.max(diff / n);
                most = most.max(diff);
                assert!(
                    diff <= PER_TOKEN * n + 0.1,
                    "{twin} vs {alone} over {n} tokens"
                );
            }
            assert_eq!(g.value, g.tuned - g.untuned);
        }
    }
    // The same tokens were run for each half as for its scorer.
    assert_eq!(
        guide.tokens_evaluated(),
        (tuned.tokens_evaluated(), untuned.tokens_evaluated())
    );
    guide.finish(&mut stats);
    assert_eq!(stats.tuned_tokens_evaluated, tuned.tokens_evaluated());
    assert_eq!(stats.untuned_tokens_evaluated, untuned.tokens_evaluated());
    assert!(stats.tuned_time > std::time::Duration::ZERO);
    assert!(stats.untuned_time > std::time::Duration::ZERO);
    (per_token, most)
}

#[test]
fn twin_guide_values_match_two_scorers_through_reorders_and_ended_rows() {
    let _g = serial();
    let calls = beam_calls(4, 6);
    let (per_token, most) = compare(&calls, 4, 40);
    eprintln!("twin vs scorers: max {most:.2e} nats, {per_token:.2e} nats per token");
}

#[test]
fn a_twin_guide_whose_rows_outgrow_the_planned_context_grows_it_and_stays_exact() {
    let _g = serial();
    // Planned for 1 strong token per row; the rows get ~40 small tokens each.
    let calls = beam_calls(4, 8);
    let (per_token, most) = compare(&calls, 4, 1);
    eprintln!("grown twin vs scorers: max {most:.2e} nats, {per_token:.2e} nats per token");
}

#[test]
fn a_search_with_the_twin_guide_finds_the_text_of_two_scorers() {
    let _g = serial();
    let config = SearchConfig::new(
        Method::Cbs { w: 2, k: 2, l: 5 },
        20,
        1.0,
        7,
        SamplingParams::default(),
        vec![],
    )
    .unwrap();
    let mut strong = LlamaProposer::new(
        model("gemma-3-270m"),
        PromptTemplate::new("Here is a movie review from imdb: {prompt}").unwrap(),
        THREADS,
    );
    let (mut tuned, mut untuned) = scorers();
    let mut pair = LogRatio::new(&mut tuned, &mut untuned, 1.0);
    let apart = search_guided(&config, PROMPT, &mut strong, &mut pair, &mut |_| true).unwrap();
    let mut guide = twin(1.0);
    let joint = search_guided(&config, PROMPT, &mut strong, &mut guide, &mut |_| true).unwrap();
    let texts = |o: &SearchOutput| o.beams.iter().map(|b| b.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&joint), texts(&apart));
    // Both halves' rounding differences add up over the response (measured: 0.18 nats).
    for (j, a) in joint.beams.iter().zip(&apart.beams) {
        assert!(
            (j.score - a.score).abs() < 1.0,
            "{} vs {}",
            j.score,
            a.score
        );
    }
    let s = &joint.stats;
    assert_eq!(s.tuned_tokens_evaluated, apart.stats.tuned_tokens_evaluated);
    assert_eq!(
        s.untuned_tokens_evaluated,
        apart.stats.untuned_tokens_evaluated
    );
}

#[test]
fn a_twin_guide_refuses_what_cannot_work_with_an_error() {
    let _g = serial();
    // gemma-3-270m is a base model with no chat template of its own.
    let (t, u) = templates();
    let e = LlamaTwinGuide::new(model("gemma-3-270m"), t, u.clone(), 1.0, THREADS).unwrap_err();
    assert!(e.to_string().contains("chat template"), "{e}");
    let e = LlamaTwinGuide::new(model(SMALL), PromptTemplate::bare(), u, f64::NAN, THREADS)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Input, "{e}");

    let mut guide = twin(1.0);
    let mut stats = SearchStats::default();
    let req = [ScoreRequest {
        row: 0,
        text: " fine",
        ended: false,
    }];
    assert!(guide.score(&req, &mut stats).is_err(), "score before begin");
    let e = guide
        .begin(PROMPT, MAX_TWIN_ROWS + 1, 10, &mut stats)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Input, "{e}");
    guide.begin(PROMPT, 2, 10, &mut stats).unwrap();
    let missing = [ScoreRequest { row: 2, ..req[0] }];
    assert!(guide.score(&missing, &mut stats).is_err(), "a missing row");
    assert!(
        guide.reorder(&[0, 5], &mut stats).is_err(),
        "a missing parent"
    );
    let (t, _) = templates();
    let chat = PromptTemplate::chat_default();
    guide.set_templates(t, chat).unwrap();
    assert!(guide.context_tokens() > 0);
    guide.release_context();
    assert_eq!(guide.context_tokens(), 0);
}
