//! Progress of a run: a bar with ETA redrawn in place on a terminal, plain log lines
//! otherwise (one per finished line, for log files).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    tty: bool,
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
            tty: std::io::stderr().is_terminal(),
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

    /// One line finished: `what` names it.
    pub fn tick(&mut self, what: &str) {
        self.done = (self.done + 1).min(self.total);
        let eta = self.eta().map_or_else(|| "?".into(), duration);
        let elapsed = duration(self.started.elapsed());
        let mut err = std::io::stderr().lock();
        if self.tty {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
            let _ = write!(
                err,
                "\r\x1b[2K[{bar}] {}/{} {elapsed} elapsed, ETA {eta} | {what}",
                self.done, self.total
            );
            if self.done == self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(
                err,
                "[{}/{}] {what} ({elapsed} elapsed, ETA {eta})",
                self.done, self.total
            );
        }
        let _ = err.flush();
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
