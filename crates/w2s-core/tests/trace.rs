//! The trace and weighted guides with small deterministic backends.

mod common;

use common::{config, Letters, Weights};
use w2s_core::*;

fn pair_search(cfg: &SearchConfig, tuned_a: f64) -> SearchOutput {
    let mut strong = Letters {
        eos_weight: 0.1,
        ..Default::default()
    };
    let (mut tuned, mut untuned) = (
        Weights {
            a: tuned_a,
            eos: -0.2,
            log: None,
        },
        Weights {
            a: -1.0,
            eos: -1.0,
            log: None,
        },
    );
    search(
        cfg,
        "prompt",
        Models {
            strong: &mut strong,
            tuned: &mut tuned,
            untuned: &mut untuned,
        },
    )
    .unwrap()
}

#[test]
fn a_trace_records_every_step_and_changes_nothing() {
    let cfg = config(Method::Cbs { w: 2, k: 3, l: 2 }, 12, 9);
    let plain = pair_search(&cfg, -0.5);
    assert!(plain.trace.is_none());
    let traced = pair_search(&cfg.clone().with_trace(true), -0.5);
    assert_eq!(traced.beams, plain.beams);
    let trace = traced.trace.as_ref().unwrap();
    assert_eq!(trace.steps.len(), traced.stats.chunks);
    let mut tokens = 0;
    for (s, step) in trace.steps.iter().enumerate() {
        assert_eq!(step.chunk, s + 1);
        assert!(step.rows.len() <= 6);
        assert!((1..=2).contains(&step.rows.iter().filter(|r| r.kept).count()));
        for row in &step.rows {
            tokens += row.tokens;
            // The first step has no parents; later ones continue a kept row.
            match (s, row.parent) {
                (0, None) => {}
                (_, Some(p)) => assert!(trace.steps[s - 1].rows[p].kept, "step {s}"),
                (_, None) => panic!("row of step {s} without a parent"),
            }
            // The fake strong model gives -1 per token; a carried ended row adds none.
            let expect = (row.tokens > 0).then(|| -(row.tokens as f64));
            assert_eq!(row.strong_logprob, expect);
            assert!(row.tokens > 0 || row.finish.is_some());
            assert_eq!(row.value, Some(row.tuned.unwrap() - row.untuned.unwrap()));
        }
    }
    assert_eq!(tokens, traced.stats.strong_tokens_sampled);
    // The best beam is a kept row of the last step, and its chunks along the lineage
    // spell its text.
    let last = trace.steps.last().unwrap();
    let best = traced.best();
    let end = (0..last.rows.len())
        .find(|&r| last.rows[r].kept && last.rows[r].value == Some(best.score))
        .unwrap();
    let text: String = trace
        .lineage(end)
        .iter()
        .rev()
        .map(|&(s, r)| trace.steps[s].rows[r].chunk.as_str())
        .collect();
    assert_eq!(text, best.text);
    // It survives JSON.
    let json = serde_json::to_string(trace).unwrap();
    let back: Trace = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, trace);
}

#[test]
fn a_weighted_sum_of_pairs_adds_the_weighted_values_and_shows_each_term() {
    let cfg = config(Method::Cbs { w: 2, k: 2, l: 3 }, 9, 4).with_trace(true);
    let weights = |a| Weights {
        a,
        eos: -0.5,
        log: None,
    };
    let (mut t1, mut u1) = (weights(-0.5), weights(-1.0));
    let (mut t2, mut u2) = (weights(-2.0), weights(-1.0));
    let name = |n: &str, weight| TermName {
        name: n.into(),
        weight,
    };
    let mut guide = WeightedSum::new(vec![
        (
            name("likes a", 1.0),
            Box::new(LogRatio::new(&mut t1, &mut u1, 1.0)) as Box<dyn Guide>,
        ),
        (
            name("dislikes a", 0.25),
            Box::new(LogRatio::new(&mut t2, &mut u2, 1.0)),
        ),
    ])
    .unwrap();
    let mut strong = Letters {
        eos_weight: 0.1,
        ..Default::default()
    };
    let out = search_guided(&cfg, "prompt", &mut strong, &mut guide, &mut |_| true).unwrap();
    let trace = out.trace.as_ref().unwrap();
    assert_eq!(
        trace.terms,
        vec![name("likes a", 1.0), name("dislikes a", 0.25)]
    );
    for row in trace.steps.iter().flat_map(|s| &s.rows) {
        assert_eq!(row.terms.len(), 2);
        let v = row.terms[0] + 0.25 * row.terms[1];
        assert!((row.value.unwrap() - v).abs() < 1e-12);
        assert!(row.tuned.is_none() && row.untuned.is_none());
    }
    // Each "a" is worth +0.5 under the first term and -1 under the second: 0.25 in all.
    let best = out.best();
    assert!((best.score - 0.25 * best.text.matches('a').count() as f64).abs() < 1e-12);
}

struct Unit;
impl Guide for Unit {
    fn begin(
        &mut self,
        _: &str,
        _: usize,
        _: usize,
        _: &mut SearchStats,
    ) -> Result<(), SearchError> {
        Ok(())
    }
    fn score(
        &mut self,
        q: &[ScoreRequest<'_>],
        _: &mut SearchStats,
    ) -> Result<Vec<GuideScore>, SearchError> {
        Ok(q.iter().map(|_| GuideScore::value(1.0)).collect())
    }
    fn reorder(&mut self, _: &[usize], _: &mut SearchStats) -> Result<(), SearchError> {
        Ok(())
    }
}

#[test]
fn weights_that_cannot_guide_are_refused() {
    let term = |w: f64| {
        (
            TermName {
                name: format!("w{w}"),
                weight: w,
            },
            Box::new(Unit) as Box<dyn Guide>,
        )
    };
    for (terms, says) in [
        (vec![], "at least one term"),
        (vec![term(0.0), term(0.0)], "every weight is 0"),
        (vec![term(1.0), term(f64::NAN)], "finite"),
        (vec![term(f64::INFINITY)], "finite"),
    ] {
        let err = WeightedSum::new(terms).err().unwrap().to_string();
        assert!(err.contains(says), "{err}");
    }
    assert!(WeightedSum::new(vec![term(0.0), term(-1.0)]).is_ok());
}
