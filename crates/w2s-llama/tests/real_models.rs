//! End-to-end tests on the real GGUF files that scripts/fetch-models provides
//! (SmolLM2-135M-Instruct and gemma-3-270m: two different tokenizers).
//!
//! Tolerance for "incremental equals one-shot": llama.cpp's quantized kernels are
//! deterministic but not bit-exact across batch shapes (a token's log-prob shifts by up to
//! ~0.2 nats depending on which other tokens share its batch). Incremental scoring
//! evaluates a response in chunk-sized batches and one-shot scoring in one batch, so the
//! sums may differ by a small amount per token; we allow 0.05 nats per token plus 0.1.
//! A real bug (a token scored twice, skipped, scored with the wrong context, or the EOS
//! term missing) moves the sum by whole nats.

mod common;

use common::{model, LocalModels};
use std::sync::{Arc, Mutex, MutexGuard};

use w2s_core::*;
use w2s_llama::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const THREADS: usize = 2;
const POSITIVE: &str = "chat:Write a very positive movie review.||{prompt}";
const IMDB: &str = "Here is a movie review from imdb: {prompt}";

fn tolerance(tokens: usize) -> f64 {
    0.05 * tokens as f64 + 0.1
}

fn small_tokens(text: &str) -> usize {
    model("smollm2-135m-instruct").tokenize_response(text).len() + 1
}

fn guided() -> LocalModels {
    LocalModels {
        strong: LlamaProposer::new(
            model("gemma-3-270m"),
            PromptTemplate::new(IMDB).unwrap(),
            THREADS,
        ),
        tuned: LlamaScorer::new(
            model("smollm2-135m-instruct"),
            PromptTemplate::new(POSITIVE).unwrap(),
            THREADS,
        ),
        untuned: LlamaScorer::new(
            model("smollm2-135m-instruct"),
            PromptTemplate::bare(),
            THREADS,
        ),
    }
}

fn config(method: Method, max_new: usize, seed: u64) -> SearchConfig {
    SearchConfig::new(
        method,
        max_new,
        1.0,
        seed,
        SamplingParams::default(),
        vec![],
    )
    .unwrap()
}

const PROMPT: &str = "I rented this movie last weekend and";

#[test]
fn incremental_scoring_matches_one_shot_scoring() {
    let _g = serial();
    let small = model("smollm2-135m-instruct");
    let template = PromptTemplate::new(POSITIVE).unwrap();
    let text = " it was beautiful: the café scenes, the soundtrack (très bien!), and a \
                heart-warming ending. Unbelievably good — 10/10, would watch again.";
    // Three rows, each fed the same text in different chunkings (cuts inside words and
    // right after multi-byte characters, so tokens change across chunk edges).
    let cuts: [&[usize]; 3] = [
        &[3, 9, 17, 30, 41, 60, 88],
        &[1, 2, 13, 14, 26, 50, 77, 90],
        &[20, 21, 64, 65],
    ];
    let mut scorer = LlamaScorer::new(small.clone(), template.clone(), THREADS);
    scorer.begin(PROMPT, 3, 60).unwrap();
    let at = |row: usize, step: usize| -> usize {
        let c = cuts[row];
        let mut end = *c.get(step).unwrap_or(&text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        end.min(text.len())
    };
    let mut reencode = 0;
    for step in 0..=8 {
        reencode += (0..3)
            .map(|row| small_tokens(&text[..at(row, step)]))
            .sum::<usize>();
        let reqs: Vec<ScoreRequest<'_>> = (0..3)
            .map(|row| ScoreRequest {
                row,
                text: &text[..at(row, step)],
                ended: false,
            })
            .collect();
        let got = scorer.score(&reqs).unwrap();
        if step == 4 {
            // Beam selection in the middle: row 1 is copied twice, row 0 once, row 2 dropped.
            scorer.reorder(&[1, 1, 0]).unwrap();
            let _ = got;
        }
    }
    let inc = scorer
        .score(
            &(0..3)
                .map(|row| ScoreRequest {
                    row,
                    text,
                    ended: true,
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let evaluated = scorer.tokens_evaluated();

    let mut fresh = LlamaScorer::new(small, template, THREADS);
    let once = score_once(&mut fresh, PROMPT, text, true).unwrap();
    let n = small_tokens(text);
    for (row, v) in inc.iter().enumerate() {
        let diff = (v - once).abs();
        eprintln!("row {row}: incremental {v:.4} one-shot {once:.4} diff {diff:.4} ({n} tokens)");
        assert!(diff <= tolerance(n), "row {row}: {v} vs {once}");
    }
    // Cuts inside words force re-evaluation at chunk edges, and the reorder makes two
    // rows continue from one; still far below re-encoding every row at every chunk.
    eprintln!("tokens evaluated {evaluated} for 3 rows of {n}; re-encoding: {reencode}");
    assert!(
        2 * evaluated <= reencode as u64,
        "{evaluated} vs {reencode}"
    );
}

#[test]
fn incremental_scoring_evaluates_each_token_about_once() {
    let _g = serial();
    let small = model("smollm2-135m-instruct");
    let mut scorer = LlamaScorer::new(small, PromptTemplate::bare(), THREADS);
    let text = " it was one of the best films I have seen this year. The acting is superb, \
                the story moves quickly, and the ending made the whole audience cheer.";
    let words: Vec<usize> = text
        .match_indices(' ')
        .map(|(i, _)| i)
        .skip(1)
        .step_by(3)
        .collect();
    scorer.begin(PROMPT, 4, 60).unwrap();
    for &end in words.iter().chain(std::iter::once(&text.len())) {
        let reqs: Vec<ScoreRequest<'_>> = (0..4)
            .map(|row| ScoreRequest {
                row,
                text: &text[..end],
                ended: end == text.len(),
            })
            .collect();
        scorer.score(&reqs).unwrap();
    }
    let n = small_tokens(text);
    let evaluated = scorer.tokens_evaluated();
    eprintln!("tokens evaluated {evaluated} for 4 rows of {n}");
    assert!(
        evaluated as f64 <= 1.2 * (4 * n) as f64,
        "{evaluated} vs {}",
        4 * n
    );
}

#[test]
fn returned_beams_are_best_first_and_scores_equal_independent_full_scoring() {
    let _g = serial();
    let mut m = guided();
    // Different vocabularies: the hand-over is text.
    assert_ne!(m.strong.model().n_vocab(), m.tuned.model().n_vocab());
    let out = m
        .search(&config(Method::Cbs { w: 2, k: 3, l: 4 }, 24, 3), PROMPT)
        .unwrap();
    assert!(!out.beams.is_empty());
    for w in out.beams.windows(2) {
        assert!(w[0].score >= w[1].score, "beams not best first");
    }
    assert_eq!(out.best(), &out.beams[0]);
    let mut tuned = LlamaScorer::new(
        model("smollm2-135m-instruct"),
        PromptTemplate::new(POSITIVE).unwrap(),
        THREADS,
    );
    let mut untuned = LlamaScorer::new(
        model("smollm2-135m-instruct"),
        PromptTemplate::bare(),
        THREADS,
    );
    for b in &out.beams {
        assert!(!b.text.contains('\u{FFFD}'), "{:?}", b.text);
        let t = score_once(&mut tuned, PROMPT, &b.text, true).unwrap();
        let u = score_once(&mut untuned, PROMPT, &b.text, true).unwrap();
        let n = small_tokens(&b.text);
        eprintln!(
            "{:?}: tuned {:.3}/{t:.3} untuned {:.3}/{u:.3}",
            b.text, b.tuned_logprob, b.untuned_logprob
        );
        assert!(
            (b.tuned_logprob - t).abs() <= tolerance(n),
            "tuned {} vs {t}",
            b.tuned_logprob
        );
        assert!(
            (b.untuned_logprob - u).abs() <= tolerance(n),
            "untuned {} vs {u}",
            b.untuned_logprob
        );
        assert!((b.score - (b.tuned_logprob - b.untuned_logprob)).abs() < 1e-9);
    }
    assert_eq!(
        out.stats.strong_tokens_sampled,
        out.stats.strong_tokens_sampled.min(6 * 24)
    );
}

#[test]
fn cbs_with_one_beam_is_plain_sampling_on_real_models() {
    let _g = serial();
    let mut m = guided();
    for seed in [1, 2] {
        let sample = m.search(&config(Method::Sample, 30, seed), PROMPT).unwrap();
        let cbs = m
            .search(&config(Method::Cbs { w: 1, k: 1, l: 5 }, 30, seed), PROMPT)
            .unwrap();
        assert_eq!(sample.best().text, cbs.best().text, "seed {seed}");
        assert_eq!(sample.best().strong_tokens, cbs.best().strong_tokens);
        assert!(
            (sample.best().score - cbs.best().score).abs()
                <= tolerance(small_tokens(&cbs.best().text))
        );
    }
}

#[test]
fn same_seed_reproduces_the_same_text() {
    let _g = serial();
    let mut m = guided();
    let c = config(Method::Cbs { w: 2, k: 2, l: 5 }, 25, 11);
    let a = m.search(&c, PROMPT).unwrap();
    let b = m.search(&c, PROMPT).unwrap();
    let texts = |o: &SearchOutput| o.beams.iter().map(|b| b.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&a), texts(&b));
    assert_eq!(a.best().score, b.best().score);
    let other = m
        .search(&config(Method::Cbs { w: 2, k: 2, l: 5 }, 25, 12), PROMPT)
        .unwrap();
    assert_ne!(
        texts(&a),
        texts(&other),
        "another seed should sample other text"
    );
}

#[test]
fn search_raises_the_guide_value_over_sampling() {
    let _g = serial();
    let mut m = guided();
    let (mut sample, mut cbs) = (0.0, 0.0);
    for seed in 1..=3 {
        sample += m
            .search(&config(Method::Sample, 20, seed), PROMPT)
            .unwrap()
            .best()
            .score;
        cbs += m
            .search(&config(Method::Cbs { w: 2, k: 4, l: 5 }, 20, seed), PROMPT)
            .unwrap()
            .best()
            .score;
    }
    eprintln!(
        "mean guide value: sample {:.2}, cbs {:.2}",
        sample / 3.0,
        cbs / 3.0
    );
    assert!(cbs > sample, "cbs {cbs} vs sample {sample}");
}

#[test]
fn chunks_never_split_a_multibyte_character() {
    let _g = serial();
    let mut p = LlamaProposer::new(model("gemma-3-270m"), PromptTemplate::bare(), THREADS);
    let sampling = SamplingParams::new(1.0, 0, 1.0).unwrap();
    p.begin(&ProposalSetup {
        prompt: "日本の有名な料理と絵文字 🍣🍜🍱 の一覧:",
        rows: 3,
        max_new_tokens: 40,
        sampling: &sampling,
        stop: &[],
        chunk_end: None,
        logprobs: false,
    })
    .unwrap();
    let mut rngs: Vec<RowRng> = (0..3).map(|i| RowRng::new(5, i)).collect();
    let mut texts = vec![String::new(); 3];
    let mut tokens = [0; 3];
    let mut ended = [false; 3];
    for _ in 0..40 {
        let mut reqs: Vec<ExtendRequest<'_>> = rngs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| !ended[*i])
            .map(|(row, rng)| ExtendRequest {
                row,
                max_tokens: 1,
                rng,
            })
            .collect();
        if reqs.is_empty() {
            break;
        }
        let rows: Vec<usize> = reqs.iter().map(|r| r.row).collect();
        let chunks = p.extend(&mut reqs).unwrap();
        for (row, c) in rows.into_iter().zip(chunks) {
            assert!(!c.text.contains('\u{FFFD}'), "chunk {:?}", c.text);
            texts[row].push_str(&c.text);
            tokens[row] += c.tokens;
            ended[row] = c.finish.is_some() || tokens[row] >= 40;
        }
    }
    let non_ascii: usize = texts
        .iter()
        .map(|t| t.chars().filter(|c| !c.is_ascii()).count())
        .sum();
    eprintln!("{texts:?}");
    assert!(non_ascii > 10, "expected multi-byte output: {texts:?}");
}

#[test]
fn stop_strings_end_rows_and_are_cut() {
    let _g = serial();
    let mut m = guided();
    let c = SearchConfig::new(
        Method::Cbs { w: 2, k: 2, l: 5 },
        40,
        1.0,
        1,
        SamplingParams::default(),
        vec![".".into(), "!".into()],
    )
    .unwrap();
    let out = m.search(&c, PROMPT).unwrap();
    let stopped: Vec<&Beam> = out
        .beams
        .iter()
        .filter(|b| b.finish == Finish::Stop)
        .collect();
    assert!(!stopped.is_empty(), "{:?}", out.beams);
    for b in out.beams {
        assert!(
            !b.text.contains('.') && !b.text.contains('!'),
            "{:?}",
            b.text
        );
    }
}

#[test]
fn prompt_plus_new_tokens_beyond_the_context_is_a_clear_error() {
    let _g = serial();
    let mut m = guided();
    let n_ctx = m.strong.model().n_ctx_train() as usize;
    let err = m
        .search(&config(Method::Sample, n_ctx + 1, 1), PROMPT)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exceeds its context"), "{msg}");
}

#[test]
fn a_file_in_two_roles_is_loaded_once() {
    let _g = serial();
    let m = guided();
    assert!(Arc::ptr_eq(m.tuned.model(), m.untuned.model()));
    assert!(!Arc::ptr_eq(m.tuned.model(), m.strong.model()));
    let again = model("smollm2-135m-instruct");
    assert!(Arc::ptr_eq(&again, m.tuned.model()));
}

#[test]
fn a_scorer_whose_rows_outgrow_the_planned_context_grows_it_and_stays_exact() {
    let _g = serial();
    let small = model("smollm2-135m-instruct");
    let mut scorer = LlamaScorer::new(small.clone(), PromptTemplate::bare(), THREADS);
    // Planned for 1 strong token per row; the rows get ~150 small tokens each. The tiny
    // context also caps llama.cpp's batch below the scorer's usual batch (this aborted
    // the process once: llama.cpp asserts on a batch larger than the context's).
    scorer.begin(PROMPT, 4, 1).unwrap();
    let text = " the plot was thin, but the photography, the music and the two leads carried \
                it all the way to a finale that I will remember for a long time."
        .repeat(4);
    let text = text.as_str();
    let half = text.len() / 2;
    let reqs: Vec<ScoreRequest<'_>> = (0..4)
        .map(|row| ScoreRequest {
            row,
            text: &text[..half],
            ended: false,
        })
        .collect();
    scorer.score(&reqs).unwrap();
    let reqs: Vec<ScoreRequest<'_>> = (0..4)
        .map(|row| ScoreRequest {
            row,
            text,
            ended: true,
        })
        .collect();
    let got = scorer.score(&reqs).unwrap();
    let mut fresh = LlamaScorer::new(small, PromptTemplate::bare(), THREADS);
    let once = score_once(&mut fresh, PROMPT, text, true).unwrap();
    for v in got {
        assert!(
            (v - once).abs() <= tolerance(small_tokens(text)),
            "{v} vs {once}"
        );
    }
}
