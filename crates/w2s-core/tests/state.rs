//! The search as a state machine: a driver that steps several searches in turn gets what
//! each search alone gives, and a driver that feeds out of turn gets an error.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{config, Letters, Log, Weights};
use w2s_core::*;

fn letters() -> Letters {
    Letters {
        log: Rc::new(RefCell::new(Log::default())),
        eos_weight: 0.05,
        ..Default::default()
    }
}

fn pair() -> (Weights, Weights) {
    let w = |a, eos| Weights { a, eos, log: None };
    (w(-0.5, -0.2), w(-1.0, -1.0))
}

/// One search with its own backends, stepped by hand.
struct Job {
    state: SearchState,
    strong: Letters,
    tuned: Weights,
    untuned: Weights,
    beta: f64,
}

impl Job {
    fn new(config: &SearchConfig, prompt: &str) -> Job {
        let (tuned, untuned) = pair();
        let mut job = Job {
            state: SearchState::new(config, prompt).unwrap(),
            strong: letters(),
            tuned,
            untuned,
            beta: config.beta(),
        };
        job.strong.begin(&job.state.proposal_setup()).unwrap();
        job
    }

    /// Serves one action; false once the search is done.
    fn step(&mut self) -> bool {
        match self.state.poll() {
            Action::Extend(mut requests) => {
                let chunks = self.strong.extend(&mut requests).unwrap();
                self.state.feed_chunks(chunks).unwrap();
            }
            Action::Score(requests) => {
                let t = self.tuned.score(&requests).unwrap();
                let u = self.untuned.score(&requests).unwrap();
                let values = t
                    .into_iter()
                    .zip(u)
                    .map(|(tuned, untuned)| GuideScore {
                        value: self.beta * (tuned - untuned),
                        tuned,
                        untuned,
                    })
                    .collect();
                self.state.feed_scores(values, &[]).unwrap();
            }
            Action::Selected(_) => {}
            Action::Reorder(parents) => {
                self.strong.reorder(parents).unwrap();
                self.state.reordered();
            }
            Action::Done => return false,
        }
        true
    }
}

fn alone(config: &SearchConfig, prompt: &str) -> SearchOutput {
    let (mut tuned, mut untuned) = pair();
    search(
        config,
        prompt,
        Models {
            strong: &mut letters(),
            tuned: &mut tuned,
            untuned: &mut untuned,
        },
    )
    .unwrap()
}

#[test]
fn searches_stepped_together_give_what_each_gives_alone() {
    let searches = [
        (
            config(Method::Cbs { w: 2, k: 3, l: 4 }, 20, 1).with_trace(true),
            "one",
        ),
        (
            config(Method::Cbs { w: 4, k: 4, l: 5 }, 30, 2).with_trace(true),
            "two",
        ),
        (
            config(Method::Bon { n: 6 }, 12, 3).with_trace(true),
            "three",
        ),
        (config(Method::Sample, 9, 4), "four"),
    ];
    let mut jobs: Vec<Job> = searches.iter().map(|(c, p)| Job::new(c, p)).collect();
    // Round robin, one action of each live search at a time.
    let mut live = jobs.len();
    while live > 0 {
        live = jobs
            .iter_mut()
            .map(|j| j.step())
            .filter(|&going| going)
            .count();
    }
    for ((config, prompt), job) in searches.iter().zip(jobs) {
        let together = job.state.finish(SearchStats::default());
        let one = alone(config, prompt);
        assert_eq!(together.beams, one.beams, "{prompt}");
        assert_eq!(together.trace, one.trace, "{prompt}");
        assert_eq!(together.stats.chunks, one.stats.chunks);
        assert_eq!(
            together.stats.strong_tokens_sampled,
            one.stats.strong_tokens_sampled
        );
    }
}

#[test]
fn a_repoll_asks_again_and_feeding_out_of_turn_is_an_error() {
    let config = config(Method::Cbs { w: 2, k: 2, l: 3 }, 9, 5);
    let mut state = SearchState::new(&config, "prompt").unwrap();
    let rows = |a: Action<'_>| match a {
        Action::Extend(r) => r.iter().map(|r| (r.row, r.max_tokens)).collect::<Vec<_>>(),
        other => panic!("expected an extend, got {other:?}"),
    };
    let first = rows(state.poll());
    assert_eq!(first, rows(state.poll()), "the same rows, asked again");
    assert_eq!(first, [(0, 3), (1, 3), (2, 3), (3, 3)]);
    // Values before chunks, and chunks of the wrong number.
    let err = state
        .feed_scores(vec![GuideScore::value(1.0)], &[])
        .unwrap_err();
    assert!(matches!(err, SearchError::OutOfTurn(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);
    let err = state.feed_chunks(Vec::new()).unwrap_err();
    assert!(err.to_string().contains("0 chunks for 4 rows"), "{err}");
    // Reordered with nothing to reorder changes nothing.
    state.reordered();
    assert_eq!(first, rows(state.poll()));
    assert!(!state.is_done());
    assert!(SearchState::new(&config, "  ").is_err(), "an empty prompt");
}
