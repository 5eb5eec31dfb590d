//! Token sampling from logits: temperature, top-k, top-p (the paper's sampler).

use crate::config::SamplingParams;
use crate::rng::RowRng;

/// Draws a token id from `logits` with temperature, then top-k, then top-p, as the paper's
/// sampler does. Temperature 0 is greedy. Non-finite logits are never chosen unless every
/// logit is non-finite, in which case token 0 is returned.
pub fn sample_token(logits: &[f32], params: &SamplingParams, rng: &mut RowRng) -> usize {
    if logits.is_empty() {
        return 0;
    }
    if params.temperature() == 0.0 {
        return argmax(logits);
    }
    let k = match params.top_k() {
        0 => logits.len(),
        k => (k as usize).min(logits.len()),
    };
    let mut cands = if k < logits.len() {
        top_k_indices(logits, k)
    } else {
        (0..logits.len() as u32)
            .filter(|&i| logits[i as usize].is_finite())
            .collect()
    };
    if cands.is_empty() {
        return 0;
    }
    cands.sort_unstable_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    let inv_t = 1.0 / params.temperature() as f64;
    let max = logits[cands[0] as usize] as f64;
    let mut probs: Vec<f64> = cands
        .iter()
        .map(|&i| ((logits[i as usize] as f64 - max) * inv_t).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    let mut keep = probs.len();
    if params.top_p() < 1.0 {
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p / total;
            if acc >= params.top_p() as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    probs.truncate(keep);
    let kept_total: f64 = probs.iter().sum();
    let mut target = rng.next_f64() * kept_total;
    for (i, p) in probs.iter().enumerate() {
        if target < *p {
            return cands[i] as usize;
        }
        target -= p;
    }
    cands[keep - 1] as usize
}

/// Index of the largest finite logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// The indices of the `k` largest finite logits, in no particular order, in one pass.
fn top_k_indices(logits: &[f32], k: usize) -> Vec<u32> {
    // A min-heap of (logit, index) stored as a binary heap on a Vec; the root is the
    // smallest kept logit, so most entries cost one comparison.
    let mut heap: Vec<(f32, u32)> = Vec::with_capacity(k);
    let less = |a: &(f32, u32), b: &(f32, u32)| a.0 < b.0 || (a.0 == b.0 && a.1 > b.1);
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        let item = (v, i as u32);
        if heap.len() < k {
            heap.push(item);
            let mut c = heap.len() - 1;
            while c > 0 {
                let p = (c - 1) / 2;
                if less(&heap[c], &heap[p]) {
                    heap.swap(c, p);
                    c = p;
                } else {
                    break;
                }
            }
        } else if less(&heap[0], &item) {
            heap[0] = item;
            let mut p = 0;
            loop {
                let l = 2 * p + 1;
                let r = l + 1;
                let mut m = p;
                if l < k && less(&heap[l], &heap[m]) {
                    m = l;
                }
                if r < k && less(&heap[r], &heap[m]) {
                    m = r;
                }
                if m == p {
                    break;
                }
                heap.swap(p, m);
                p = m;
            }
        }
    }
    heap.into_iter().map(|(_, i)| i).collect()
}

/// log-sum-exp of `logits` (natural log), stable for large values.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, k: u32, p: f32) -> SamplingParams {
        SamplingParams::new(t, k, p).unwrap()
    }

    #[test]
    fn top_k_indices_finds_the_largest() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32).collect();
        let mut got = top_k_indices(&logits, 5);
        got.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        let vals: Vec<f32> = got.iter().map(|&i| logits[i as usize]).collect();
        assert_eq!(vals, vec![999.0, 998.0, 997.0, 996.0, 995.0]);
    }

    #[test]
    fn greedy_at_zero_temperature() {
        let mut rng = RowRng::new(1, 0);
        assert_eq!(
            sample_token(&[0.1, 3.0, 2.0], &params(0.0, 50, 1.0), &mut rng),
            1
        );
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut rng = RowRng::new(1, 0);
        for _ in 0..50 {
            assert_eq!(
                sample_token(&[0.1, 3.0, 2.9], &params(1.0, 1, 1.0), &mut rng),
                1
            );
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // probabilities ~ [0.665, 0.245, 0.090]: top_p 0.6 keeps only the first.
        let logits = [2.0f32, 1.0, 0.0];
        let mut rng = RowRng::new(3, 0);
        for _ in 0..100 {
            assert_eq!(sample_token(&logits, &params(1.0, 0, 0.6), &mut rng), 0);
        }
    }

    #[test]
    fn frequencies_follow_softmax_with_temperature() {
        let logits = [1.0f32, 0.0];
        let mut rng = RowRng::new(5, 0);
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| sample_token(&logits, &params(0.5, 50, 1.0), &mut rng) == 0)
            .count();
        let expected = 1.0 / (1.0 + (-2.0f64).exp()); // 0.881
        let got = hits as f64 / n as f64;
        assert!((got - expected).abs() < 0.01, "{got} vs {expected}");
    }

    #[test]
    fn non_finite_logits_are_never_chosen() {
        let logits = [f32::NAN, f32::NEG_INFINITY, -1.0, f32::NAN];
        let mut rng = RowRng::new(9, 0);
        for _ in 0..50 {
            assert_eq!(sample_token(&logits, &params(1.0, 0, 1.0), &mut rng), 2);
            assert_eq!(sample_token(&logits, &params(1.0, 2, 1.0), &mut rng), 2);
        }
    }

    #[test]
    fn log_sum_exp_matches_direct_formula() {
        let v = [1.0f32, 2.0, 3.0];
        let direct = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((log_sum_exp(&v) - direct).abs() < 1e-9);
    }
}
