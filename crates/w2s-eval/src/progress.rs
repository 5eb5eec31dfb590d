//! What a run tells its caller as it goes ([`EvalEvent`]): notes, and each finished line
//! with the count and an ETA. The library only hands the events over; [`print_to_stderr`]
//! is the rendering `w2s eval` and Python's `w2s.evaluate` choose (a bar redrawn in place
//! on a terminal, one plain line per finished line otherwise, for log files).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What a run tells its caller as it goes.
#[derive(Debug, Clone, Copy)]
pub enum EvalEvent<'a> {
    /// A note of one line (an earlier run moved aside, lines to do, where the report is).
    Note(&'a str),
    /// A line finished; `what` names it.
    Line {
        /// Which line, and what it gave.
        what: &'a str,
        /// Lines finished in this session, this one included.
        done: usize,
        /// Lines this session has to do.
        total: usize,
        /// Since the session started.
        elapsed: Duration,
        /// Estimated time left, from this session's pace.
        eta: Option<Duration>,
    },
}

/// Where a run's events go: a caller's function, or `tracing` (level info) when none.
pub type EvalEvents = Box<dyn FnMut(EvalEvent<'_>) + Send>;

/// The events of a run as `tracing` records: the default when the caller gives none.
pub fn to_tracing(event: EvalEvent<'_>) {
    match event {
        EvalEvent::Note(note) => tracing::info!("{note}"),
        EvalEvent::Line {
            what, done, total, ..
        } => tracing::info!(done, total, "{what}"),
    }
}

/// Writes a run's events to stderr: notes as lines; finished lines as a bar with ETA
/// redrawn in place on a terminal, or one plain line each otherwise.
pub fn print_to_stderr(event: EvalEvent<'_>) {
    let mut err = std::io::stderr().lock();
    match event {
        EvalEvent::Note(note) => {
            let _ = writeln!(err, "{note}");
        }
        EvalEvent::Line {
            what,
            done,
            total,
            elapsed,
            eta,
        } => {
            let eta = eta.map_or_else(|| "?".into(), duration);
            let elapsed = duration(elapsed);
            if std::io::stderr().is_terminal() {
                let width = 30;
                let filled = width * done / total.max(1);
                let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
                let _ = write!(
                    err,
                    "\r\x1b[2K[{bar}] {done}/{total} {elapsed} elapsed, ETA {eta} | {what}"
                );
                if done == total {
                    let _ = writeln!(err);
                }
            } else {
                let _ = writeln!(
                    err,
                    "[{done}/{total}] {what} ({elapsed} elapsed, ETA {eta})"
                );
            }
        }
    }
    let _ = err.flush();
}

/// Counts a session's finished lines.
pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
}

/// `1h02m`, `3m05s`, `12s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    /// `total` lines to do in this session.
    pub fn new(total: usize) -> Self {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    /// Estimated time left, from this session's pace.
    pub fn eta(&self) -> Option<Duration> {
        (self.done > 0).then(|| {
            self.started
                .elapsed()
                .mul_f64((self.total - self.done) as f64 / self.done as f64)
        })
    }

    /// One line finished: `what` names it; the event to hand over.
    pub fn tick<'a>(&mut self, what: &'a str) -> EvalEvent<'a> {
        self.done = (self.done + 1).min(self.total);
        EvalEvent::Line {
            what,
            done: self.done,
            total: self.total,
            elapsed: self.started.elapsed(),
            eta: self.eta(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn eta_scales_with_what_is_left() {
        let mut p = Progress::new(4);
        assert!(p.eta().is_none());
        p.started = Instant::now() - Duration::from_secs(10);
        p.done = 1;
        let eta = p.eta().unwrap().as_secs_f64();
        assert!((29.0..31.5).contains(&eta), "{eta}");
    }
}
