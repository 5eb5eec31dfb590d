//! Small deterministic backends shared by the search tests: the point is the algorithm.

use std::cell::RefCell;
use std::rc::Rc;

use w2s_core::*;

/// A strong model over the alphabet "abc"; "." ends a row (EOS). Draws one random number
/// per token from the row's stream, so its output depends only on the stream.
#[derive(Default)]
pub struct Letters {
    pub rows: Vec<String>,
    pub log: Rc<RefCell<Log>>,
    pub eos_weight: f64,
}

#[derive(Default)]
pub struct Log {
    pub reorders: Vec<Vec<usize>>,
    pub extend_calls: usize,
    pub score_calls: usize,
    pub scored_rows: Vec<usize>,
}

impl Proposer for Letters {
    fn begin(&mut self, s: &ProposalSetup<'_>) -> Result<(), BackendError> {
        self.rows = vec![String::new(); s.rows];
        Ok(())
    }
    fn extend(&mut self, reqs: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError> {
        self.log.borrow_mut().extend_calls += 1;
        let mut out = Vec::new();
        for r in reqs.iter_mut() {
            let mut text = String::new();
            let mut finish = None;
            let mut n = 0;
            while n < r.max_tokens {
                n += 1;
                let x = r.rng.next_f64();
                if x < self.eos_weight {
                    finish = Some(Finish::Eos);
                    break;
                }
                let c = ["a", "b", "c"]
                    [((x - self.eos_weight) / (1.0 - self.eos_weight) * 3.0) as usize % 3];
                text.push_str(c);
            }
            self.rows[r.row].push_str(&text);
            out.push(Chunk {
                text,
                tokens: n,
                finish,
                logprob: Some(-(n as f64)),
            });
        }
        Ok(out)
    }
    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        self.log.borrow_mut().reorders.push(parents.to_vec());
        self.rows = parents.iter().map(|&p| self.rows[p].clone()).collect();
        Ok(())
    }
}

/// log p = sum of per-letter weights (+ `eos` once ended).
pub struct Weights {
    pub a: f64,
    pub eos: f64,
    pub log: Option<Rc<RefCell<Log>>>,
}

impl Scorer for Weights {
    fn begin(&mut self, _: &str, _: usize, _: usize) -> Result<(), BackendError> {
        Ok(())
    }
    fn score(&mut self, reqs: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        if let Some(log) = &self.log {
            let mut log = log.borrow_mut();
            log.score_calls += 1;
            log.scored_rows.extend(reqs.iter().map(|r| r.row));
        }
        Ok(reqs
            .iter()
            .map(|r| {
                let letters: f64 = r
                    .text
                    .chars()
                    .map(|c| if c == 'a' { self.a } else { -1.0 })
                    .sum();
                letters + if r.ended { self.eos } else { 0.0 }
            })
            .collect())
    }
    fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> {
        Ok(())
    }
    fn tokens_evaluated(&self) -> u64 {
        0
    }
}

pub fn config(method: Method, max_new: usize, seed: u64) -> SearchConfig {
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
