//! A summary written out: `summary.json`, `report.md`, and the instruct task's
//! AlpacaEval-format outputs.

use crate::store::Record;
use crate::summary::{Paired, Summary, BOOTSTRAP_SEED, RESAMPLES};
use crate::winrate::WinRates;

/// `summary.json`: per method `mean_gold`, `ci_low`, `ci_high`, `mean_guide`,
/// `strong_tokens_per_prompt`, `wall_s_per_prompt`, `n` (and every gold's interval).
pub fn to_json(s: &Summary) -> serde_json::Value {
    let mut methods = serde_json::Map::new();
    for m in &s.methods {
        let golds: serde_json::Map<String, serde_json::Value> = m
            .golds
            .iter()
            .map(|(name, i)| (name.clone(), serde_json::json!(i)))
            .collect();
        methods.insert(
            m.method.clone(),
            serde_json::json!({
                "mean_gold": m.mean_gold,
                "ci_low": m.ci_low,
                "ci_high": m.ci_high,
                "mean_guide": m.mean_guide,
                "strong_tokens_per_prompt": m.strong_tokens_per_prompt,
                "wall_s_per_prompt": m.wall_s_per_prompt,
                "http_requests_per_prompt": m.http_requests_per_prompt,
                "n": m.n,
                "golds": golds,
                "guide_gold_corr": finite(m.guide_gold_corr),
                "per_seed": m.per_seed.iter().map(|(seed, mean, n)| serde_json::json!({
                    "seed": seed, "mean_gold": finite(*mean), "n": n,
                })).collect::<Vec<_>>(),
                "paired": m.paired.as_ref().map(paired_json),
                "paired_bon": m.paired_bon.as_ref().map(paired_json),
                "hit_limit": m.hit_limit,
                "mean_response_chars": finite(m.mean_response_chars),
                "mean_response_tokens": finite(m.mean_response_tokens),
                "gold_s_per_prompt": finite(m.gold_s_per_prompt),
                "win_rates": m.win_rates.as_ref().map(win_json),
            }),
        );
    }
    serde_json::json!({
        "task": s.task,
        "gold": s.gold,
        "prompts": s.prompts,
        "seeds": s.seeds,
        "method_order": s.methods.iter().map(|m| m.method.clone()).collect::<Vec<_>>(),
        "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95},
        "methods": methods,
    })
}

fn win_json(w: &WinRates) -> serde_json::Value {
    let interval = |i: &crate::summary::Interval| serde_json::json!({"mean": finite(i.mean), "ci_low": finite(i.ci_low), "ci_high": finite(i.ci_high)});
    serde_json::json!({
        "reference": w.reference,
        "n": w.n,
        "raw": interval(&w.raw),
        "length_controlled": interval(&w.length_controlled),
        "length_slope": finite(w.length_slope),
        "judged": w.judged,
        "orders_disagree": w.orders_disagree,
        "answer_mass": finite(w.answer_mass),
        "mean_chars": finite(w.mean_chars),
        "reference_mean_chars": finite(w.reference_mean_chars),
        "guide_judge_corr": finite(w.guide_judge_corr),
    })
}

fn paired_json(p: &Paired) -> serde_json::Value {
    serde_json::json!({
        "against": p.against,
        "pairs": p.pairs,
        "mean_diff": finite(p.diff.mean),
        "ci_low": finite(p.diff.ci_low),
        "ci_high": finite(p.diff.ci_high),
        "wins": p.wins,
        "losses": p.losses,
    })
}

/// A number for JSON: NaN and infinities become null.
fn finite(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

/// `report.md`: a table per method and the plots.
pub fn to_markdown(s: &Summary, plots: &[(&str, &str)]) -> String {
    let seeds: Vec<String> = s.seeds.iter().map(u64::to_string).collect();
    let mut md = format!(
        "# Evaluation report\n\nTask `{}`; {} prompts; seeds {}; primary gold reward `{}`. \
         Intervals: 95% percentile bootstrap over prompts, a prompt's responses under every seed drawn together ({RESAMPLES} resamples, seed {BOOTSTRAP_SEED}).\n\n",
        s.task,
        s.prompts,
        seeds.join(", "),
        s.gold
    );
    md.push_str("| method | n | mean gold [95% CI] |");
    let extra: Vec<&String> = s
        .methods
        .first()
        .map(|m| m.golds.iter().skip(1).map(|g| &g.0).collect())
        .unwrap_or_default();
    for name in &extra {
        md.push_str(&format!(" {name} [95% CI] |"));
    }
    let remote = s.methods.iter().any(|m| m.http_requests_per_prompt > 0.0);
    md.push_str(" mean guide | guide-gold r | strong tokens / prompt | wall s / prompt |");
    if remote {
        md.push_str(" HTTP requests / prompt |");
    }
    md.push_str("\n|---|---:|---:|");
    md.push_str(&"---:|".repeat(extra.len() + usize::from(remote)));
    md.push_str("---:|---:|---:|---:|\n");
    for m in &s.methods {
        md.push_str(&format!(
            "| `{}` | {} | {:.3} [{:.3}, {:.3}] |",
            m.method, m.n, m.mean_gold, m.ci_low, m.ci_high
        ));
        for (_, i) in m.golds.iter().skip(1) {
            md.push_str(&format!(
                " {:.3} [{:.3}, {:.3}] |",
                i.mean, i.ci_low, i.ci_high
            ));
        }
        md.push_str(&format!(
            " {:.2} | {:.2} | {:.0} | {:.2} |",
            m.mean_guide, m.guide_gold_corr, m.strong_tokens_per_prompt, m.wall_s_per_prompt
        ));
        if remote {
            md.push_str(&format!(" {:.1} |", m.http_requests_per_prompt));
        }
        md.push('\n');
    }
    win_table(&mut md, s);
    let paired: Vec<(&String, &Paired)> = s
        .methods
        .iter()
        .filter_map(|m| Some((&m.method, m.paired.as_ref()?)))
        .collect();
    if let Some((_, first)) = paired.first() {
        md.push_str(&format!(
            "\nPaired against `{}` on the same (seed, prompt): primary gold difference with a 95% \
             bootstrap interval over prompts; wins and losses count the pairs above and below.\n\n",
            first.against
        ));
        paired_table(&mut md, &paired, false);
    }
    let paired_bon: Vec<(&String, &Paired)> = s
        .methods
        .iter()
        .filter_map(|m| Some((&m.method, m.paired_bon.as_ref()?)))
        .collect();
    if !paired_bon.is_empty() {
        md.push_str(
            "\nCBS against Best-of-N at the same strong-model tokens (`cbs:WxKxL` against \
             `bon:W*K`), paired the same way.\n\n",
        );
        paired_table(&mut md, &paired_bon, true);
    }
    if s.seeds.len() > 1 {
        md.push_str(
            "\nMean primary gold per seed (responses in parentheses), to show how much the \
             ordering moves from seed to seed.\n\n| method |",
        );
        for seed in &s.seeds {
            md.push_str(&format!(" seed {seed} |"));
        }
        md.push_str(&format!("\n|---|{}\n", "---:|".repeat(s.seeds.len())));
        for m in &s.methods {
            md.push_str(&format!("| `{}` |", m.method));
            for (_, mean, n) in &m.per_seed {
                if *n == 0 {
                    md.push_str(" |");
                } else {
                    md.push_str(&format!(" {mean:.3} ({n}) |"));
                }
            }
            md.push('\n');
        }
    }
    for (file, title) in plots {
        md.push_str(&format!("\n![{title}]({file})\n"));
    }
    md
}

/// The pairwise judge's table: win rates against the reference, raw and length-controlled.
fn win_table(md: &mut String, s: &Summary) {
    let rows: Vec<_> = s
        .methods
        .iter()
        .filter_map(|m| Some((m, m.win_rates.as_ref()?)))
        .collect();
    let Some((_, first)) = rows.first() else {
        return;
    };
    md.push_str(&format!(
        "\nWin rates against `{}`, judged pairwise: the judge's probability that the response beats the \
         reference's response to the same (seed, prompt), the two orders of showing them averaged. \
         Length-controlled: the verdicts regressed on the length difference, `logit P = a + b tanh(Δchars / sd)`, \
         read at zero difference. Intervals: 95% bootstrap over prompts, refitted on every draw. \
         Orders disagree: judged pairs whose two orders prefer different responses. Guide-judge r: correlation of \
         the guide's margin over the reference with the verdict, over judged pairs. Hit limit: responses cut at \
         the token limit.\n\n",
        first.reference
    ));
    md.push_str(
        "| method | n | win rate [95% CI] | length-controlled [95% CI] | length slope | orders disagree | answer mass | guide-judge r | mean chars | mean tokens | hit limit | judge s / prompt |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (m, w) in rows {
        let pct = |x: f64| 100.0 * x;
        let disagree = if w.judged == 0 {
            "-".to_string()
        } else {
            format!(
                "{}/{} ({:.0}%)",
                w.orders_disagree,
                w.judged,
                pct(w.orders_disagree as f64 / w.judged as f64)
            )
        };
        let corr = if w.guide_judge_corr.is_finite() {
            format!("{:.2}", w.guide_judge_corr)
        } else {
            "-".into()
        };
        let mass = if w.answer_mass.is_finite() {
            format!("{:.2}", w.answer_mass)
        } else {
            "-".into()
        };
        md.push_str(&format!(
            "| `{}` | {} | {:.1}% [{:.1}, {:.1}] | {:.1}% [{:.1}, {:.1}] | {:+.2} | {disagree} | {mass} | {corr} | {:.0} | {:.0} | {}/{} | {:.2} |\n",
            m.method,
            w.n,
            pct(w.raw.mean),
            pct(w.raw.ci_low),
            pct(w.raw.ci_high),
            pct(w.length_controlled.mean),
            pct(w.length_controlled.ci_low),
            pct(w.length_controlled.ci_high),
            if w.length_slope.is_finite() { w.length_slope } else { 0.0 },
            m.mean_response_chars,
            m.mean_response_tokens,
            m.hit_limit,
            m.n,
            m.gold_s_per_prompt,
        ));
    }
}

/// A table of paired differences; `name_both` names each row `method - against`.
fn paired_table(md: &mut String, rows: &[(&String, &Paired)], name_both: bool) {
    md.push_str(
        "| method | pairs | mean difference [95% CI] | wins | losses |\n|---|---:|---:|---:|---:|\n",
    );
    for (method, p) in rows {
        let name = if name_both {
            format!("`{method}` - `{}`", p.against)
        } else {
            format!("`{method}`")
        };
        md.push_str(&format!(
            "| {name} | {} | {:+.3} [{:+.3}, {:+.3}] | {} | {} |\n",
            p.pairs, p.diff.mean, p.diff.ci_low, p.diff.ci_high, p.wins, p.losses
        ));
    }
}

/// `model_outputs.json` in AlpacaEval's format, one entry per record; `generator` names
/// the method and seed (`w2s/cbs:4x4x5/seed1`), `dataset` the prompt set.
pub fn alpaca_outputs<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    dataset: &str,
) -> serde_json::Value {
    serde_json::Value::Array(
        records
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "instruction": r.prompt,
                    "output": r.response,
                    "generator": format!("w2s/{}/seed{}", r.method, r.seed),
                    "dataset": dataset,
                })
            })
            .collect(),
    )
}
