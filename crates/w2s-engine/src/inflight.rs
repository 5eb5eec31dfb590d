//! Searches in flight together, for the batch front ends (`w2s eval`, `w2s generate
//! --prompts`, Python's `generate_batch`): N workers, each with an engine of its own over
//! the shared models ([`Engine::replica`]), take the jobs in order and hand each result
//! back as it finishes.
//!
//! Against a remote engine a search mostly waits on round trips (a CBS step is one round
//! of requests), so N searches in flight keep the engine busy N times as much. With every
//! model local the CPU is the bottleneck: the replicas' forward passes take turns at one
//! compute gate, so more searches in flight only add memory.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use w2s_core::Role;

use crate::spec::EngineSpec;
use crate::EngineError;

/// The most searches a batch front end keeps in flight (each holds its own contexts and
/// clients), as for the server's `--parallel`.
pub const MAX_PARALLEL: usize = 64;

/// Searches in flight when the user names no number: 1 when the strong model is local
/// (the CPU is the bottleneck and the searches would only take turns at it), 8 when it
/// is remote (each search mostly waits on the engine; 8 is the server's default too).
pub fn default_parallel(spec: &EngineSpec) -> usize {
    if spec.remote_roles().contains(&Role::Strong) {
        8
    } else {
        1
    }
}

/// `requested`, checked (1 to [`MAX_PARALLEL`]), or [`default_parallel`] when `None`.
pub fn parallel_for(spec: &EngineSpec, requested: Option<usize>) -> Result<usize, EngineError> {
    match requested {
        None => Ok(default_parallel(spec)),
        Some(0) => Err(EngineError::input(
            "parallel must be at least 1 (searches in flight at once)",
        )),
        Some(n) if n > MAX_PARALLEL => Err(EngineError::input(format!(
            "parallel {n} is more than {MAX_PARALLEL} searches in flight"
        ))),
        Some(n) => Ok(n),
    }
}

/// Runs every job on the first free worker, the jobs handed out in order, and gives
/// each result to `done` on the calling thread as it finishes (in finishing order).
/// `done` returning [`ControlFlow::Break`] stops handing out jobs: the ones already
/// running finish and are still given to `done` (so nothing finished is lost), the rest
/// never start. Returns how many jobs were started.
///
/// With one worker the jobs run on the calling thread, one after another, as a plain
/// loop would run them.
pub fn in_flight<W, J, R>(
    workers: &mut [W],
    jobs: impl IntoIterator<Item = J>,
    work: impl Fn(&mut W, J) -> R + Sync,
    mut done: impl FnMut(R) -> ControlFlow<()>,
) -> usize
where
    W: Send,
    J: Send,
    R: Send,
{
    if workers.len() <= 1 {
        let Some(worker) = workers.first_mut() else {
            return 0;
        };
        let mut started = 0;
        for job in jobs {
            started += 1;
            if done(work(worker, job)).is_break() {
                break;
            }
        }
        return started;
    }
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<J>>());
    let stop = AtomicBool::new(false);
    let started = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<R>();
    std::thread::scope(|scope| {
        for worker in workers.iter_mut() {
            let (queue, stop, started, tx, work) = (&queue, &stop, &started, tx.clone(), &work);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Some(job) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                    return;
                };
                started.fetch_add(1, Ordering::SeqCst);
                if tx.send(work(worker, job)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        // Every worker's sender is dropped when it returns, which ends this loop.
        for result in rx {
            if done(result).is_break() {
                stop.store(true, Ordering::SeqCst);
            }
        }
    });
    started.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_job_runs_once_and_results_come_back() {
        let mut workers = vec![0usize; 4];
        let mut got = Vec::new();
        let started = in_flight(
            &mut workers,
            0..40u64,
            |count, job| {
                *count += 1;
                std::thread::sleep(Duration::from_millis(job % 3));
                job * 2
            },
            |r| {
                got.push(r);
                ControlFlow::Continue(())
            },
        );
        assert_eq!(started, 40);
        got.sort();
        assert_eq!(got, (0..40).map(|j| j * 2).collect::<Vec<_>>());
        assert_eq!(workers.iter().sum::<usize>(), 40);
        assert!(
            workers.iter().filter(|&&c| c > 0).count() > 1,
            "{workers:?}"
        );
    }

    #[test]
    fn one_worker_runs_in_order_on_the_calling_thread() {
        let me = std::thread::current().id();
        let mut workers = vec![()];
        let mut got = Vec::new();
        in_flight(
            &mut workers,
            0..5,
            |_, j| (j, std::thread::current().id()),
            |(j, id)| {
                assert_eq!(id, me);
                got.push(j);
                ControlFlow::Continue(())
            },
        );
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_break_stops_new_jobs_and_delivers_the_running_ones() {
        for n in [1, 3] {
            let mut workers = vec![(); n];
            let mut got = Vec::new();
            let started = in_flight(
                &mut workers,
                0..100,
                |_, j| {
                    std::thread::sleep(Duration::from_millis(5));
                    j
                },
                |j| {
                    got.push(j);
                    if j == 2 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            );
            assert!(started < 100, "{n} workers started {started}");
            assert_eq!(got.len(), started, "every started job is delivered");
            assert!(got.contains(&2));
        }
    }

    #[test]
    fn parallel_is_checked() {
        let spec = EngineSpec::new(
            crate::RoleSpec::local("a.gguf", w2s_core::PromptTemplate::bare()),
            crate::RoleSpec::local("b.gguf", w2s_core::PromptTemplate::bare()),
            crate::RoleSpec::local("b.gguf", w2s_core::PromptTemplate::bare()),
        );
        assert_eq!(parallel_for(&spec, None).unwrap(), 1);
        assert_eq!(parallel_for(&spec, Some(4)).unwrap(), 4);
        let zero = parallel_for(&spec, Some(0)).unwrap_err().to_string();
        assert!(zero.contains("at least 1"), "{zero}");
        let big = parallel_for(&spec, Some(MAX_PARALLEL + 1))
            .unwrap_err()
            .to_string();
        assert!(big.contains("more than 64"), "{big}");
        let remote = EngineSpec {
            strong: crate::RoleSpec::parse(
                Role::Strong,
                Some("http://127.0.0.1:9/v1#m"),
                None,
                Some("{prompt}"),
            )
            .unwrap(),
            ..spec
        };
        assert_eq!(parallel_for(&remote, None).unwrap(), 8);
    }
}
