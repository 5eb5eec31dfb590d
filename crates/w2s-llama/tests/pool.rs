//! Several searches on one context of the real strong model (gemma-3-270m), their rows
//! sampled in one decode per token ([`LlamaProposerPool`] driven by `search_many`),
//! against each search alone on a proposer of its own.

#[allow(dead_code)] // shared with the tests that run whole searches
mod common;

use common::model;
use std::sync::Arc;

use w2s_core::*;
use w2s_llama::*;

const THREADS: usize = 1;
const POSITIVE: &str = "chat:Write a very positive movie review.||{prompt}";
const IMDB: &str = "Here is a movie review from imdb: {prompt}";

fn pair(small: &Arc<Model>) -> (LlamaScorer, LlamaScorer) {
    (
        LlamaScorer::new(
            small.clone(),
            PromptTemplate::new(POSITIVE).unwrap(),
            THREADS,
        ),
        LlamaScorer::new(small.clone(), PromptTemplate::bare(), THREADS),
    )
}

fn config(seed: u64) -> SearchConfig {
    SearchConfig::new(
        Method::Cbs { w: 2, k: 2, l: 4 },
        16,
        1.0,
        seed,
        SamplingParams::default(),
        vec![],
    )
    .unwrap()
    .with_trace(true)
}

const PROMPTS: [&str; 3] = [
    "I rented this movie last weekend and",
    "The plot of this film",
    "My friends told me to skip it, but",
];

#[test]
fn searches_sampled_in_one_decode_give_what_each_gives_alone() {
    let (strong, small) = (model("gemma-3-270m"), model("smollm2-135m-instruct"));
    let template = PromptTemplate::new(IMDB).unwrap();
    let alone: Vec<SearchOutput> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut proposer = LlamaProposer::new(strong.clone(), template.clone(), THREADS);
            let (mut tuned, mut untuned) = pair(&small);
            let models = Models {
                strong: &mut proposer,
                tuned: &mut tuned,
                untuned: &mut untuned,
            };
            search(&config(i as u64), p, models).unwrap()
        })
        .collect();
    // One search at a time on the pool: the same decodes as alone, to the bit.
    let run = |slots: usize| {
        let mut pool =
            LlamaProposerPool::new(strong.clone(), template.clone(), THREADS, slots, 4, 16, 64)
                .unwrap();
        let mut pairs: Vec<(LlamaScorer, LlamaScorer)> = (0..slots).map(|_| pair(&small)).collect();
        let mut ratios: Vec<LogRatio<'_>> = pairs
            .iter_mut()
            .map(|(t, u)| LogRatio::new(t, u, 1.0))
            .collect();
        let mut places: Vec<&mut dyn Guide> =
            ratios.iter_mut().map(|g| g as &mut dyn Guide).collect();
        let jobs = PROMPTS
            .iter()
            .enumerate()
            .map(|(i, p)| ManyJob {
                config: config(i as u64),
                prompt: p.to_string(),
            })
            .collect();
        search_many(jobs, &mut places, &mut pool, &mut |_, _| true)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    for (one, got) in alone.iter().zip(run(1)) {
        assert_eq!(got.trace, one.trace);
        assert_eq!(got.beams, one.beams);
    }
    // Three searches in one decode per token. Batched kernels round differently with other
    // rows beside (a few hundredths of a nat), which can change a sample; what must hold
    // is that every chunk was sampled from its own search's context: its log-probability
    // when sampled is what the strong model gives it read alone, as close as for the
    // searches run alone.
    let mut reader = LlamaScorer::new(strong.clone(), template.clone(), THREADS);
    let mut gaps = |outputs: &[SearchOutput]| {
        let mut gaps = Vec::new();
        for (p, got) in PROMPTS.iter().zip(outputs) {
            let trace = got.trace.as_ref().unwrap();
            for (s, step) in trace.steps.iter().enumerate() {
                for row in step.rows.iter().filter(|r| r.tokens > 0) {
                    let mut before = String::new();
                    let mut at = row.parent;
                    for earlier in trace.steps[..s].iter().rev() {
                        let Some(i) = at else { break };
                        before.insert_str(0, &earlier.rows[i].chunk);
                        at = earlier.rows[i].parent;
                    }
                    let whole = format!("{before}{}", row.chunk);
                    let read = score_once(&mut reader, p, &whole, false).unwrap()
                        - score_once(&mut reader, p, &before, false).unwrap();
                    gaps.push((row.strong_logprob.unwrap() - read).abs() / row.tokens as f64);
                }
            }
        }
        gaps.sort_by(f64::total_cmp);
        gaps
    };
    let (solo, pooled) = (gaps(&alone), gaps(&run(3)));
    let at = |g: &[f64], q: f64| g[((g.len() - 1) as f64 * q) as usize];
    eprintln!(
        "per-token |sampled - read alone| log-prob, median / 90% / max: alone {:.4} / {:.4} / {:.4}, pooled {:.4} / {:.4} / {:.4}",
        at(&solo, 0.5), at(&solo, 0.9), at(&solo, 1.0), at(&pooled, 0.5), at(&pooled, 0.9), at(&pooled, 1.0)
    );
    // A chunk sampled from another search's cells, or at wrong positions, is off by whole
    // nats per token; rounding moves a few hundredths, alone or pooled.
    assert!(pooled.len() >= 3 * 4, "{pooled:?}");
    assert!(
        at(&pooled, 0.9) < 0.1 && at(&pooled, 1.0) < 0.25,
        "{pooled:?}"
    );
}

#[test]
fn a_pool_refuses_searches_beyond_what_it_was_made_for() {
    let strong = model("gemma-3-270m");
    let template = PromptTemplate::new(IMDB).unwrap();
    let err = LlamaProposerPool::new(strong.clone(), template.clone(), 1, 9, 16, 8, 32)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("one llama.cpp context has 256"),
        "{err}"
    );
    let mut pool = LlamaProposerPool::new(strong, template, 1, 1, 4, 8, 8).unwrap();
    let sampling = SamplingParams::default();
    let setup = |prompt| ProposalSetup {
        prompt,
        rows: 4,
        max_new_tokens: 8,
        sampling: &sampling,
        stop: &[],
        chunk_end: None,
        logprobs: false,
    };
    let long = "a long prompt that is surely more than eight tokens once templated";
    let err = pool.begin(0, &setup(long)).unwrap_err();
    assert!(err.to_string().contains("prompts of at most 8"), "{err}");
    let err = pool.begin(1, &setup("hi")).unwrap_err();
    assert!(err.to_string().contains("search 1 of a pool of 1"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Input);
}

#[test]
fn a_cancelled_pool_stops_at_its_next_piece_of_work() {
    let strong = model("gemma-3-270m");
    let template = PromptTemplate::new(IMDB).unwrap();
    let mut pool = LlamaProposerPool::new(strong, template, THREADS, 2, 4, 8, 32).unwrap();
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let interrupt = Interrupt::new();
    interrupt.arm_cancel(flag.clone());
    pool.set_interrupt(Some(interrupt.clone()));
    let sampling = SamplingParams::default();
    let setup = ProposalSetup {
        prompt: "I rented this movie",
        rows: 4,
        max_new_tokens: 8,
        sampling: &sampling,
        stop: &[],
        chunk_end: None,
        logprobs: false,
    };
    pool.begin(0, &setup).unwrap();
    let mut rngs: Vec<RowRng> = (0..4).map(|i| RowRng::new(1, i)).collect();
    let extend = |pool: &mut LlamaProposerPool, rngs: &mut [RowRng]| {
        let reqs = rngs
            .iter_mut()
            .enumerate()
            .map(|(row, rng)| ExtendRequest {
                row,
                max_tokens: 2,
                rng,
            })
            .collect();
        pool.extend(&mut [(0, reqs)])
    };
    let before = interrupt.last_beat().unwrap();
    assert_eq!(extend(&mut pool, &mut rngs).unwrap()[0].len(), 4);
    assert!(
        interrupt.last_beat().unwrap() > before,
        "each decode checks in"
    );
    flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = extend(&mut pool, &mut rngs).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    let err = pool.begin(1, &setup).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
}
