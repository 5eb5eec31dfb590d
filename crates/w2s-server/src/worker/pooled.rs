//! The pooled worker (`w2s serve --pooled`): one thread steps every search in flight
//! together on one context of the local strong model ([`SearchPool`]), the rows of all of
//! them sampled in one decode per token. A search joins at the next step after it is
//! admitted and leaves as it ends; jobs wait in arrival order (FIFO) for a free place,
//! and plain requests run between steps.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use w2s_core::{Interrupt, SearchOutput};
use w2s_engine::{Admission, EngineError, SearchPool};
use w2s_llama::PlainModel;

use super::run::{failure, finished, report, search_request};
use super::{
    count_work, give_back_freed_memory, shrink_plain, Event, Failure, Job, Outcome, PlainRun,
    SearchWork, Shared, Work,
};

/// A search admitted to the pool.
struct Active {
    job: Job,
    work: SearchWork,
    place: usize,
    prompt_tokens: usize,
    interrupt: Arc<Interrupt>,
    /// Bytes of settled text sent so far.
    sent: usize,
}

/// The pooled worker's state between steps.
struct Pooled<'a> {
    pool: SearchPool,
    shared: &'a Shared,
    waiting: VecDeque<Job>,
    active: HashMap<usize, Active>,
    plain: Vec<Option<PlainModel>>,
    plain_interrupt: Arc<Interrupt>,
    /// The number of the next search admitted.
    next_id: usize,
}

/// Serves jobs from `inbox` on `pool` until the inbox closes and nothing is left.
pub(super) fn serve_pooled(pool: SearchPool, inbox: Receiver<Job>, shared: &Shared) {
    let mut w = Pooled {
        pool,
        shared,
        waiting: VecDeque::new(),
        active: HashMap::new(),
        plain: vec![None, None, None],
        plain_interrupt: Interrupt::new(),
        next_id: 0,
    };
    let mut open = true;
    loop {
        if w.active.is_empty() && w.waiting.is_empty() {
            match inbox.recv() {
                Ok(job) => w.waiting.push_back(job),
                Err(_) => return,
            }
        }
        while open {
            match inbox.try_recv() {
                Ok(job) => w.waiting.push_back(job),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        w.admit_waiting();
        if !w.active.is_empty() {
            w.step();
        }
        if w.active.is_empty() && !open && w.waiting.is_empty() {
            return;
        }
    }
}

impl Pooled<'_> {
    /// Takes waiting jobs in arrival order until one must wait for room.
    fn admit_waiting(&mut self) {
        let metrics = &self.shared.metrics;
        while let Some(job) = self.waiting.pop_front() {
            let Work::Search(work) = &job.work else {
                metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                self.run_plain(job);
                continue;
            };
            let gone = if job.cancel.load(Ordering::SeqCst) {
                Some(Failure::Cancelled)
            } else {
                (Instant::now() >= job.deadline).then_some(Failure::Deadline)
            };
            if let Some(f) = gone {
                metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                let _ = job.events.send(Event::Done(Err(f)));
                continue;
            }
            let work = work.clone();
            let interrupt = Interrupt::new();
            interrupt.arm(job.cancel.clone(), job.deadline);
            // The pool has no compute gate: the number only names the job, and is taken
            // once the job is admitted.
            let id = self.next_id;
            let request = search_request(&work, id as u64, &interrupt);
            let pool = &mut self.pool;
            let admitted = catch_unwind(AssertUnwindSafe(|| pool.admit(id, &request)));
            match admitted {
                Ok(Ok(Admission::Wait)) => {
                    self.waiting.push_front(job);
                    return;
                }
                Ok(Ok(Admission::Started {
                    place,
                    prompt_tokens,
                })) => {
                    metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                    metrics.in_flight_searches.fetch_add(1, Ordering::SeqCst);
                    self.shared.state.run_in(place, interrupt.clone());
                    let active = Active {
                        job,
                        work,
                        place,
                        prompt_tokens,
                        interrupt,
                        sent: 0,
                    };
                    self.active.insert(id, active);
                    self.next_id += 1;
                }
                Ok(Err(e)) => {
                    metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                    let f = failure(e, &job);
                    let _ = job.events.send(Event::Done(Err(f)));
                }
                Err(_) => {
                    metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                    let _ = job.events.send(Event::Done(Err(Failure::Panic)));
                    self.fail_all(|_| Failure::Panic);
                }
            }
        }
    }

    /// A plain request, between steps.
    fn run_plain(&mut self, job: Job) {
        let Work::Plain(req) = &job.work else {
            return;
        };
        let metrics = &self.shared.metrics;
        metrics.in_flight_searches.fetch_add(1, Ordering::SeqCst);
        self.plain_interrupt.arm(job.cancel.clone(), job.deadline);
        let run = PlainRun {
            threads: self.shared.threads,
            interrupt: &self.plain_interrupt,
        };
        let result = if job.cancel.load(Ordering::SeqCst) {
            Err(Failure::Cancelled)
        } else {
            run.run(self.pool.engine(), &mut self.plain, req, None)
        };
        self.plain_interrupt.disarm();
        metrics.in_flight_searches.fetch_sub(1, Ordering::SeqCst);
        if matches!(result, Err(Failure::Panic)) {
            self.plain = vec![None, None, None];
        } else if shrink_plain(&mut self.plain, self.shared.shrink_above) {
            give_back_freed_memory();
        }
        let _ = job.events.send(Event::Done(result));
    }

    /// One step of every search in flight; answers those that ended.
    fn step(&mut self) {
        let mut ended: Vec<(usize, Result<SearchOutput, EngineError>)> = Vec::new();
        let (pool, active) = (&mut self.pool, &mut self.active);
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            pool.step(
                &mut |id, p| match active.get_mut(&id) {
                    Some(a) => {
                        a.interrupt.beat();
                        report(&a.job, &mut a.sent, p.settled_text)
                    }
                    None => false,
                },
                &mut |id, r| ended.push((id, r)),
            )
        }));
        for (id, result) in ended {
            if let Some(a) = self.active.remove(&id) {
                let result = match result {
                    Ok(output) => self.answer(&a, output),
                    Err(e) => Err(failure(e, &a.job)),
                };
                self.end(a, result);
            }
        }
        match stepped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(%e, "the pooled strong model failed");
                self.fail_all(|_| Failure::Internal("strong model failed".into()));
            }
            Err(_) => self.fail_all(|_| Failure::Panic),
        }
        if self.active.is_empty() && self.pool.shrink(self.shared.shrink_above) {
            give_back_freed_memory();
        }
    }

    /// The answer of a finished search.
    fn answer(&mut self, a: &Active, output: SearchOutput) -> Result<Outcome, Failure> {
        let request = search_request(&a.work, 0, &a.interrupt);
        finished(
            self.pool.engine(),
            (&a.work, &request),
            output,
            a.prompt_tokens,
        )
        .map(Outcome::Search)
    }

    /// Frees a search's place in the books and sends its answer.
    fn end(&mut self, a: Active, result: Result<Outcome, Failure>) {
        let metrics = &self.shared.metrics;
        a.interrupt.disarm();
        self.shared.state.set_busy(a.place, false);
        metrics.in_flight_searches.fetch_sub(1, Ordering::SeqCst);
        count_work(metrics, &result);
        let _ = a.job.events.send(Event::Done(result));
    }

    /// Fails every search in flight with `why` and starts the pool afresh (its contexts
    /// may be half-updated).
    fn fail_all(&mut self, why: impl Fn(&Active) -> Failure) {
        self.pool.reset();
        let ids: Vec<usize> = self.active.keys().copied().collect();
        for id in ids {
            if let Some(a) = self.active.remove(&id) {
                let f = why(&a);
                self.end(a, Err(f));
            }
        }
    }
}
