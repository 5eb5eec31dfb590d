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

/// Lanes of the vectorised loops below (two AVX2 registers of f32).
const LANES: usize = 16;

/// log-sum-exp of `logits` (natural log), stable for large values.
///
/// Vectorised: the maximum and the sum of `exp(v - max)` run over 16 f32 lanes with a
/// polynomial exponential (within 2 ulp of `f32::exp`), and blocks of 1024 values are
/// added in f64, so a 262k-entry vocabulary's normaliser is as exact as the f64 loop's
/// to about 1e-7 relative, several times faster.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = max_f32(logits);
    if !max.is_finite() {
        return max as f64;
    }
    let mut total = 0f64;
    for block in logits.chunks(1024) {
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                acc[i] += exp_nonpositive(c[i] - max);
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for &v in chunks.remainder() {
            sum += exp_nonpositive(v - max);
        }
        total += sum as f64;
    }
    max as f64 + total.ln()
}

/// The entropy in nats of softmax(`logits`) (temperature 1): `lse - sum p_i * l_i`.
/// Non-finite logits count as probability 0; 0 when no logit is finite.
pub fn entropy(logits: &[f32]) -> f64 {
    let lse = log_sum_exp(logits);
    if !lse.is_finite() {
        return 0.0;
    }
    let mut expected = 0f64;
    for block in logits.chunks(1024) {
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                if c[i].is_finite() {
                    let l = c[i] - lse as f32;
                    acc[i] += exp_nonpositive(l.min(0.0)) * l;
                }
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for &v in chunks.remainder() {
            if v.is_finite() {
                let l = v - lse as f32;
                sum += exp_nonpositive(l.min(0.0)) * l;
            }
        }
        expected += sum as f64;
    }
    (-expected).max(0.0)
}

/// A lower bound, in nats, on the entropy of a distribution known only by its largest
/// log-probabilities (an engine's top log-probs): every unlisted outcome is at most as
/// likely as the least likely listed one, and the least entropy the unlisted mass can
/// have under that cap is as many outcomes at the cap as fit plus one of the rest.
/// Exact when the listed mass is 1, and when the unlisted outcomes are equally likely as
/// the least listed. Non-finite or positive values count as unlisted (an engine's `-inf`,
/// rounding).
pub fn entropy_lower_bound(top_logprobs: impl IntoIterator<Item = f64>) -> f64 {
    let (mut listed, mut h, mut cap) = (0f64, 0f64, 1f64);
    for lp in top_logprobs {
        if lp.is_finite() && lp <= 0.0 {
            let p = lp.exp();
            listed += p;
            h -= p * lp;
            cap = cap.min(p);
        }
    }
    let rest = 1.0 - listed;
    if rest > 1e-12 && cap > 0.0 {
        let full = (rest / cap).floor();
        let last = rest - full * cap;
        h -= full * cap * cap.ln();
        if last > 1e-12 {
            h -= last * last.ln();
        }
    }
    h.max(0.0)
}

/// The largest value (NaN ignored; -inf for an empty slice).
fn max_f32(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            // A compare-and-select (NaN never wins), which vectorises, unlike `f32::max`.
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let tail = chunks.remainder().iter().copied();
    acc.into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `exp(x)` for `x <= 0` (NaN stays NaN), branch-free so that loops over it vectorise:
/// Cody-Waite reduction to `r` in [-ln2/2, ln2/2] and Cephes' expf polynomial. Inputs below -87.3 give about 1e-38 instead of a subnormal or 0, which no sum
/// with a maximum term of 1 can tell apart.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // Not `max`, which would turn a NaN into -87.3.
    let x = if x < -87.3 { -87.3 } else { x };
    // Round x*log2(e) to the nearest integer n by adding 1.5 * 2^23: the sum's low bits
    // then hold n, so 2^n comes from integer lane operations (no float-to-int cast).
    const SHIFT: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * z + r + 1.0;
    // 2^n for n in [-126, 0] (a NaN input leaves `e` NaN whatever the scale).
    let scale = f32::from_bits(
        t.to_bits()
            .wrapping_sub(SHIFT.to_bits())
            .wrapping_add(127)
            .wrapping_shl(23),
    );
    e * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, k: u32, p: f32) -> SamplingParams {
        SamplingParams::new(t, k, p).unwrap()
    }

    #[test]
    fn entropy_in_nats() {
        assert!((entropy(&[3.0; 4]) - 4f64.ln()).abs() < 1e-5);
        assert!(entropy(&[0.0, -100.0, -100.0]) < 1e-5);
        // A wide vocabulary: 1000 equal logits plus impossible ones.
        let mut v = vec![1.5f32; 1000];
        v.extend([f32::NEG_INFINITY; 24]);
        assert!((entropy(&v) - 1000f64.ln()).abs() < 1e-3);
        // Two tokens at probabilities 0.75 / 0.25.
        let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((entropy(&[3f32.ln(), 0.0]) - h).abs() < 1e-5);
        assert_eq!(entropy(&[]), 0.0);
        assert_eq!(entropy(&[f32::NEG_INFINITY]), 0.0);
    }

    #[test]
    fn the_top_k_bound_is_exact_for_a_whole_distribution_and_below_otherwise() {
        let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        let whole = [0.75f64.ln(), 0.25f64.ln()];
        assert!((entropy_lower_bound(whole) - h).abs() < 1e-9);
        // 1000 equal outcomes known by their top 20: the rest fit 980 outcomes at the cap.
        let lp = (1e-3f64).ln();
        let bound = entropy_lower_bound(std::iter::repeat_n(lp, 20));
        assert!((bound - 1000f64.ln()).abs() < 1e-6, "{bound}");
        // One listed outcome at 0.5: the least-entropy rest is one more at 0.5.
        assert!((entropy_lower_bound([0.5f64.ln()]) - 2f64.ln()).abs() < 1e-9);
        // 0.6 listed: the rest (0.4) fits under the cap as one outcome.
        let h = -(0.6f64 * 0.6f64.ln() + 0.4 * 0.4f64.ln());
        assert!((entropy_lower_bound([0.6f64.ln()]) - h).abs() < 1e-9);
        // The top k of a real distribution give at most its entropy, closer as k grows.
        let logits: Vec<f32> = (0..500).map(|i| ((i * 37) % 101) as f32 / 9.0).collect();
        let lse = log_sum_exp(&logits);
        let mut lps: Vec<f64> = logits.iter().map(|&l| l as f64 - lse).collect();
        lps.sort_by(|a, b| b.total_cmp(a));
        let mut last = 0.0;
        for k in [1, 5, 20, 100, 500] {
            let b = entropy_lower_bound(lps[..k].iter().copied());
            assert!(
                b <= entropy(&logits) + 1e-6 && b >= last - 1e-9,
                "k {k}: {b}"
            );
            last = b;
        }
        assert!((entropy_lower_bound(lps.iter().copied()) - entropy(&logits)).abs() < 1e-4);
        // Missing values (an engine's -inf, rounding above 0) are skipped; nothing is 0.
        assert_eq!(
            entropy_lower_bound([f64::NEG_INFINITY, 1e-9, f64::NAN]),
            0.0
        );
        assert_eq!(entropy_lower_bound([]), 0.0);
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
        assert!((log_sum_exp(&v) - direct).abs() < 1e-6);
    }

    /// The f64 loop that the vectorised one replaces.
    fn reference(logits: &[f32]) -> f64 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        if !max.is_finite() {
            return max;
        }
        max + logits
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln()
    }

    #[test]
    fn log_sum_exp_matches_the_f64_loop_on_vocabulary_sized_logits() {
        let mut rng = RowRng::new(7, 0);
        for (n, spread) in [(49_152, 8.0), (151_936, 20.0), (262_144, 40.0), (37, 3.0)] {
            let mut v: Vec<f32> = (0..n)
                .map(|_| ((rng.next_f64() - 0.5) * 2.0 * spread) as f32)
                .collect();
            v[n / 3] = f32::NEG_INFINITY; // a masked entry
            let (got, want) = (log_sum_exp(&v), reference(&v));
            assert!(
                (got - want).abs() < 1e-6 * want.abs().max(1.0),
                "n {n}: {got} vs {want}"
            );
        }
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 20]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[0.0, f32::INFINITY]), f64::INFINITY);
        assert!(log_sum_exp(&[0.0, f32::NAN, 1.0]).is_nan());
        // One dominant entry: the normaliser is that entry.
        assert!((log_sum_exp(&[100.0, -100.0, -100.0]) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn the_polynomial_exponential_is_within_two_ulp() {
        let mut x = 0f32;
        while x > -87.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, want {want} ({ulp} ulp)");
            x -= 0.013_7;
        }
    }
}
