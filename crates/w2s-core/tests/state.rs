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

/// A pool of one [`Letters`] per search number, counting its combined calls.
#[derive(Default)]
struct Pool {
    slots: Vec<Letters>,
    calls: usize,
    widest: usize,
    ended: Vec<usize>,
}

impl ProposerPool for Pool {
    fn begin(&mut self, search: usize, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        while self.slots.len() <= search {
            self.slots.push(letters());
        }
        self.slots[search] = letters();
        self.slots[search].begin(setup)
    }
    fn extend(
        &mut self,
        requests: &mut [(usize, Vec<ExtendRequest<'_>>)],
    ) -> Result<Vec<Vec<Chunk>>, BackendError> {
        self.calls += 1;
        self.widest = self.widest.max(requests.len());
        requests
            .iter_mut()
            .map(|(s, r)| self.slots[*s].extend(r))
            .collect()
    }
    fn reorder(&mut self, search: usize, parents: &[usize]) -> Result<(), BackendError> {
        self.slots[search].reorder(parents)
    }
    fn end(&mut self, search: usize) {
        self.ended.push(search);
    }
}

fn job(config: &SearchConfig, prompt: &str) -> ManyJob {
    ManyJob {
        config: config.clone(),
        prompt: prompt.to_string(),
    }
}

/// Calls `f` with `n` places in flight, each guided by the log-ratio of a pair of its own.
fn with_places<R>(n: usize, f: impl FnOnce(&mut [&mut dyn Guide]) -> R) -> R {
    let mut pairs: Vec<(Weights, Weights)> = (0..n).map(|_| pair()).collect();
    let mut ratios: Vec<LogRatio<'_>> = pairs
        .iter_mut()
        .map(|(t, u)| LogRatio::new(t, u, 1.0))
        .collect();
    let mut places: Vec<&mut dyn Guide> = ratios.iter_mut().map(|g| g as &mut dyn Guide).collect();
    f(&mut places)
}

#[test]
fn search_many_samples_searches_together_and_gives_each_its_own_result() {
    let searches = [
        (
            config(Method::Cbs { w: 2, k: 3, l: 4 }, 20, 1).with_trace(true),
            "one",
        ),
        (config(Method::Cbs { w: 4, k: 4, l: 5 }, 30, 2), "two"),
        (config(Method::Bon { n: 6 }, 12, 3), "three"),
        (config(Method::Cbs { w: 1, k: 2, l: 3 }, 15, 4), "four"),
        (config(Method::Sample, 9, 5), "five"),
    ];
    let jobs = searches.iter().map(|(c, p)| job(c, p)).collect();
    let mut pool = Pool::default();
    let mut seen = vec![0; searches.len()];
    let results = with_places(2, |places| {
        search_many(jobs, places, &mut pool, &mut |job, _| {
            seen[job] += 1;
            true
        })
    })
    .unwrap();
    for (((config, prompt), got), selections) in searches.iter().zip(results).zip(seen) {
        let got = got.unwrap();
        let one = alone(config, prompt);
        assert_eq!(got.beams, one.beams, "{prompt}");
        assert_eq!(got.trace, one.trace, "{prompt}");
        assert_eq!(got.stats.chunks, one.stats.chunks);
        assert!(selections >= 1, "{prompt}");
    }
    // Two searches in flight at a time, sharing calls; every search number freed.
    assert_eq!(pool.widest, 2);
    assert_eq!(pool.ended.len(), searches.len());
}

#[test]
fn one_failing_or_cancelled_search_leaves_the_others_alone() {
    let c = config(Method::Cbs { w: 2, k: 2, l: 3 }, 9, 1);
    let jobs = vec![job(&c, "one"), job(&c, "   "), job(&c, "three")];
    let results = with_places(3, |places| {
        search_many(jobs, places, &mut Pool::default(), &mut |job, _| job != 2)
    })
    .unwrap();
    assert_eq!(results[0].as_ref().unwrap().beams, alone(&c, "one").beams);
    assert!(matches!(
        results[1],
        Err(SearchError::Config(ConfigError::EmptyPrompt))
    ));
    assert!(matches!(results[2], Err(SearchError::Cancelled)));
}

#[test]
fn a_done_that_breaks_ends_the_call_and_frees_every_place() {
    let c = config(Method::Cbs { w: 2, k: 2, l: 3 }, 12, 1);
    let jobs = (0..5).map(|i| job(&c, &format!("p{i}"))).collect();
    let mut pool = Pool::default();
    let mut got = Vec::new();
    with_places(2, |places| {
        search_many_each(jobs, places, &mut pool, &mut |_, _| true, &mut |job, r| {
            got.push((job, r.is_ok()));
            std::ops::ControlFlow::Break(())
        })
    })
    .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let mut ended = pool.ended.clone();
    ended.sort();
    assert_eq!(ended, [0, 1], "the finished place and the dropped one");
}

#[test]
fn places_take_searches_as_they_arrive_and_each_gets_its_own_result() {
    let first = config(Method::Cbs { w: 2, k: 3, l: 4 }, 24, 1);
    let later = config(Method::Cbs { w: 2, k: 2, l: 3 }, 12, 2);
    let mut pool = Pool::default();
    let mut results: Vec<Option<SearchOutput>> = vec![None, None, None];
    with_places(2, |guides| {
        let mut places = Places::new(2);
        places
            .start(0, 0, job(&first, "one"), &mut *guides[0], &mut pool)
            .unwrap();
        let mut steps = 0;
        loop {
            // The second search arrives after two rounds of the first; the third waits
            // for a free place, then takes the second's.
            if steps == 2 {
                places
                    .start(1, 1, job(&later, "two"), &mut *guides[1], &mut pool)
                    .unwrap();
                let busy = places.start(1, 2, job(&later, "three"), &mut *guides[1], &mut pool);
                assert!(matches!(busy, Err(SearchError::OutOfTurn(_))), "{busy:?}");
            }
            if steps > 2 && results[1].is_some() && results[2].is_none() && places.is_free(1) {
                places
                    .start(1, 2, job(&later, "three"), &mut *guides[1], &mut pool)
                    .unwrap();
            }
            if places.is_empty() {
                break;
            }
            let flow = places
                .step(guides, &mut pool, &mut |_, _| true, &mut |job, r| {
                    results[job] = Some(r.unwrap());
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            assert!(flow.is_continue());
            steps += 1;
        }
        assert_eq!(places.running(), 0);
    });
    for (i, (c, p)) in [(&first, "one"), (&later, "two"), (&later, "three")]
        .into_iter()
        .enumerate()
    {
        let got = results[i]
            .take()
            .unwrap_or_else(|| panic!("{p} never ended"));
        assert_eq!(got.beams, alone(c, p).beams, "{p}");
    }
    assert_eq!(pool.widest, 2, "the searches in flight shared calls");
}
