//! Search behaviour with small deterministic backends: the point here is the algorithm.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{config, Letters, Log, Weights};
use w2s_core::*;

fn run(
    method: Method,
    max_new: usize,
    seed: u64,
    eos_weight: f64,
) -> (SearchOutput, Rc<RefCell<Log>>) {
    let log = Rc::new(RefCell::new(Log::default()));
    let mut strong = Letters {
        log: log.clone(),
        eos_weight,
        ..Default::default()
    };
    let mut tuned = Weights {
        a: -0.5,
        eos: -0.2,
        log: Some(log.clone()),
    };
    let mut untuned = Weights {
        a: -1.0,
        eos: -1.0,
        log: None,
    };
    let out = search(
        &config(method, max_new, seed),
        "prompt",
        Models {
            strong: &mut strong,
            tuned: &mut tuned,
            untuned: &mut untuned,
        },
    )
    .unwrap();
    (out, log)
}

#[test]
fn cbs_with_one_beam_and_one_successor_is_plain_sampling() {
    for seed in 0..20 {
        let (sample, _) = run(Method::Sample, 30, seed, 0.05);
        for l in [1, 3, 7] {
            let (cbs, _) = run(Method::Cbs { w: 1, k: 1, l }, 30, seed, 0.05);
            assert_eq!(cbs.best().text, sample.best().text, "seed {seed} l {l}");
            assert_eq!(cbs.best().finish, sample.best().finish);
        }
    }
}

#[test]
fn same_seed_same_output_and_seeds_differ() {
    let m = Method::Cbs { w: 2, k: 3, l: 4 };
    let (a, _) = run(m, 24, 9, 0.02);
    let (b, _) = run(m, 24, 9, 0.02);
    assert_eq!(a.beams, b.beams);
    let texts: std::collections::HashSet<String> = (0..10)
        .map(|s| run(m, 24, s, 0.02).0.best().text.clone())
        .collect();
    assert!(
        texts.len() > 5,
        "seeds should give different texts: {texts:?}"
    );
}

#[test]
fn returns_finished_beams_best_first_with_guide_values() {
    let (out, _) = run(Method::Cbs { w: 3, k: 3, l: 2 }, 12, 4, 0.05);
    assert!(!out.beams.is_empty());
    for w in out.beams.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    for b in &out.beams {
        let a = b.text.matches('a').count() as f64;
        let other = (b.text.chars().count() as f64) - a;
        let tuned = -0.5 * a - other
            + if b.finish == Finish::Eos || b.finish == Finish::Length {
                -0.2
            } else {
                0.0
            };
        let untuned = -a - other - 1.0;
        assert!((b.tuned_logprob - tuned).abs() < 1e-9);
        assert!((b.untuned_logprob - untuned).abs() < 1e-9);
        assert!((b.score - (b.tuned_logprob - b.untuned_logprob)).abs() < 1e-9);
    }
}

#[test]
fn guidance_beats_sampling_on_the_guide_value() {
    let mean = |m: Method| -> f64 {
        (0..30)
            .map(|s| run(m, 20, s, 0.0).0.best().score)
            .sum::<f64>()
            / 30.0
    };
    let sample = mean(Method::Sample);
    let bon = mean(Method::Bon { n: 16 });
    let cbs = mean(Method::Cbs { w: 4, k: 4, l: 2 });
    // Each 'a' is worth +0.5 to the guide; 20 letters.
    assert!(bon > sample + 1.0, "bon {bon} sample {sample}");
    assert!(cbs > bon, "cbs {cbs} bon {bon}");
}

#[test]
fn the_search_stops_as_soon_as_every_kept_beam_has_ended() {
    // Rows end often and the token budget is far away: the search must stop at the first
    // step whose top W are all ended, even while pruned rows could still go on.
    for seed in 0..20 {
        let (out, log) = run(Method::Cbs { w: 2, k: 4, l: 2 }, 10_000, seed, 0.3);
        let log = log.borrow();
        assert!(out.beams.len() >= 2, "{:?}", out.beams);
        assert!(out.beams[..2].iter().all(|b| b.finish == Finish::Eos));
        assert!(
            out.beams.iter().all(|b| b.strong_tokens < 200),
            "{:?}",
            out.beams
        );
        // No chunk was asked for after the last selection: one extend per step, and
        // every step but the last reordered (the last one returned instead).
        assert_eq!(log.extend_calls, out.stats.chunks);
        assert_eq!(log.reorders.len() + 1, out.stats.chunks);
    }
}

#[test]
fn ended_rows_stay_once_and_are_not_copied_k_times() {
    // Rows end often: ended rows must be carried as single copies.
    let mut saw_single = false;
    for seed in 0..20 {
        let (_, log) = run(Method::Cbs { w: 3, k: 4, l: 2 }, 40, seed, 0.08);
        for parents in &log.borrow().reorders {
            let mut counts = std::collections::HashMap::new();
            for p in parents {
                *counts.entry(*p).or_insert(0) += 1;
            }
            assert!(counts.values().all(|&c| c == 1 || c == 4), "{parents:?}");
            assert!(parents.len() <= 12);
            saw_single |= counts.values().any(|&c| c == 1);
        }
    }
    assert!(
        saw_single,
        "some selection should have kept an ended row once"
    );
}

#[test]
fn best_of_n_samples_n_and_scores_once() {
    let (out, log) = run(Method::Bon { n: 8 }, 15, 5, 0.03);
    let log = log.borrow();
    assert_eq!(log.score_calls, 1);
    assert_eq!(log.scored_rows.len(), 8);
    assert_eq!(log.extend_calls, 1);
    assert_eq!(out.beams.len(), 8);
    assert!(log.reorders.is_empty());
}

#[test]
fn max_new_tokens_ends_rows_with_length() {
    let (out, _) = run(Method::Cbs { w: 2, k: 2, l: 3 }, 10, 1, 0.0);
    for b in &out.beams {
        assert_eq!(b.finish, Finish::Length);
        assert_eq!(b.strong_tokens, 10);
        assert_eq!(b.text.len(), 10);
    }
    assert_eq!(out.stats.strong_tokens_sampled, 40);
}

#[test]
fn only_new_or_changed_rows_are_rescored() {
    let (_, log) = run(Method::Cbs { w: 2, k: 2, l: 2 }, 8, 2, 0.0);
    let log = log.borrow();
    // 4 chunks of 2 tokens, 4 live rows each time.
    assert_eq!(log.score_calls, 4);
    assert_eq!(log.scored_rows.len(), 16);
}

struct Stuck;
impl Proposer for Stuck {
    fn begin(&mut self, _: &ProposalSetup<'_>) -> Result<(), BackendError> {
        Ok(())
    }
    fn extend(&mut self, reqs: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError> {
        Ok(reqs
            .iter()
            .map(|_| Chunk {
                text: String::new(),
                tokens: 0,
                finish: None,
                logprob: None,
            })
            .collect())
    }
    fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> {
        Ok(())
    }
}

#[test]
fn a_backend_that_makes_no_progress_is_an_error_not_a_hang() {
    let mut t = Weights {
        a: 0.0,
        eos: 0.0,
        log: None,
    };
    let mut u = Weights {
        a: 0.0,
        eos: 0.0,
        log: None,
    };
    let err = search(
        &config(Method::default(), 10, 1),
        "p",
        Models {
            strong: &mut Stuck,
            tuned: &mut t,
            untuned: &mut u,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            SearchError::Contract {
                role: Role::Strong,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn progress_reports_settled_text_and_can_cancel() {
    let log = Rc::new(RefCell::new(Log::default()));
    let mut strong = Letters {
        log,
        eos_weight: 0.0,
        ..Default::default()
    };
    let mut t = Weights {
        a: -0.5,
        eos: 0.0,
        log: None,
    };
    let mut u = Weights {
        a: -1.0,
        eos: 0.0,
        log: None,
    };
    let mut seen = Vec::new();
    let err = search_with_progress(
        &config(Method::Cbs { w: 1, k: 2, l: 2 }, 20, 1),
        "p",
        Models {
            strong: &mut strong,
            tuned: &mut t,
            untuned: &mut u,
        },
        &mut |p| {
            seen.push(p.settled_text.to_string());
            p.chunk < 3
        },
    )
    .unwrap_err();
    assert!(matches!(err, SearchError::Cancelled));
    assert_eq!(seen.len(), 3);
    // With W = 1 the kept beam is settled: each report extends the last.
    assert!(seen[1].starts_with(&seen[0]) && seen[2].starts_with(&seen[1]));
    assert_eq!(seen[2].len(), 6);
}

#[test]
fn empty_prompt_is_rejected_before_model_work() {
    let log = Rc::new(RefCell::new(Log::default()));
    let mut strong = Letters {
        log: log.clone(),
        ..Default::default()
    };
    let mut t = Weights {
        a: 0.0,
        eos: 0.0,
        log: None,
    };
    let mut u = Weights {
        a: 0.0,
        eos: 0.0,
        log: None,
    };
    let err = search(
        &config(Method::Sample, 5, 1),
        "  ",
        Models {
            strong: &mut strong,
            tuned: &mut t,
            untuned: &mut u,
        },
    )
    .unwrap_err();
    assert!(matches!(err, SearchError::Config(ConfigError::EmptyPrompt)));
    assert_eq!(log.borrow().extend_calls, 0);
}

/// A guide of its own (the count of "c"), through search_guided, ranks as the log-ratio
/// pair with the same values would, and reports no log-probabilities.
#[test]
fn a_custom_guide_replaces_the_pair_with_the_same_search() {
    let count_c = |_: &str, texts: &[&str], _: &[bool]| -> Result<Vec<f64>, BackendError> {
        Ok(texts
            .iter()
            .map(|t| t.matches('c').count() as f64)
            .collect())
    };
    let cfg = config(Method::Cbs { w: 2, k: 3, l: 2 }, 12, 5);
    let mut strong = Letters::default();
    let mut guide = ValueFn::new(count_c);
    let custom = search_guided(&cfg, "prompt", &mut strong, &mut guide, &mut |_| true).unwrap();
    // The same values as a pair: tuned = +1 per "c", untuned = 0.
    struct CountC(f64);
    impl Scorer for CountC {
        fn begin(&mut self, _: &str, _: usize, _: usize) -> Result<(), BackendError> {
            Ok(())
        }
        fn score(&mut self, reqs: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
            Ok(reqs
                .iter()
                .map(|r| self.0 * r.text.matches('c').count() as f64)
                .collect())
        }
        fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> {
            Ok(())
        }
        fn tokens_evaluated(&self) -> u64 {
            0
        }
    }
    let (mut strong, mut tuned, mut untuned) = (Letters::default(), CountC(1.0), CountC(0.0));
    let pair = search(
        &cfg,
        "prompt",
        Models {
            strong: &mut strong,
            tuned: &mut tuned,
            untuned: &mut untuned,
        },
    )
    .unwrap();
    let texts = |o: &SearchOutput| o.beams.iter().map(|b| b.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&custom), texts(&pair));
    let best = custom.best();
    assert_eq!(best.score, best.text.matches('c').count() as f64);
    assert!(best.tuned_logprob.is_nan() && best.untuned_logprob.is_nan());
    assert_eq!(
        custom.stats.strong_tokens_sampled,
        pair.stats.strong_tokens_sampled
    );
}

#[test]
fn a_guide_that_breaks_its_contract_is_an_error() {
    type Values = Result<Vec<f64>, BackendError>;
    let run = |f: &dyn Fn(&[&str]) -> Values| {
        let cfg = config(Method::Bon { n: 3 }, 4, 1);
        let mut guide = ValueFn::new(|_: &str, t: &[&str], _: &[bool]| f(t));
        search_guided(&cfg, "p", &mut Letters::default(), &mut guide, &mut |_| {
            true
        })
        .unwrap_err()
    };
    let e = run(&|_| Ok(vec![1.0]));
    assert!(e.to_string().contains("1 values for 3"), "{e}");
    let e = run(&|t| Ok(vec![f64::NAN; t.len()]));
    assert!(e.to_string().contains("NaN"), "{e}");
    let e = run(&|_| Err(BackendError::new(ErrorKind::Remote, "reward model down")));
    assert_eq!(e.kind(), ErrorKind::Remote);
    assert_eq!(e.to_string(), "guide: reward model down");
}
