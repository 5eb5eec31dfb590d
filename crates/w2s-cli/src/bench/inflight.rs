//! `w2s bench --in-flight 1,4,8`: N searches in flight as N workers, each with contexts
//! of its own and its decodes taking turns at the compute gate (what `w2s eval --parallel
//! N` runs), against the same N searches on one context of the local strong model, the
//! rows of all of them sampled in one decode per token (pooled).

use std::ops::ControlFlow;
use std::time::Instant;

use serde::Serialize;
use w2s_core::{Method, SearchConfig, SearchOutput};
use w2s_engine::{can_pool, in_flight, search_pooled, Checked, Engine, EngineError, SearchRequest};
use w2s_eval::PromptItem;

use crate::fail::{usage, Fail};

#[derive(Debug, Serialize)]
struct Row {
    in_flight: usize,
    searches: usize,
    workers_s: f64,
    pooled_s: f64,
    pooled_over_workers: f64,
    workers_strong_tokens: usize,
    pooled_strong_tokens: usize,
    workers_strong_tokens_per_s: f64,
    pooled_strong_tokens_per_s: f64,
}

/// One timed pass: wall seconds and strong tokens sampled.
type Pass = (f64, usize);

pub fn run(
    in_flights: &[usize],
    settings: &Checked,
    method: Method,
    items: &[PromptItem],
    searches: usize,
    repeats: usize,
    json: bool,
) -> Result<(), Fail> {
    if in_flights.iter().any(|&n| n == 0 || n > 64) {
        return Err(usage("--in-flight takes searches in flight from 1 to 64"));
    }
    let base = &settings.search;
    let t = base.max_new_tokens();
    let jobs: Vec<(SearchConfig, String)> = (0..searches)
        .map(|i| {
            let config = SearchConfig::new(
                method,
                t,
                base.beta(),
                base.seed() + i as u64,
                *base.sampling(),
                base.stop().to_vec(),
            )?;
            Ok((config, items[i % items.len()].prompt.clone()))
        })
        .collect::<Result<_, Fail>>()?;
    let engine = Engine::build(&settings.engine)?;
    if !can_pool(&engine) {
        return Err(usage(
            "--in-flight compares pooled decodes of a local strong model guided by the tuned / untuned pair alone",
        ));
    }
    let most = in_flights.iter().copied().max().unwrap_or(1);
    let mut engines = (0..most)
        .map(|_| engine.replica())
        .collect::<Result<Vec<_>, _>>()?;
    // Warm-up, untimed: one search each way.
    workers(&mut engines[..1], &jobs[..1])?;
    pooled(&mut engines[..1], &jobs[..1])?;
    eprintln!("warm-up done");
    let mut rows = Vec::new();
    for &n in in_flights {
        let (mut w, mut p) = (Vec::new(), Vec::new());
        for rep in 0..repeats {
            // Alternate which goes first, so that a drift of the machine's speed does
            // not favour one side.
            if rep % 2 == 0 {
                w.push(workers(&mut engines[..n], &jobs)?);
                p.push(pooled(&mut engines[..n], &jobs)?);
            } else {
                p.push(pooled(&mut engines[..n], &jobs)?);
                w.push(workers(&mut engines[..n], &jobs)?);
            }
            eprintln!(
                "{n} in flight, rep {}: workers {:.1} s, pooled {:.1} s",
                rep + 1,
                w[rep].0,
                p[rep].0
            );
        }
        let (w, p) = (median(&mut w), median(&mut p));
        rows.push(Row {
            in_flight: n,
            searches: jobs.len(),
            workers_s: w.0,
            pooled_s: p.0,
            pooled_over_workers: p.0 / w.0,
            workers_strong_tokens: w.1,
            pooled_strong_tokens: p.1,
            workers_strong_tokens_per_s: w.1 as f64 / w.0,
            pooled_strong_tokens_per_s: p.1 as f64 / p.0,
        });
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| usage(e.to_string()))?
        );
        return Ok(());
    }
    println!(
        "{} searches of {method}, {t} new tokens, {} threads; median of {repeats}",
        jobs.len(),
        settings.engine.threads
    );
    println!("| in flight | workers s | pooled s | pooled / workers | strong tok/s workers | strong tok/s pooled |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} |",
            r.in_flight,
            r.workers_s,
            r.pooled_s,
            r.pooled_over_workers,
            r.workers_strong_tokens_per_s,
            r.pooled_strong_tokens_per_s
        );
    }
    Ok(())
}

fn median(passes: &mut [Pass]) -> Pass {
    passes.sort_by(|a, b| a.0.total_cmp(&b.0));
    passes[passes.len() / 2]
}

/// A pass's strong tokens so far, or its first failure.
struct Tally {
    started: Instant,
    tokens: usize,
    failed: Option<EngineError>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            started: Instant::now(),
            tokens: 0,
            failed: None,
        }
    }

    fn add(&mut self, result: Result<SearchOutput, EngineError>) -> ControlFlow<()> {
        match result {
            Ok(out) => {
                self.tokens += out.stats.strong_tokens_sampled;
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.failed = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    fn pass(self) -> Result<Pass, Fail> {
        match self.failed {
            Some(e) => Err(e.into()),
            None => Ok((self.started.elapsed().as_secs_f64(), self.tokens)),
        }
    }
}

fn workers(engines: &mut [Engine], jobs: &[(SearchConfig, String)]) -> Result<Pass, Fail> {
    let mut tally = Tally::new();
    // Each search's rank at the compute gate is its place in the queue, as the server's
    // arrival number: the oldest search in flight computes first.
    in_flight(
        engines,
        jobs.iter().enumerate(),
        |e, (rank, (config, prompt))| {
            let request = SearchRequest {
                rank: rank as u64,
                ..SearchRequest::new(config, prompt)
            };
            e.run(&request, &mut |_| true)
        },
        |r| tally.add(r),
    );
    tally.pass()
}

fn pooled(engines: &mut [Engine], jobs: &[(SearchConfig, String)]) -> Result<Pass, Fail> {
    let mut tally = Tally::new();
    search_pooled(engines, jobs, None, &mut |_, _| true, &mut |_, r| {
        tally.add(r)
    })?;
    // The pool computed on this thread: its CPU helper team would stay beside the
    // workers' of the next pass (more threads than CPUs make every wait a wake-up).
    w2s_llama::release_cpu_threads();
    tally.pass()
}
