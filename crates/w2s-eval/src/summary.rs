//! Figures of a run, computed from its records alone: per method the mean gold reward
//! with a seeded 95% bootstrap interval over prompts, the mean guide value, the cost per
//! prompt, how well the guide agrees with the gold reward, the mean per seed, and paired
//! comparisons with the first method and of each CBS with the Best-of-N of its budget.

use serde::Serialize;

#[cfg(test)]
use crate::stats::bootstrap;
use crate::stats::bootstrap_by_prompt;
pub use crate::stats::{pearson, Interval, BOOTSTRAP_SEED, RESAMPLES};
use crate::store::Record;

/// One method's figures (the fields of `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodSummary {
    pub method: String,
    /// Mean of the primary gold reward.
    pub mean_gold: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub mean_guide: f64,
    pub strong_tokens_per_prompt: f64,
    pub wall_s_per_prompt: f64,
    /// HTTP requests to remote engines per prompt (0 with every model local).
    pub http_requests_per_prompt: f64,
    /// Records (prompts x seeds).
    pub n: usize,
    /// Every gold reward by name, the primary one included.
    pub golds: Vec<(String, Interval)>,
    /// Pearson correlation of guide value and primary gold over this method's responses
    /// (NaN with fewer than two responses or no spread).
    pub guide_gold_corr: f64,
    /// Against the first method, on the (seed, prompt) pairs both have; `None` for the
    /// first method itself.
    pub paired: Option<Paired>,
    /// A CBS method against Best-of-N with as many samples (`cbs:WxKxL` against
    /// `bon:W*K`: the same strong-model tokens), when the run has that Best-of-N.
    pub paired_bon: Option<Paired>,
    /// Mean primary gold per seed, in seed order: (seed, mean, responses).
    pub per_seed: Vec<(u64, f64, usize)>,
    /// Responses cut by `max_new_tokens` (finish `length`).
    pub hit_limit: usize,
    /// Mean characters and model tokens of the responses.
    pub mean_response_chars: f64,
    pub mean_response_tokens: f64,
    /// Seconds scoring gold rewards (the judges) per prompt.
    pub gold_s_per_prompt: f64,
    /// Win rates against the reference, when the pairwise judge scored the run.
    pub win_rates: Option<crate::winrate::WinRates>,
}

/// A method's primary gold minus another's, paired by (seed, prompt).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paired {
    pub against: String,
    pub pairs: usize,
    /// Mean difference with a 95% bootstrap interval over the pairs.
    pub diff: Interval,
    pub wins: usize,
    pub losses: usize,
}

fn primary_gold(r: &Record) -> Option<f64> {
    r.gold.first().map(|g| g.value)
}

fn paired(base: &str, rs: &[&Record], records: &[Record]) -> Paired {
    let base_gold: std::collections::HashMap<(u64, &str), f64> = records
        .iter()
        .filter(|o| o.method == base)
        .filter_map(|o| Some(((o.seed, o.prompt_id.as_str()), primary_gold(o)?)))
        .collect();
    let diffs: Vec<(&str, f64)> = rs
        .iter()
        .filter_map(|r| {
            let base = base_gold.get(&(r.seed, r.prompt_id.as_str()))?;
            Some((r.prompt_id.as_str(), primary_gold(r)? - base))
        })
        .collect();
    Paired {
        against: base.to_string(),
        pairs: diffs.len(),
        diff: bootstrap_by_prompt(diffs.iter().copied(), BOOTSTRAP_SEED),
        wins: diffs.iter().filter(|d| d.1 > 0.0).count(),
        losses: diffs.iter().filter(|d| d.1 < 0.0).count(),
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub task: String,
    /// Name of the primary gold reward.
    pub gold: String,
    pub prompts: usize,
    pub seeds: Vec<u64>,
    pub methods: Vec<MethodSummary>,
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// Where a method goes in the tables: `sample`, then Best-of-N by N, CBS by W*K, EFT by
/// beta, then anything else; ties keep the order of first appearance.
fn method_rank(name: &str) -> (u8, f64) {
    use crate::methods::{parse_methods, EvalMethod};
    use w2s_core::Method;
    match parse_methods(name).ok().as_deref() {
        Some([EvalMethod::Search(Method::Sample)]) => (0, 0.0),
        Some([EvalMethod::Guide]) => (0, 1.0),
        Some([EvalMethod::Search(Method::Bon { n })]) => (1, *n as f64),
        Some([EvalMethod::Search(Method::Cbs { w, k, .. })]) => (2, (w * k) as f64),
        Some([EvalMethod::Eft { beta }]) => (3, *beta),
        _ => (4, 0.0),
    }
}

/// `bon:W*K` for `cbs:WxKxL`: the Best-of-N that samples as many strong tokens.
fn same_budget_bon(name: &str) -> Option<String> {
    use crate::methods::{parse_methods, EvalMethod};
    match parse_methods(name).ok().as_deref() {
        Some([EvalMethod::Search(w2s_core::Method::Cbs { w, k, .. })]) => {
            Some(format!("bon:{}", w * k))
        }
        _ => None,
    }
}

/// Sorts method names by [`method_rank`], stably.
fn order_methods(names: &mut [&str]) {
    names.sort_by(|a, b| {
        let (ra, rb) = (method_rank(a), method_rank(b));
        ra.0.cmp(&rb.0).then(ra.1.total_cmp(&rb.1))
    });
}

/// Summarises records: methods in `method_rank` order (so the first method, the one
/// the others are paired against, is `sample` when the run has it), golds in the first
/// record's order (the first is primary).
pub fn summarize(records: &[Record]) -> Summary {
    let mut methods: Vec<&str> = Vec::new();
    let mut seeds: Vec<u64> = Vec::new();
    let mut prompts: Vec<&str> = Vec::new();
    for r in records {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
        if !seeds.contains(&r.seed) {
            seeds.push(r.seed);
        }
        if !prompts.contains(&r.prompt_id.as_str()) {
            prompts.push(&r.prompt_id);
        }
    }
    seeds.sort_unstable();
    order_methods(&mut methods);
    let gold_names: Vec<String> = records
        .first()
        .map(|r| r.gold.iter().map(|g| g.name.clone()).collect())
        .unwrap_or_default();
    let methods = methods
        .iter()
        .map(|&m| {
            let rs: Vec<&Record> = records.iter().filter(|r| r.method == m).collect();
            let golds: Vec<(String, Interval)> = gold_names
                .iter()
                .map(|name| {
                    let vals = rs.iter().filter_map(|r| {
                        let g = r.gold.iter().find(|g| &g.name == name)?;
                        Some((r.prompt_id.as_str(), g.value))
                    });
                    (name.clone(), bootstrap_by_prompt(vals, BOOTSTRAP_SEED))
                })
                .collect();
            let primary = golds.first().map_or(
                Interval {
                    mean: f64::NAN,
                    ci_low: f64::NAN,
                    ci_high: f64::NAN,
                },
                |g| g.1,
            );
            MethodSummary {
                method: m.to_string(),
                mean_gold: primary.mean,
                ci_low: primary.ci_low,
                ci_high: primary.ci_high,
                mean_guide: mean(rs.iter().map(|r| r.guide)),
                strong_tokens_per_prompt: mean(rs.iter().map(|r| r.strong_tokens as f64)),
                wall_s_per_prompt: mean(rs.iter().map(|r| r.timings.method_s)),
                http_requests_per_prompt: mean(rs.iter().map(|r| r.http_requests as f64)),
                n: rs.len(),
                golds,
                guide_gold_corr: {
                    let pts: Vec<(f64, f64)> = rs
                        .iter()
                        .filter_map(|r| Some((r.guide, primary_gold(r)?)))
                        .collect();
                    let (g, v): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
                    pearson(&g, &v)
                },
                paired: (m != methods[0]).then(|| paired(methods[0], &rs, records)),
                paired_bon: same_budget_bon(m)
                    .filter(|b| methods.contains(&b.as_str()))
                    .map(|b| paired(&b, &rs, records)),
                hit_limit: rs
                    .iter()
                    .filter(|r| r.finish == w2s_core::Finish::Length)
                    .count(),
                mean_response_chars: mean(rs.iter().map(|r| r.response.chars().count() as f64)),
                mean_response_tokens: mean(rs.iter().map(|r| r.response_tokens as f64)),
                gold_s_per_prompt: mean(rs.iter().map(|r| r.timings.gold_s)),
                win_rates: crate::winrate::win_rates(&rs, records),
                per_seed: seeds
                    .iter()
                    .map(|&seed| {
                        let vals: Vec<f64> = rs
                            .iter()
                            .filter(|r| r.seed == seed)
                            .filter_map(|r| primary_gold(r))
                            .collect();
                        (seed, mean(vals.iter().copied()), vals.len())
                    })
                    .collect(),
            }
        })
        .collect();
    Summary {
        task: records.first().map_or_else(String::new, |r| r.task.clone()),
        gold: gold_names.first().cloned().unwrap_or_default(),
        prompts: prompts.len(),
        seeds,
        methods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{alpaca_outputs, to_json, to_markdown};
    use crate::store::tests::record;

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let vals: Vec<f64> = (0..40).map(|i| (i % 7) as f64 / 7.0).collect();
        let a = bootstrap(&vals, 3);
        assert_eq!(a, bootstrap(&vals, 3));
        assert!(a.ci_low < a.mean && a.mean < a.ci_high, "{a:?}");
        // The interval of a mean of n values shrinks like 1/sqrt(n).
        let many: Vec<f64> = vals.iter().cycle().take(1600).copied().collect();
        let b = bootstrap(&many, 3);
        let (wa, wb) = (a.ci_high - a.ci_low, b.ci_high - b.ci_low);
        assert!(wb < wa / 4.0 && wb > wa / 9.0, "{wa} {wb}");
        let c = bootstrap(&[2.0, 2.0], 1);
        assert_eq!((c.mean, c.ci_low, c.ci_high), (2.0, 2.0, 2.0));
    }

    #[test]
    fn bootstrap_by_prompt_draws_a_prompt_with_all_its_seeds() {
        let vals: Vec<f64> = (0..40).map(|i| (i % 7) as f64 / 7.0).collect();
        let ids: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
        let one_seed = bootstrap_by_prompt(ids.iter().map(String::as_str).zip(vals.clone()), 5);
        // One value per prompt: the same draws as resampling values.
        assert_eq!(one_seed, bootstrap(&vals, 5));
        // Three seeds that repeat each prompt's value add no information about prompts:
        // the interval stays that of 40 prompts, where resampling 120 responses as if
        // independent would shrink it by about sqrt(3).
        let three: Vec<(&str, f64)> = (0..3)
            .flat_map(|_| ids.iter().map(String::as_str).zip(vals.clone()))
            .collect();
        let by_prompt = bootstrap_by_prompt(three.iter().copied(), 5);
        for (a, b) in [
            (by_prompt.mean, one_seed.mean),
            (by_prompt.ci_low, one_seed.ci_low),
            (by_prompt.ci_high, one_seed.ci_high),
        ] {
            assert!((a - b).abs() < 1e-12, "{by_prompt:?} {one_seed:?}");
        }
        let flat: Vec<f64> = three.iter().map(|t| t.1).collect();
        let naive = bootstrap(&flat, 5);
        let (wp, wn) = (
            by_prompt.ci_high - by_prompt.ci_low,
            naive.ci_high - naive.ci_low,
        );
        assert!(wn < wp / 1.4, "{wp} {wn}");
        // Unequal counts: the mean is over values, not over prompt means.
        let uneven = bootstrap_by_prompt([("a", 1.0), ("a", 1.0), ("a", 1.0), ("b", 0.0)], 1);
        assert_eq!(uneven.mean, 0.75);
    }

    #[test]
    fn pearson_is_signed_and_nan_without_spread() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.998).abs() < 1e-3);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(pearson(&[1.0, 1.0], &[0.0, 1.0]).is_nan());
        assert!(pearson(&[1.0], &[1.0]).is_nan());
    }

    #[test]
    fn ranks_methods_by_kind_then_budget() {
        let mut names = vec![
            "cbs:4x4x5",
            "eft:2",
            "bon:16",
            "cbs:2x2x5",
            "mystery",
            "sample",
            "bon:4",
            "cbs:2x8x5",
            "eft:0.5",
        ];
        order_methods(&mut names);
        assert_eq!(
            names,
            [
                "sample",
                "bon:4",
                "bon:16",
                "cbs:2x2x5",
                "cbs:4x4x5",
                "cbs:2x8x5",
                "eft:0.5",
                "eft:2",
                "mystery"
            ]
        );
    }

    #[test]
    fn cbs_is_paired_with_the_best_of_n_of_the_same_budget() {
        let recs = vec![
            record("sample", 1, "a", 0.0),
            record("bon:16", 1, "a", 0.5),
            record("cbs:4x4x5", 1, "a", 0.75),
            record("cbs:2x2x5", 1, "a", 0.25),
            record("sample", 1, "b", 0.0),
            record("bon:16", 1, "b", 0.5),
            record("cbs:4x4x5", 1, "b", 0.25),
            record("cbs:2x2x5", 1, "b", 0.25),
        ];
        let s = summarize(&recs);
        let names: Vec<&str> = s.methods.iter().map(|m| m.method.as_str()).collect();
        assert_eq!(names, ["sample", "bon:16", "cbs:2x2x5", "cbs:4x4x5"]);
        let p = s.methods[3].paired_bon.as_ref().unwrap();
        assert_eq!(
            (p.against.as_str(), p.pairs, p.wins, p.losses),
            ("bon:16", 2, 1, 1)
        );
        assert!(p.diff.mean.abs() < 1e-12);
        // cbs:2x2x5 would need bon:4; sample and bon have none.
        assert!(s.methods[..3].iter().all(|m| m.paired_bon.is_none()));
        let md = to_markdown(&s, &[]);
        assert!(
            md.contains("| `cbs:4x4x5` - `bon:16` | 2 | +0.000 ["),
            "{md}"
        );
        assert_eq!(
            to_json(&s)["methods"]["cbs:4x4x5"]["paired_bon"]["against"],
            "bon:16"
        );
    }

    #[test]
    fn summarizes_per_method_in_order() {
        let recs = vec![
            record("sample", 1, "a", 0.0),
            record("cbs:4x4x5", 1, "a", 1.0),
            record("sample", 1, "b", 0.5),
            record("cbs:4x4x5", 1, "b", 0.5),
            record("sample", 2, "a", 0.1),
        ];
        let s = summarize(&recs);
        assert_eq!(
            (s.prompts, s.seeds.clone(), s.gold.as_str()),
            (2, vec![1, 2], "vader")
        );
        assert_eq!(s.methods[0].method, "sample");
        assert_eq!(s.methods[0].n, 3);
        assert!((s.methods[0].mean_gold - 0.2).abs() < 1e-12);
        assert!((s.methods[1].mean_gold - 0.75).abs() < 1e-12);
        assert!((s.methods[1].mean_guide - 1.5).abs() < 1e-12);
        assert_eq!(s.methods[1].strong_tokens_per_prompt, 800.0);
        let j = to_json(&s);
        for key in [
            "mean_gold",
            "ci_low",
            "ci_high",
            "mean_guide",
            "strong_tokens_per_prompt",
            "wall_s_per_prompt",
            "n",
        ] {
            assert!(j["methods"]["cbs:4x4x5"].get(key).is_some(), "{key}");
        }
        let md = to_markdown(&s, &[("gold_by_method.svg", "gold")]);
        assert!(md.contains("| `cbs:4x4x5` | 2 | 0.750 ["), "{md}");
        assert!(md.contains("![gold](gold_by_method.svg)"));
        // Paired against the first method on the pairs both have: (a, 1), (b, 1).
        let p = s.methods[1].paired.as_ref().unwrap();
        assert_eq!(
            (p.against.as_str(), p.pairs, p.wins, p.losses),
            ("sample", 2, 1, 0)
        );
        assert!((p.diff.mean - 0.5).abs() < 1e-12);
        assert!(s.methods[0].paired.is_none());
        // No bon:16 in the run, so no same-budget comparison.
        assert!(s.methods[1].paired_bon.is_none());
        assert!(md.contains("| `cbs:4x4x5` | 2 | +0.500 ["), "{md}");
        // Two seeds: a mean per seed, an empty cell where a method has none.
        assert_eq!(s.methods[0].per_seed, vec![(1, 0.25, 2), (2, 0.1, 1)]);
        assert!(md.contains("| `sample` | 0.250 (2) | 0.100 (1) |"), "{md}");
        assert!(md.contains("| `cbs:4x4x5` | 0.750 (2) | |"), "{md}");
        assert_eq!(j["methods"]["sample"]["per_seed"][1]["mean_gold"], 0.1);
        assert_eq!(j["methods"]["cbs:4x4x5"]["paired"]["wins"], 1);
        let out = alpaca_outputs(&recs, "instruct-dev");
        assert_eq!(out[1]["generator"], "w2s/cbs:4x4x5/seed1");
        assert_eq!(out[1]["dataset"], "instruct-dev");
        assert_eq!(out[1]["instruction"], "prompt a");
    }
}
