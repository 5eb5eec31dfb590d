//! Guide diagnostics: does a tuned / untuned pair track a gold reward? Responses already
//! made (a run directory's) are rescored with each candidate pair through w2s's own
//! scorers, local or remote, and compared with the gold: the correlation over all
//! responses, the accuracy on pairs of responses to the same prompt, and the gold by
//! guide-value bin (the over-optimisation curve: a gold that falls in the top bins means
//! a search that pushes the guide harder will do worse).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use std::path::PathBuf;

use w2s_core::Role;
use w2s_engine::{Engine, EngineSpec, GuideSpec, GuideTable, RoleSpec};

use crate::error::{usage, EvalError};
use crate::store::read_records;
use crate::summary::pearson;

/// One response with its gold value.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The prompt's id (pairs are formed within a prompt).
    pub prompt_id: String,
    /// The prompt.
    pub prompt: String,
    /// The response.
    pub response: String,
    /// The gold reward's value.
    pub gold: f64,
}

/// The responses of a run directory (`results.jsonl`), each once, with the gold named
/// `gold` (default: the run's primary gold); the gold's name comes back too.
pub fn run_responses(dir: &Path, gold: Option<&str>) -> Result<(String, Vec<Response>), EvalError> {
    let path = dir.join(crate::RESULTS_FILE);
    if !path.exists() {
        return Err(usage(format!(
            "{} has no {}: give a directory written by `w2s eval`",
            dir.display(),
            crate::RESULTS_FILE
        )));
    }
    let records = read_records(&path)?;
    if records.is_empty() {
        return Err(usage(format!("{} holds no responses", path.display())));
    }
    let name = match gold {
        Some(g) => g.to_string(),
        None => match records[0].gold.first() {
            Some(g) => g.name.clone(),
            None => return Err(usage(format!("{} has no gold values", path.display()))),
        },
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for r in records {
        let Some(g) = r.gold.iter().find(|g| g.name == name) else {
            let have: Vec<&str> = r.gold.iter().map(|g| g.name.as_str()).collect();
            return Err(usage(format!(
                "{}: no gold named {name} (the run has {})",
                path.display(),
                have.join(", ")
            )));
        };
        if g.value.is_finite() && seen.insert((r.prompt_id.clone(), r.response.clone())) {
            out.push(Response {
                prompt_id: r.prompt_id,
                prompt: r.prompt,
                response: r.response,
                gold: g.value,
            });
        }
    }
    Ok((name, out))
}

/// The guide value `tuned - untuned` of each response under the pair `guide` (its weight
/// not applied), the end term included as the search includes it for a finished
/// response; `progress(done, total)` after each prompt.
pub fn score_with(
    guide: &GuideSpec,
    threads: usize,
    responses: &[Response],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>, EvalError> {
    let mut spec = EngineSpec::new(
        // The strong role is not used; the tuned model stands in (loaded once).
        guide.tuned.clone(),
        guide.tuned.clone(),
        guide.untuned.clone(),
    );
    spec.threads = threads;
    let mut engine = Engine::build(&spec)?;
    let mut by_prompt: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, r) in responses.iter().enumerate() {
        by_prompt
            .entry((r.prompt_id.as_str(), r.prompt.as_str()))
            .or_default()
            .push(i);
    }
    let mut values = vec![f64::NAN; responses.len()];
    let total = by_prompt.len();
    for (done, ((_, prompt), idx)) in by_prompt.into_iter().enumerate() {
        let texts: Vec<&str> = idx
            .iter()
            .map(|&i| responses[i].response.as_str())
            .collect();
        let ended = vec![true; texts.len()];
        let got = engine.pair_logprobs(prompt, &texts, &ended)?;
        for (&i, (t, u)) in idx.iter().zip(got) {
            values[i] = t - u;
        }
        progress(done + 1, total);
    }
    Ok(values)
}

/// The candidate pairs: each `--pair` table, then each config file's pair (named by
/// the file's stem).
pub fn candidates(pairs: &[GuideTable], configs: &[PathBuf]) -> Result<Vec<GuideSpec>, EvalError> {
    let mut out = Vec::new();
    for (i, t) in pairs.iter().enumerate() {
        out.push(t.check(i + 1)?);
    }
    for path in configs {
        let settings = w2s_engine::read_config(path)?;
        let tables = settings.models.clone().unwrap_or_default();
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let role = |r: Role, model: &Option<String>, template: &Option<String>| {
            RoleSpec::parse(r, model.as_deref(), tables.get(r), template.as_deref())
                .map_err(|e| usage(format!("{}: {e}", path.display())))
        };
        out.push(GuideSpec {
            name,
            weight: 1.0,
            tuned: role(Role::Tuned, &settings.tuned, &settings.tuned_template)?,
            untuned: role(Role::Untuned, &settings.untuned, &settings.untuned_template)?,
        });
    }
    if out.is_empty() {
        return Err(usage(
            "no candidate guide: give --pair '{tuned = ..., untuned = ...}' or --config FILE",
        ));
    }
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = out.iter().find(|c| !names.insert(c.name.clone())) {
        return Err(usage(format!(
            "two candidates are named {}; name them apart (name = \"...\")",
            dup.name
        )));
    }
    Ok(out)
}

/// What [`check_run`] found.
#[derive(Debug, Clone)]
pub struct RunCheck {
    /// The gold's name.
    pub gold: String,
    /// The responses, each once.
    pub responses: Vec<Response>,
    /// Per candidate, each response's guide value (NaN where none).
    pub values: Vec<Vec<f64>>,
    /// Per candidate, the agreement.
    pub checks: Vec<GuideCheck>,
}

/// Rescores the responses of the run `dir` with every candidate and checks each against
/// the gold (`gold`, default the run's primary); `progress(candidate, done, total)`.
pub fn check_run(
    dir: &Path,
    gold: Option<&str>,
    candidates: &[GuideSpec],
    threads: usize,
    bins: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<RunCheck, EvalError> {
    if threads == 0 {
        return Err(usage("threads must be at least 1"));
    }
    if bins == 0 {
        return Err(usage("bins must be at least 1"));
    }
    let (name, responses) = run_responses(dir, gold)?;
    let mut values = Vec::with_capacity(candidates.len());
    let mut checks = Vec::with_capacity(candidates.len());
    for c in candidates {
        let v = score_with(c, threads, &responses, &mut |d, t| progress(&c.name, d, t))?;
        checks.push(check(&c.name, &v, &responses, bins));
        values.push(v);
    }
    Ok(RunCheck {
        gold: name,
        responses,
        values,
        checks,
    })
}

/// How well one candidate's values track the gold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuideCheck {
    /// The candidate.
    pub name: String,
    /// Responses with a value.
    pub responses: usize,
    /// Pearson r of guide value and gold over all responses.
    pub pearson: f64,
    /// Spearman rank correlation over all responses.
    pub spearman: f64,
    /// Mean over prompts of the within-prompt Pearson r (prompts with 3+ responses).
    pub within_prompt_r: f64,
    /// Pairs of responses to the same prompt with different golds.
    pub pairs: usize,
    /// Share of those pairs the guide orders as the gold does (ties count half).
    pub pair_accuracy: f64,
    /// The gold by guide-value bin, lowest guide values first.
    pub bins: Vec<Bin>,
}

/// One bin of the over-optimisation curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// Smallest and largest guide value in the bin.
    pub guide_low: f64,
    /// Largest guide value in the bin.
    pub guide_high: f64,
    /// Responses in the bin.
    pub n: usize,
    /// Mean gold of the bin.
    pub mean_gold: f64,
}

/// Compares `values` (one per response, NaN for none) with the responses' gold.
pub fn check(name: &str, values: &[f64], responses: &[Response], bins: usize) -> GuideCheck {
    let kept: Vec<(usize, f64)> = values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .collect();
    let g: Vec<f64> = kept.iter().map(|&(i, _)| responses[i].gold).collect();
    let v: Vec<f64> = kept.iter().map(|&(_, v)| v).collect();
    // Pairs within a prompt.
    let mut groups: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for &(i, value) in &kept {
        groups
            .entry(responses[i].prompt_id.as_str())
            .or_default()
            .push((value, responses[i].gold));
    }
    let (mut pairs, mut right) = (0usize, 0.0);
    let mut within = Vec::new();
    for group in groups.values() {
        for (a, x) in group.iter().enumerate() {
            for y in &group[a + 1..] {
                let dg = x.1 - y.1;
                if dg.abs() <= 1e-12 {
                    continue;
                }
                pairs += 1;
                let dv = x.0 - y.0;
                right += if dv == 0.0 {
                    0.5
                } else if (dv > 0.0) == (dg > 0.0) {
                    1.0
                } else {
                    0.0
                };
            }
        }
        if group.len() >= 3 {
            let (gv, gg): (Vec<f64>, Vec<f64>) = group.iter().copied().unzip();
            let r = pearson(&gv, &gg);
            if r.is_finite() {
                within.push(r);
            }
        }
    }
    // Equal-count bins by guide value.
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let n_bins = bins.clamp(1, v.len().max(1));
    let bins = (0..n_bins)
        .filter_map(|b| {
            let (lo, hi) = (b * v.len() / n_bins, (b + 1) * v.len() / n_bins);
            let idx = &order[lo..hi];
            (!idx.is_empty()).then(|| Bin {
                guide_low: v[idx[0]],
                guide_high: v[idx[idx.len() - 1]],
                n: idx.len(),
                mean_gold: idx.iter().map(|&i| g[i]).sum::<f64>() / idx.len() as f64,
            })
        })
        .collect();
    GuideCheck {
        name: name.to_string(),
        responses: v.len(),
        pearson: pearson(&v, &g),
        spearman: pearson(&ranks(&v), &ranks(&g)),
        within_prompt_r: if within.is_empty() {
            f64::NAN
        } else {
            within.iter().sum::<f64>() / within.len() as f64
        },
        pairs,
        pair_accuracy: if pairs == 0 {
            f64::NAN
        } else {
            right / pairs as f64
        },
        bins,
    }
}

/// Ranks from 1, ties sharing their average rank.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// The checks as Markdown: one table of agreement, one of the gold by guide bin.
pub fn to_markdown(gold: &str, source: &str, checks: &[GuideCheck]) -> String {
    let f = |x: f64| {
        if x.is_finite() {
            format!("{x:.2}")
        } else {
            "–".into()
        }
    };
    let mut s = format!("Guide check against **{gold}** on the responses of {source}\n\n");
    s += "| candidate | responses | Pearson r | Spearman r | within-prompt r | pair accuracy (pairs) |\n";
    s += "|---|---:|---:|---:|---:|---:|\n";
    for c in checks {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} ({}) |\n",
            c.name,
            c.responses,
            f(c.pearson),
            f(c.spearman),
            f(c.within_prompt_r),
            f(c.pair_accuracy),
            c.pairs
        );
    }
    s +=
        &format!("\nMean {gold} by guide-value bin (equal counts, lowest guide values first):\n\n");
    let n = checks.iter().map(|c| c.bins.len()).max().unwrap_or(0);
    s += "| candidate |";
    for b in 1..=n {
        s += &format!(" bin {b} |");
    }
    s += "\n|---|";
    s += &"---:|".repeat(n);
    s += "\n";
    for c in checks {
        s += &format!("| {} |", c.name);
        for b in &c.bins {
            s += &format!(
                " {:.3} (guide {:.1}..{:.1}) |",
                b.mean_gold, b.guide_low, b.guide_high
            );
        }
        s += "\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(p: &str, gold: f64) -> Response {
        Response {
            prompt_id: p.into(),
            prompt: p.into(),
            response: format!("{gold}"),
            gold,
        }
    }

    #[test]
    fn agreement_pairs_and_bins() {
        let rs = vec![
            resp("a", 0.1),
            resp("a", 0.5),
            resp("a", 0.9),
            resp("b", 0.2),
            resp("b", 0.4),
        ];
        // Perfect order within a, wrong within b.
        let v = [1.0, 2.0, 3.0, 5.0, 4.0];
        let c = check("x", &v, &rs, 2);
        assert_eq!(c.responses, 5);
        assert_eq!(c.pairs, 4);
        assert!((c.pair_accuracy - 0.75).abs() < 1e-12);
        assert!(
            (c.within_prompt_r - 1.0).abs() < 1e-12,
            "only prompt a has 3"
        );
        assert_eq!(c.bins.len(), 2);
        assert_eq!(c.bins[0].n + c.bins[1].n, 5);
        assert_eq!(c.bins[0].guide_low, 1.0);
        assert_eq!(c.bins[1].guide_high, 5.0);
        // A tie in the guide counts half; NaN values are left out.
        let c = check("y", &[1.0, 1.0, f64::NAN, 0.0, 0.0], &rs, 5);
        assert_eq!(c.responses, 4);
        assert_eq!(c.pairs, 2);
        assert!((c.pair_accuracy - 0.5).abs() < 1e-12);
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
        let md = to_markdown("vader", "runs/x", &[c]);
        assert!(md.contains("| y | 4 |"), "{md}");
    }
}
