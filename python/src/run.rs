//! Running library work from Python: on a helper thread with the GIL released, while
//! the calling thread checks for signals every 50 ms; Ctrl-C sets the work's cancel
//! flag (the local models stop within a token, remote work at its next request) and
//! raises `KeyboardInterrupt` once the work has unwound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pyo3::prelude::*;

/// How often the calling thread looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Runs `work(cancel)`; `Err` is a Python exception raised by a signal handler (e.g.
/// `KeyboardInterrupt`), after `work` has returned.
pub fn cancellable<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(Arc<AtomicBool>) -> T + Send,
{
    let cancel = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let finished = Arc::new((Mutex::new(false), Condvar::new()));
        let (flag, signal) = (cancel.clone(), finished.clone());
        let worker = scope.spawn(move || {
            // Marks the work finished even if it panics.
            let _done = Finished(signal);
            work(flag)
        });
        let mut raised = None;
        loop {
            let done = py.detach(|| {
                let (lock, cv) = &*finished;
                let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                let (guard, _) = cv
                    .wait_timeout_while(guard, SIGNAL_POLL, |done| !*done)
                    .unwrap_or_else(|p| p.into_inner());
                *guard
            });
            if done {
                break;
            }
            if raised.is_none() {
                if let Err(e) = py.check_signals() {
                    cancel.store(true, Ordering::SeqCst);
                    raised = Some(e);
                }
            }
        }
        let out = py.detach(|| worker.join());
        match (raised, out) {
            (Some(e), _) => Err(e),
            (None, Ok(out)) => Ok(out),
            (None, Err(panic)) => std::panic::resume_unwind(panic),
        }
    })
}

/// Sets the flag and wakes the waiting thread when dropped.
struct Finished(Arc<(Mutex<bool>, Condvar)>);

impl Drop for Finished {
    fn drop(&mut self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
}
