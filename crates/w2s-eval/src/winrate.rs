//! Win rates against the reference method from the pairwise judge's verdicts: the raw
//! win rate (the mean of P(better), both orders averaged), and a length-controlled one
//! in the spirit of AlpacaEval 2: judges prefer longer answers, so the verdict is
//! regressed on the length difference,
//!
//! `logit P(better) = a + b * tanh((chars - reference chars) / sd)`,
//!
//! (`sd`: the spread of this method's length differences) and the win rate is read at
//! zero difference, `1 / (1 + e^-a)`. Both come with a 95% bootstrap interval that
//! resamples prompts (a prompt's seeds together), the regression refitted on each draw.

use serde::Serialize;
use w2s_core::RowRng;

use crate::stats::{bootstrap_by_prompt, pearson, Interval, BOOTSTRAP_SEED, RESAMPLES};
use crate::store::Record;

/// A method's win rates against the reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WinRates {
    /// The reference method.
    pub reference: String,
    /// Responses with a verdict.
    pub n: usize,
    /// Mean P(better than the reference).
    pub raw: Interval,
    /// The win rate at zero length difference.
    pub length_controlled: Interval,
    /// The fitted length slope `b` (per unit of the tanh feature).
    pub length_slope: f64,
    /// Pairs the judge was asked about (not identical to the reference).
    pub judged: usize,
    /// Of those, how many the two orders decided differently.
    pub orders_disagree: usize,
    /// Mean probability of the two answer letters over the judged pairs.
    pub answer_mass: f64,
    /// Mean characters of the method's responses and of the reference's.
    pub mean_chars: f64,
    pub reference_mean_chars: f64,
    /// Pearson correlation, over the judged pairs, of the guide's margin over the
    /// reference (guide value minus the reference's) with the verdict: whether what the
    /// search maximises is what the judge rewards.
    pub guide_judge_corr: f64,
}

/// One verdict: the prompt, P(better), and the length difference in characters.
type Point<'a> = (&'a str, f64, f64);

/// The win rates of `rs` (one method's records with verdicts); `all` holds the
/// reference's records.
pub fn win_rates(rs: &[&Record], all: &[Record]) -> Option<WinRates> {
    let first = rs.iter().find_map(|r| r.pair.as_ref())?;
    let with: Vec<&Record> = rs.iter().copied().filter(|r| r.pair.is_some()).collect();
    let points: Vec<Point<'_>> = with
        .iter()
        .filter_map(|r| {
            let p = r.pair.as_ref()?;
            let chars = r.response.chars().count() as f64;
            Some((
                r.prompt_id.as_str(),
                0.5 * (p.first + p.second),
                chars - p.reference_chars as f64,
            ))
        })
        .collect();
    let judged: Vec<_> = with
        .iter()
        .filter_map(|r| r.pair.as_ref())
        .filter(|p| !p.identical)
        .collect();
    let (margins, verdicts): (Vec<f64>, Vec<f64>) = with
        .iter()
        .filter_map(|r| {
            let p = r.pair.as_ref().filter(|p| !p.identical)?;
            let reference = all.iter().find(|o| {
                o.method == p.reference && o.seed == r.seed && o.prompt_id == r.prompt_id
            })?;
            Some((r.guide - reference.guide, 0.5 * (p.first + p.second)))
        })
        .unzip();
    let sd = spread(points.iter().map(|p| p.2));
    let (raw, (lc, slope)) = (
        bootstrap_by_prompt(points.iter().map(|p| (p.0, p.1)), BOOTSTRAP_SEED),
        length_controlled(&points, sd),
    );
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        if n == 0 {
            f64::NAN
        } else {
            s / n as f64
        }
    };
    Some(WinRates {
        reference: first.reference.clone(),
        n: points.len(),
        raw,
        length_controlled: lc,
        length_slope: slope,
        judged: judged.len(),
        orders_disagree: judged
            .iter()
            .filter(|p| (p.first > 0.5) != (p.second > 0.5))
            .count(),
        answer_mass: mean(&mut judged.iter().map(|p| p.answer_mass)),
        mean_chars: mean(&mut with.iter().map(|r| r.response.chars().count() as f64)),
        reference_mean_chars: mean(
            &mut with
                .iter()
                .filter_map(|r| Some(r.pair.as_ref()?.reference_chars as f64)),
        ),
        guide_judge_corr: pearson(&margins, &verdicts),
    })
}

/// Population standard deviation (0 for fewer than two values).
fn spread(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    if v.len() < 2 {
        return 0.0;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt()
}

/// The length-controlled win rate with its bootstrap interval, and the fitted slope.
fn length_controlled(points: &[Point<'_>], sd: f64) -> (Interval, f64) {
    let feature = |d: f64| if sd > 0.0 { (d / sd).tanh() } else { 0.0 };
    let fit_of = |pts: &mut dyn Iterator<Item = (f64, f64)>| {
        let xy: Vec<(f64, f64)> = pts.collect();
        logistic_fit(&xy)
    };
    let (a, b) = fit_of(&mut points.iter().map(|p| (feature(p.2), p.1)));
    // Resample prompts: a prompt's verdicts under every seed are drawn together.
    let mut clusters: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for p in points {
        let xy = (feature(p.2), p.1);
        match clusters.iter_mut().find(|c| c.0 == p.0) {
            Some(c) => c.1.push(xy),
            None => clusters.push((p.0, vec![xy])),
        }
    }
    let k = clusters.len();
    if k == 0 {
        let nan = f64::NAN;
        return (
            Interval {
                mean: nan,
                ci_low: nan,
                ci_high: nan,
            },
            nan,
        );
    }
    let mut rng = RowRng::new(BOOTSTRAP_SEED, 1);
    let mut draws: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let mut pts = (0..k).flat_map(|_| {
                let c = &clusters[((rng.next_f64() * k as f64) as usize).min(k - 1)];
                c.1.iter().copied()
            });
            sigmoid(fit_of(&mut pts).0)
        })
        .collect();
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| draws[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    (
        Interval {
            mean: sigmoid(a),
            ci_low: at(0.025),
            ci_high: at(0.975),
        },
        b,
    )
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Logistic regression of soft labels `y` in [0, 1] on one feature `x`:
/// `logit P = a + b x`, by Newton's method on the cross-entropy with a small ridge
/// (1e-4 on both terms) so that a sample of all wins still has a finite answer.
pub fn logistic_fit(xy: &[(f64, f64)]) -> (f64, f64) {
    const RIDGE: f64 = 1e-4;
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..100 {
        // Gradient and Hessian of the penalised negative log-likelihood.
        let (mut ga, mut gb) = (RIDGE * a, RIDGE * b);
        let (mut haa, mut hab, mut hbb) = (RIDGE, 0.0, RIDGE);
        for &(x, y) in xy {
            let p = sigmoid(a + b * x);
            let w = p * (1.0 - p);
            ga += p - y;
            gb += (p - y) * x;
            haa += w;
            hab += w * x;
            hbb += w * x * x;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        // Damped: a step of at most 5 in the logit keeps Newton stable on flat data.
        let scale = (5.0 / da.abs().max(db.abs()).max(5.0)).min(1.0);
        a -= scale * da;
        b -= scale * db;
        if da.abs().max(db.abs()) < 1e-10 {
            break;
        }
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;
    use crate::store::PairScore;

    #[test]
    fn logistic_fit_recovers_known_coefficients() {
        // Soft labels on the model's own curve: the fit must give the curve back.
        let xy: Vec<(f64, f64)> = (0..41)
            .map(|i| {
                let x = -1.0 + i as f64 / 20.0;
                (x, sigmoid(0.4 + 1.5 * x))
            })
            .collect();
        let (a, b) = logistic_fit(&xy);
        assert!((a - 0.4).abs() < 1e-3 && (b - 1.5).abs() < 1e-3, "{a} {b}");
        // All ties: no preference, no slope.
        let (a, b) = logistic_fit(&[(0.0, 0.5), (0.0, 0.5)]);
        assert!(a.abs() < 1e-9 && b.abs() < 1e-9);
        // All wins stay finite.
        let (a, _) = logistic_fit(&[(0.0, 1.0), (0.3, 1.0)]);
        assert!(a.is_finite() && sigmoid(a) > 0.99);
    }

    fn verdict(
        method: &str,
        seed: u64,
        id: &str,
        p: f64,
        chars: usize,
        ref_chars: usize,
    ) -> Record {
        let mut r = record(method, seed, id, p);
        r.response = "x".repeat(chars);
        r.pair = Some(PairScore {
            reference: "sample".into(),
            judge: "j.gguf".into(),
            first: p,
            second: p,
            answer_mass: 0.9,
            identical: false,
            reference_chars: ref_chars,
        });
        r
    }

    #[test]
    fn length_control_removes_a_win_bought_with_length() {
        // Longer responses win, equal lengths tie: the raw win rate is high, the
        // length-controlled one is 1/2.
        let mut rs = Vec::new();
        for i in 0..30 {
            let extra = (i % 3) * 100; // 0, 100 or 200 characters longer
            let p = if extra == 0 {
                0.5
            } else {
                0.5 + extra as f64 / 500.0
            };
            rs.push(verdict("cbs", 1, &format!("p{i}"), p, 300 + extra, 300));
        }
        let refs: Vec<&Record> = rs.iter().collect();
        let w = win_rates(&refs, &[]).unwrap();
        assert!(w.raw.mean > 0.6, "{w:?}");
        assert!((w.length_controlled.mean - 0.5).abs() < 0.02, "{w:?}");
        assert!(w.length_slope > 0.5);
        assert!(w.length_controlled.ci_low <= w.length_controlled.mean);
        assert_eq!((w.judged, w.orders_disagree), (30, 0));
        // A real preference at equal length survives length control.
        let fair: Vec<Record> = (0..30)
            .map(|i| verdict("cbs", 1, &format!("p{i}"), 0.7, 300, 300))
            .collect();
        let refs: Vec<&Record> = fair.iter().collect();
        let w = win_rates(&refs, &[]).unwrap();
        assert!((w.length_controlled.mean - 0.7).abs() < 1e-3, "{w:?}");
        assert!((w.raw.mean - 0.7).abs() < 1e-9);
        assert!(w.raw.ci_low <= 0.7 + 1e-9 && w.raw.ci_high >= 0.7 - 1e-9);
    }

    #[test]
    fn orders_that_disagree_are_counted() {
        let mut a = verdict("cbs", 1, "p1", 0.5, 10, 10);
        if let Some(p) = a.pair.as_mut() {
            (p.first, p.second) = (0.9, 0.2);
        }
        let b = verdict("cbs", 1, "p2", 0.8, 10, 10);
        let w = win_rates(&[&a, &b], &[]).unwrap();
        assert_eq!((w.judged, w.orders_disagree), (2, 1));
        assert!((w.raw.mean - (0.55 + 0.8) / 2.0).abs() < 1e-12);
    }
}
