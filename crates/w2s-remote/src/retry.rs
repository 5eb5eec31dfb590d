//! When and how long to wait before trying a request again: jittered exponential backoff,
//! bounded, with the server's `Retry-After` respected.

use std::time::Duration;

use w2s_core::RowRng;

/// Retry settings: at most `max_retries` retries after the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry (doubled each time, then jittered).
    pub base: Duration,
    /// Longest wait between attempts; a longer `Retry-After` fails the request.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait this long, then try again.
    Wait(Duration),
    /// No retries left.
    GiveUp,
    /// The server asked for a longer wait than `max_backoff`.
    TooLate(Duration),
}

impl RetryPolicy {
    /// What to do after failed attempt number `attempt` (0-based). `retry_after` is the
    /// server's `Retry-After`, if any; `rng` jitters the wait ("equal jitter": half fixed,
    /// half random, so waits never collapse to zero).
    pub(crate) fn next(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut RowRng,
    ) -> Next {
        if attempt >= self.max_retries {
            return Next::GiveUp;
        }
        if let Some(wait) = retry_after {
            return if wait > self.max_backoff {
                Next::TooLate(wait)
            } else {
                Next::Wait(wait)
            };
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_backoff);
        let half = exp / 2;
        Next::Wait(half + half.mul_f64(rng.next_f64()))
    }
}

/// Parses a `Retry-After` header given in seconds. The HTTP-date form is not used by the
/// engines we target; it gives `None` (plain backoff then applies).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        }
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let p = policy();
        let mut rng = RowRng::new(1, 0);
        for (attempt, full) in [(0, 100), (1, 200), (2, 300)] {
            for _ in 0..50 {
                let Next::Wait(w) = p.next(attempt, None, &mut rng) else {
                    panic!("expected a wait")
                };
                let full = Duration::from_millis(full);
                assert!(w >= full / 2 && w <= full, "attempt {attempt}: {w:?}");
            }
        }
        assert_eq!(p.next(3, None, &mut rng), Next::GiveUp);
    }

    #[test]
    fn retry_after_is_respected_within_the_bound() {
        let p = policy();
        let mut rng = RowRng::new(1, 0);
        let ms = Duration::from_millis;
        assert_eq!(p.next(0, Some(ms(250)), &mut rng), Next::Wait(ms(250)));
        assert_eq!(p.next(0, Some(ms(900)), &mut rng), Next::TooLate(ms(900)));
        assert_eq!(p.next(3, Some(ms(10)), &mut rng), Next::GiveUp);
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
