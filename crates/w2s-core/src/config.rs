//! Checked settings: raw numbers are parsed once into these types, and the search takes
//! only these.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Most rows (W*K or N) one search may keep in flight.
pub const MAX_SEARCH_ROWS: usize = 1024;

/// A setting kept as `f32` (temperature, top-p) as the user wrote it in decimal: `0.7`
/// gives `0.7`, not `0.699999988079071`. Use it wherever such a value leaves the program
/// (JSON bodies sent to an engine, result files, reports).
pub fn shown_f32(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The paper's settings, written once: every front end's defaults come from here.
pub mod defaults {
    /// Sampling temperature.
    pub const TEMPERATURE: f32 = 0.7;
    /// Top-k (0 = off).
    pub const TOP_K: u32 = 50;
    /// Top-p.
    pub const TOP_P: f32 = 1.0;
    /// Beams kept (W).
    pub const W: usize = 4;
    /// Successors per beam (K).
    pub const K: usize = 4;
    /// Strong tokens per chunk (L).
    pub const L: usize = 5;
    /// Samples of Best-of-N.
    pub const BON_N: usize = 16;
    /// Strong-model tokens per response at most.
    pub const MAX_NEW_TOKENS: usize = 50;
    /// Weight of the log-probability ratio.
    pub const BETA: f64 = 1.0;
    /// Seed of every random draw.
    pub const SEED: u64 = 1;
    /// Tokens an adaptive chunk has at least ([`super::EntropyEnd`]).
    pub const CHUNK_MIN: usize = 2;
}

/// How the strong model samples tokens. Defaults are the paper's: 0.7 / 50 / 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    temperature: f32,
    top_k: u32,
    top_p: f32,
}

impl SamplingParams {
    /// Temperature >= 0 (0 = greedy), top-k (0 = off), top-p in (0, 1].
    pub fn new(temperature: f32, top_k: u32, top_p: f32) -> Result<Self, ConfigError> {
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(ConfigError::Temperature(temperature));
        }
        if !top_p.is_finite() || top_p <= 0.0 || top_p > 1.0 {
            return Err(ConfigError::TopP(top_p));
        }
        Ok(SamplingParams {
            temperature,
            top_k,
            top_p,
        })
    }
    /// Softmax temperature; 0 means greedy.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }
    /// Keep the k most likely tokens; 0 keeps all.
    pub fn top_k(&self) -> u32 {
        self.top_k
    }
    /// Nucleus mass; 1.0 keeps all.
    pub fn top_p(&self) -> f32 {
        self.top_p
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: defaults::TEMPERATURE,
            top_k: defaults::TOP_K,
            top_p: defaults::TOP_P,
        }
    }
}

/// The search method. Best-of-N and plain sampling are configurations of the same
/// chunk-level beam search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    /// Chunk-level beam search: keep `w` beams, `k` successors each, chunks of `l` tokens.
    Cbs {
        /// Beams kept after each chunk.
        w: usize,
        /// Successors sampled from each kept beam.
        k: usize,
        /// Strong-model tokens per chunk.
        l: usize,
    },
    /// Best-of-N: N samples, scored once at the end (W = 1, K = N, L = infinity).
    Bon {
        /// Number of samples.
        n: usize,
    },
    /// Plain sampling from the strong model (W = K = 1, L = infinity).
    Sample,
}

impl Default for Method {
    fn default() -> Self {
        Method::Cbs {
            w: defaults::W,
            k: defaults::K,
            l: defaults::L,
        }
    }
}

impl Method {
    /// Parses `cbs:WxKxL`, `bon:N`, `sample` (also `cbs`/`bon` alone with the defaults).
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::MethodSyntax(s.to_string());
        let (name, args) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        let num = |t: &str| t.trim().parse::<usize>().map_err(|_| bad());
        match (name, args) {
            ("sample", None) => Ok(Method::Sample),
            ("cbs", None) => Ok(Method::default()),
            ("cbs", Some(a)) => {
                let parts: Vec<&str> = a.split(['x', 'X']).collect();
                if parts.len() != 3 {
                    return Err(bad());
                }
                Ok(Method::Cbs {
                    w: num(parts[0])?,
                    k: num(parts[1])?,
                    l: num(parts[2])?,
                })
            }
            ("bon", None) => Ok(Method::Bon { n: defaults::BON_N }),
            ("bon", Some(a)) => Ok(Method::Bon { n: num(a)? }),
            _ => Err(bad()),
        }
    }

    /// Beams kept after each selection (W).
    pub fn width(&self) -> usize {
        match *self {
            Method::Cbs { w, .. } => w,
            Method::Bon { .. } | Method::Sample => 1,
        }
    }
    /// Successors per kept beam (K).
    pub fn successors(&self) -> usize {
        match *self {
            Method::Cbs { k, .. } => k,
            Method::Bon { n } => n,
            Method::Sample => 1,
        }
    }
    /// Tokens per chunk (L); `None` is "until the end".
    pub fn chunk_len(&self) -> Option<usize> {
        match *self {
            Method::Cbs { l, .. } => Some(l),
            Method::Bon { .. } | Method::Sample => None,
        }
    }
    /// Rows sampled in parallel (W*K).
    pub fn rows(&self) -> usize {
        self.width().saturating_mul(self.successors())
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Cbs { w, k, l } => write!(f, "cbs:{w}x{k}x{l}"),
            Method::Bon { n } => write!(f, "bon:{n}"),
            Method::Sample => write!(f, "sample"),
        }
    }
}

/// Adaptive chunk ends: a chunk ends before the first token, after at least `min_tokens`
/// tokens of the chunk, whose next-token distribution under the strong model has an
/// entropy above `entropy` nats; the method's L stays the cap. The search then branches
/// where the strong model is unsure instead of every L tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntropyEnd {
    min_tokens: usize,
    entropy: f64,
}

impl EntropyEnd {
    /// Checks `min_tokens >= 1` and a finite `entropy > 0`.
    pub fn new(min_tokens: usize, entropy: f64) -> Result<Self, ConfigError> {
        if min_tokens == 0 {
            return Err(ConfigError::ChunkEnd(
                "the minimum chunk length must be at least 1".into(),
            ));
        }
        if !(entropy.is_finite() && entropy > 0.0) {
            return Err(ConfigError::ChunkEnd(format!(
                "the entropy threshold must be a finite number of nats > 0, got {entropy}"
            )));
        }
        Ok(EntropyEnd {
            min_tokens,
            entropy,
        })
    }
    /// Tokens a chunk has at least before it may end early.
    pub fn min_tokens(&self) -> usize {
        self.min_tokens
    }
    /// The threshold in nats.
    pub fn entropy(&self) -> f64 {
        self.entropy
    }
}

/// A checked search configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    method: Method,
    max_new_tokens: usize,
    beta: f64,
    seed: u64,
    sampling: SamplingParams,
    stop: Vec<String>,
    chunk_end: Option<EntropyEnd>,
    trace: bool,
}

impl SearchConfig {
    /// Checks every number: W, K, L, N >= 1, W*K <= [`MAX_SEARCH_ROWS`], max new tokens >= 1,
    /// beta finite, stop strings non-empty.
    pub fn new(
        method: Method,
        max_new_tokens: usize,
        beta: f64,
        seed: u64,
        sampling: SamplingParams,
        stop: Vec<String>,
    ) -> Result<Self, ConfigError> {
        match method {
            Method::Cbs { w, k, l } => {
                for (name, v) in [("W (-w)", w), ("K (-k)", k), ("L (-l)", l)] {
                    if v == 0 {
                        return Err(ConfigError::Zero(name));
                    }
                }
            }
            Method::Bon { n: 0 } => return Err(ConfigError::Zero("N (--n)")),
            _ => {}
        }
        if method.rows() > MAX_SEARCH_ROWS {
            return Err(ConfigError::TooManyRows {
                rows: method.rows(),
                max: MAX_SEARCH_ROWS,
            });
        }
        if max_new_tokens == 0 {
            return Err(ConfigError::Zero("max new tokens"));
        }
        if !beta.is_finite() {
            return Err(ConfigError::Beta(beta));
        }
        if stop.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::EmptyStop);
        }
        Ok(SearchConfig {
            method,
            max_new_tokens,
            beta,
            seed,
            sampling,
            stop,
            chunk_end: None,
            trace: false,
        })
    }
    /// Ends chunks adaptively ([`EntropyEnd`]; `None`: every L tokens). An error unless
    /// the method is CBS with L greater than the minimum chunk length.
    pub fn with_chunk_end(mut self, end: Option<EntropyEnd>) -> Result<Self, ConfigError> {
        if let Some(e) = end {
            match self.method.chunk_len() {
                Some(l) if l > e.min_tokens => {}
                Some(l) => {
                    return Err(ConfigError::ChunkEnd(format!(
                        "the minimum chunk length ({}) must be below L ({l}), which caps a chunk",
                        e.min_tokens
                    )))
                }
                None => {
                    return Err(ConfigError::ChunkEnd(format!(
                        "{} has no chunks; use cbs:WxKxL with L as the cap",
                        self.method
                    )))
                }
            }
        }
        self.chunk_end = end;
        Ok(self)
    }
    /// Records every step of the search in [`crate::SearchOutput::trace`] (and asks the
    /// strong model for each chunk's log-probability where it can give it).
    pub fn with_trace(mut self, trace: bool) -> Self {
        self.trace = trace;
        self
    }
    /// The same settings with another method and seed; adaptive chunk ends carry over
    /// to a method with chunks (CBS) and are dropped for one without (Best-of-N,
    /// sampling). An error if the method's numbers are out of range, or its L is not above
    /// the minimum chunk length.
    pub fn with_method(&self, method: Method, seed: u64) -> Result<SearchConfig, ConfigError> {
        SearchConfig::new(
            method,
            self.max_new_tokens,
            self.beta,
            seed,
            self.sampling,
            self.stop.clone(),
        )?
        .with_chunk_end(self.chunk_end.filter(|_| method.chunk_len().is_some()))
        .map(|c| c.with_trace(self.trace))
    }
    /// Adaptive chunk ends, if on.
    pub fn chunk_end(&self) -> Option<EntropyEnd> {
        self.chunk_end
    }
    /// Whether the search records a trace.
    pub fn trace(&self) -> bool {
        self.trace
    }
    /// The search method.
    pub fn method(&self) -> Method {
        self.method
    }
    /// Strong-model tokens per response at most.
    pub fn max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }
    /// Weight of the log-probability ratio.
    pub fn beta(&self) -> f64 {
        self.beta
    }
    /// Seed of every random draw of the search.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Strong-model sampler settings.
    pub fn sampling(&self) -> &SamplingParams {
        &self.sampling
    }
    /// Strings that end a response (the stop string itself is not part of it).
    pub fn stop(&self) -> &[String] {
        &self.stop
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            method: Method::default(),
            max_new_tokens: defaults::MAX_NEW_TOKENS,
            beta: defaults::BETA,
            seed: defaults::SEED,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            chunk_end: None,
            trace: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_methods() {
        assert_eq!(
            Method::parse("cbs:4x4x5").unwrap(),
            Method::Cbs { w: 4, k: 4, l: 5 }
        );
        assert_eq!(Method::parse("bon:16").unwrap(), Method::Bon { n: 16 });
        assert_eq!(Method::parse("sample").unwrap(), Method::Sample);
        assert_eq!(Method::parse("cbs").unwrap(), Method::default());
        for bad in ["cbs:4x4", "bon:x", "beam", "cbs:4x4x-1", ""] {
            assert!(Method::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Method::parse("cbs:2x8x5").unwrap().to_string(), "cbs:2x8x5");
    }

    #[test]
    fn rejects_bad_numbers() {
        let s = SamplingParams::default();
        let zero_w = Method::Cbs { w: 0, k: 4, l: 5 };
        assert!(matches!(
            SearchConfig::new(zero_w, 50, 1.0, 1, s, vec![]),
            Err(ConfigError::Zero(_))
        ));
        assert!(SearchConfig::new(Method::Bon { n: 0 }, 50, 1.0, 1, s, vec![]).is_err());
        assert!(SearchConfig::new(Method::Sample, 0, 1.0, 1, s, vec![]).is_err());
        assert!(SearchConfig::new(Method::Sample, 5, f64::NAN, 1, s, vec![]).is_err());
        assert!(SearchConfig::new(Method::Sample, 5, 1.0, 1, s, vec![String::new()]).is_err());
        let huge = Method::Cbs {
            w: 1000,
            k: 1000,
            l: 1,
        };
        assert!(SearchConfig::new(huge, 5, 1.0, 1, s, vec![]).is_err());
        assert!(SamplingParams::new(-0.1, 50, 1.0).is_err());
        assert!(SamplingParams::new(f32::NAN, 50, 1.0).is_err());
        assert!(SamplingParams::new(0.7, 50, 0.0).is_err());
        assert!(SamplingParams::new(0.7, 50, 1.5).is_err());
        assert!(SamplingParams::new(0.0, 0, 1.0).is_ok());
    }

    #[test]
    fn checks_adaptive_chunk_ends() {
        assert!(EntropyEnd::new(0, 1.0).is_err());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(EntropyEnd::new(2, bad).is_err(), "{bad}");
        }
        let end = EntropyEnd::new(2, 2.5).unwrap();
        let s = SamplingParams::default();
        let cbs = |l| SearchConfig::new(Method::Cbs { w: 2, k: 2, l }, 20, 1.0, 1, s, vec![]);
        assert!(cbs(8).unwrap().with_chunk_end(Some(end)).is_ok());
        let err = cbs(2).unwrap().with_chunk_end(Some(end)).unwrap_err();
        assert!(err.to_string().contains("below L (2)"), "{err}");
        let bon = SearchConfig::new(Method::Bon { n: 4 }, 20, 1.0, 1, s, vec![]).unwrap();
        assert!(bon.clone().with_chunk_end(Some(end)).is_err());
        assert!(bon.with_chunk_end(None).is_ok());
        // Another method keeps the ends where it has chunks.
        let adaptive = cbs(8)
            .unwrap()
            .with_chunk_end(Some(end))
            .unwrap()
            .with_trace(true);
        let b = adaptive.with_method(Method::Bon { n: 4 }, 7).unwrap();
        assert_eq!((b.chunk_end(), b.seed(), b.trace()), (None, 7, true));
        let c = adaptive
            .with_method(Method::Cbs { w: 1, k: 2, l: 4 }, 1)
            .unwrap();
        assert_eq!(c.chunk_end(), Some(end));
        assert!(adaptive
            .with_method(Method::Cbs { w: 1, k: 2, l: 2 }, 1)
            .is_err());
    }
}
