//! Counters and gauges, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

const TTFT_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Everything `/metrics` shows.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(u16, &'static str), u64>>,
    /// Admitted requests waiting for the model worker.
    pub queue_depth: AtomicI64,
    /// Searches running.
    pub in_flight_searches: AtomicI64,
    /// HTTP requests being handled (all routes but /health and /metrics).
    pub in_flight_requests: AtomicI64,
    /// Clients that went away before their answer.
    pub disconnects: AtomicU64,
    /// Open client connections.
    pub connections_open: AtomicI64,
    /// Idle connections closed to make room at the connection cap.
    pub connections_evicted: AtomicU64,
    /// Failed accepts (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    strong_tokens: AtomicU64,
    strong_micros: AtomicU64,
    guide_tokens: AtomicU64,
    guide_micros: AtomicU64,
    ttft: Mutex<(Vec<u64>, f64, u64)>,
}

impl Metrics {
    /// Counts a finished request by status and error type (`ok` for successes).
    pub fn request(&self, status: u16, kind: &'static str) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((status, kind)).or_insert(0) += 1;
    }

    /// Adds one search's work.
    pub fn search_done(
        &self,
        strong_tokens: u64,
        strong: Duration,
        guide_tokens: u64,
        guide: Duration,
    ) {
        self.strong_tokens.fetch_add(strong_tokens, Relaxed);
        self.strong_micros
            .fetch_add(strong.as_micros() as u64, Relaxed);
        self.guide_tokens.fetch_add(guide_tokens, Relaxed);
        self.guide_micros
            .fetch_add(guide.as_micros() as u64, Relaxed);
    }

    /// Records a time to first token.
    pub fn first_token(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut t = self.ttft.lock().unwrap_or_else(|p| p.into_inner());
        if t.0.is_empty() {
            t.0 = vec![0; TTFT_BUCKETS.len()];
        }
        for (i, b) in TTFT_BUCKETS.iter().enumerate() {
            if secs <= *b {
                t.0[i] += 1;
            }
        }
        t.1 += secs;
        t.2 += 1;
    }

    /// Strong-model tokens per second of strong-model time so far.
    pub fn strong_tokens_per_s(&self) -> f64 {
        rate(
            self.strong_tokens.load(Relaxed),
            self.strong_micros.load(Relaxed),
        )
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE w2s_requests_total counter");
        for ((status, kind), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "w2s_requests_total{{status=\"{status}\",type=\"{kind}\"}} {n}"
            );
        }
        let gauges = [
            ("w2s_queue_depth", self.queue_depth.load(Relaxed)),
            (
                "w2s_in_flight_searches",
                self.in_flight_searches.load(Relaxed),
            ),
            (
                "w2s_in_flight_requests",
                self.in_flight_requests.load(Relaxed),
            ),
            ("w2s_connections_open", self.connections_open.load(Relaxed)),
        ];
        for (name, v) in gauges {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            ("w2s_disconnects_total", self.disconnects.load(Relaxed)),
            (
                "w2s_connections_evicted_total",
                self.connections_evicted.load(Relaxed),
            ),
            ("w2s_accept_errors_total", self.accept_errors.load(Relaxed)),
            ("w2s_strong_tokens_total", self.strong_tokens.load(Relaxed)),
            ("w2s_guide_tokens_total", self.guide_tokens.load(Relaxed)),
        ];
        for (name, v) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
        }
        let secs = [
            ("w2s_strong_seconds_total", self.strong_micros.load(Relaxed)),
            ("w2s_guide_seconds_total", self.guide_micros.load(Relaxed)),
        ];
        for (name, v) in secs {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", v as f64 / 1e6);
        }
        let _ = writeln!(
            out,
            "# TYPE w2s_strong_tokens_per_second gauge\nw2s_strong_tokens_per_second {:.3}",
            self.strong_tokens_per_s()
        );
        let _ = writeln!(
            out,
            "# TYPE w2s_guide_tokens_per_second gauge\nw2s_guide_tokens_per_second {:.3}",
            rate(
                self.guide_tokens.load(Relaxed),
                self.guide_micros.load(Relaxed)
            )
        );
        let t = self.ttft.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# TYPE w2s_time_to_first_token_seconds histogram");
        for (i, b) in TTFT_BUCKETS.iter().enumerate() {
            let n = t.0.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "w2s_time_to_first_token_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "w2s_time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {}",
            t.2
        );
        let _ = writeln!(out, "w2s_time_to_first_token_seconds_sum {}", t.1);
        let _ = writeln!(out, "w2s_time_to_first_token_seconds_count {}", t.2);
        out
    }
}

fn rate(tokens: u64, micros: u64) -> f64 {
    if micros == 0 {
        0.0
    } else {
        tokens as f64 / (micros as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.request(200, "ok");
        m.request(429, "queue_full");
        m.first_token(Duration::from_millis(300));
        m.search_done(100, Duration::from_secs(2), 200, Duration::from_secs(4));
        let text = m.render();
        assert!(text.contains("w2s_requests_total{status=\"429\",type=\"queue_full\"} 1"));
        assert!(text.contains("w2s_time_to_first_token_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("w2s_time_to_first_token_seconds_bucket{le=\"0.25\"} 0"));
        assert!(text.contains("w2s_strong_tokens_per_second 50.000"));
    }
}
