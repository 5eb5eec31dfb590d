//! The statistics of a run's figures: percentile bootstrap intervals (seeded, resampling
//! prompts), and Pearson correlation.

use serde::Serialize;
use w2s_core::RowRng;

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 2000;
/// Seed of the bootstrap (fixed: the same records give the same report).
pub const BOOTSTRAP_SEED: u64 = 2024;

/// Mean and 95% bootstrap interval of some values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub mean: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Pearson correlation; NaN with fewer than two points or no spread in either.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        x[..n].iter().sum::<f64>() / n as f64,
        y[..n].iter().sum::<f64>() / n as f64,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Mean with a percentile bootstrap interval (95%), seeded; every value is drawn alone
/// (the reference the tests hold the by-prompt interval to).
#[cfg(test)]
pub(crate) fn bootstrap(values: &[f64], seed: u64) -> Interval {
    let clusters: Vec<(f64, usize)> = values.iter().map(|&v| (v, 1)).collect();
    bootstrap_clusters(&clusters, seed)
}

/// Mean with a percentile bootstrap interval (95%) that resamples prompts, not responses:
/// a prompt's values (one per seed) are drawn together, so three seeds of 40 prompts give
/// the interval of 40 prompts, not of 120 independent responses. With one value per
/// prompt it is the plain bootstrap over values, draw for draw.
pub fn bootstrap_by_prompt<'a>(
    values: impl IntoIterator<Item = (&'a str, f64)>,
    seed: u64,
) -> Interval {
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut clusters: Vec<(f64, usize)> = Vec::new();
    for (prompt, v) in values {
        let i = *at.entry(prompt).or_insert_with(|| {
            clusters.push((0.0, 0));
            clusters.len() - 1
        });
        clusters[i].0 += v;
        clusters[i].1 += 1;
    }
    bootstrap_clusters(&clusters, seed)
}

/// Percentile bootstrap of the mean over clusters given as (sum, count): each resample
/// draws as many clusters as there are, with replacement, and takes the mean of all
/// their values.
fn bootstrap_clusters(clusters: &[(f64, usize)], seed: u64) -> Interval {
    let k = clusters.len();
    let total: usize = clusters.iter().map(|c| c.1).sum();
    if k == 0 || total == 0 {
        return Interval {
            mean: f64::NAN,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
        };
    }
    let mean = clusters.iter().map(|c| c.0).sum::<f64>() / total as f64;
    let mut rng = RowRng::new(seed, 0);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let (sum, count) = (0..k)
                .map(|_| clusters[((rng.next_f64() * k as f64) as usize).min(k - 1)])
                .fold((0.0, 0usize), |(s, n), (cs, cn)| (s + cs, n + cn));
            sum / count as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    Interval {
        mean,
        ci_low: at(0.025),
        ci_high: at(0.975),
    }
}
