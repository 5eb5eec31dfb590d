//! Stopping work from another thread, and seeing that it still makes progress.
//!
//! A front end arms an [`Interrupt`] with a job's cancel flag and deadline; a backend
//! calls [`Interrupt::check`] between pieces of long work (e.g. every micro-batch of a
//! long prompt), which records progress and fails with an error of kind
//! [`ErrorKind::Cancelled`] once the flag is set or the deadline has passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{BackendError, ErrorKind};

/// A stop signal and a progress beat shared between a job's owner and its backends.
#[derive(Debug, Default)]
pub struct Interrupt {
    armed: Mutex<Option<(Arc<AtomicBool>, Option<Instant>)>>,
    beat: Mutex<Option<Instant>>,
}

impl Interrupt {
    /// A disarmed interrupt.
    pub fn new() -> Arc<Self> {
        Arc::new(Interrupt::default())
    }

    /// From now on, [`Interrupt::check`] fails once `cancel` is set or `deadline` passes.
    pub fn arm(&self, cancel: Arc<AtomicBool>, deadline: Instant) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some((cancel, Some(deadline)));
        self.beat();
    }

    /// From now on, [`Interrupt::check`] fails once `cancel` is set (no deadline).
    pub fn arm_cancel(&self, cancel: Arc<AtomicBool>) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some((cancel, None));
        self.beat();
    }

    /// Stops watching the last armed job.
    pub fn disarm(&self) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records progress now.
    pub fn beat(&self) {
        *self.beat.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// When progress was last recorded.
    pub fn last_beat(&self) -> Option<Instant> {
        *self.beat.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records progress; an error of kind [`ErrorKind::Cancelled`] if the armed job was
    /// cancelled or ran past its deadline.
    pub fn check(&self) -> Result<(), BackendError> {
        self.beat();
        let armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        match &*armed {
            Some((cancel, _)) if cancel.load(Ordering::SeqCst) => Err(BackendError::new(
                ErrorKind::Cancelled,
                "cancelled: the client went away",
            )),
            Some((_, Some(deadline))) if Instant::now() >= *deadline => Err(BackendError::new(
                ErrorKind::Cancelled,
                "cancelled: the deadline passed",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn checks_fail_once_cancelled_or_late_and_beat_every_time() {
        let i = Interrupt::new();
        assert!(i.check().is_ok());
        let flag = Arc::new(AtomicBool::new(false));
        i.arm(flag.clone(), Instant::now() + Duration::from_secs(60));
        assert!(i.check().is_ok());
        let before = i.last_beat().unwrap();
        flag.store(true, Ordering::SeqCst);
        let e = i.check().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert!(i.last_beat().unwrap() >= before);
        i.arm(Arc::new(AtomicBool::new(false)), Instant::now());
        assert_eq!(i.check().unwrap_err().kind(), ErrorKind::Cancelled);
        i.disarm();
        assert!(i.check().is_ok());
        // Armed with no deadline: only the flag cancels.
        let flag = Arc::new(AtomicBool::new(false));
        i.arm_cancel(flag.clone());
        assert!(i.check().is_ok());
        flag.store(true, Ordering::SeqCst);
        assert_eq!(i.check().unwrap_err().kind(), ErrorKind::Cancelled);
    }
}
