//! Chunk-level beam search (Algorithm 1 of the method), with Best-of-N and plain
//! sampling as configurations of it.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{ExtendRequest, Finish, ProposalSetup, Proposer, ScoreRequest, Scorer};
use crate::config::SearchConfig;
use crate::error::{Role, SearchError};
use crate::guide::{backend, timed, Guide, LogRatio};
use crate::rng::RowRng;
use crate::trace::{known, Trace, TraceRow, TraceStep};

/// One finished candidate, with its guide value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Beam {
    /// The response text (prompt excluded).
    pub text: String,
    /// Guide value: beta * (tuned_logprob - untuned_logprob), or another [`Guide`]'s value.
    pub score: f64,
    /// log pi_tuned(response | prompt), EOS included when the row ended (NaN when the
    /// guide is not the tuned / untuned pair).
    pub tuned_logprob: f64,
    /// log pi_untuned(response | prompt), EOS included when the row ended (NaN when the
    /// guide is not the tuned / untuned pair).
    pub untuned_logprob: f64,
    /// Why it ended.
    pub finish: Finish,
    /// Strong-model tokens in this response.
    pub strong_tokens: usize,
}

/// Counters and timings of one search.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SearchStats {
    /// Strong-model tokens sampled over all rows (the search's main cost).
    pub strong_tokens_sampled: usize,
    /// Chunks (sampling steps) run.
    pub chunks: usize,
    /// Tokens the tuned model evaluated.
    pub tuned_tokens_evaluated: u64,
    /// Tokens the untuned model evaluated.
    pub untuned_tokens_evaluated: u64,
    /// Time in the strong model (prompt encoding included).
    #[serde(serialize_with = "secs")]
    pub strong_time: Duration,
    /// Time in the tuned model.
    #[serde(serialize_with = "secs")]
    pub tuned_time: Duration,
    /// Time in the untuned model.
    #[serde(serialize_with = "secs")]
    pub untuned_time: Duration,
    /// Time in a guide other than the tuned / untuned pair (see [`Guide`]).
    #[serde(serialize_with = "secs", skip_serializing_if = "Duration::is_zero")]
    pub guide_time: Duration,
    /// Wall time of the whole search.
    #[serde(serialize_with = "secs")]
    pub total_time: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The result: every finished row of the final pool, best first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchOutput {
    /// Finished candidates, best guide value first (never empty).
    pub beams: Vec<Beam>,
    /// Counters and timings.
    pub stats: SearchStats,
    /// Every selection step, when asked for ([`SearchConfig::with_trace`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
}

impl SearchOutput {
    /// The best response.
    pub fn best(&self) -> &Beam {
        &self.beams[0]
    }
}

/// What the search reports after each selection.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Chunks done so far.
    pub chunk: usize,
    /// The text every kept beam starts with: it can no longer change.
    pub settled_text: &'a str,
    /// Rows still being extended.
    pub live_rows: usize,
}

/// The three models of a weak-to-strong search.
pub struct Models<'m> {
    /// Samples continuations (the large model).
    pub strong: &'m mut dyn Proposer,
    /// The small tuned model.
    pub tuned: &'m mut dyn Scorer,
    /// The small untuned model.
    pub untuned: &'m mut dyn Scorer,
}

#[derive(Debug, Clone)]
struct Row {
    text: String,
    strong_tokens: usize,
    finish: Option<Finish>,
    tuned: f64,
    untuned: f64,
    score: f64,
    rng: RowRng,
    dirty: bool,
    /// What the trace needs: the row it was copied from, where this step's chunk starts
    /// in `text`, its tokens and strong log-probability, the guide's terms.
    parent: Option<usize>,
    chunk_start: usize,
    chunk_tokens: usize,
    chunk_logprob: Option<f64>,
    terms: Vec<f64>,
}

impl Row {
    fn new(rng: RowRng) -> Self {
        Row {
            text: String::new(),
            strong_tokens: 0,
            finish: None,
            tuned: 0.0,
            untuned: 0.0,
            score: 0.0,
            rng,
            dirty: true,
            parent: None,
            chunk_start: 0,
            chunk_tokens: 0,
            chunk_logprob: Some(0.0),
            terms: Vec::new(),
        }
    }

    /// A copy that continues this row from row `parent` of the last step.
    fn child(&self, parent: usize) -> Self {
        let mut c = self.clone();
        c.parent = Some(parent);
        c.chunk_start = c.text.len();
        c.chunk_tokens = 0;
        c.chunk_logprob = c.finish.is_none().then_some(0.0);
        c
    }

    fn trace_row(&self, kept: bool) -> TraceRow {
        TraceRow {
            parent: self.parent,
            chunk: self.text[self.chunk_start..].to_string(),
            tokens: self.chunk_tokens,
            strong_logprob: self.chunk_logprob.filter(|_| self.chunk_tokens > 0),
            tuned: known(self.tuned),
            untuned: known(self.untuned),
            value: known(self.score),
            terms: self.terms.clone(),
            finish: self.finish,
            kept,
        }
    }
}

/// Runs the search for `prompt`.
pub fn search(
    config: &SearchConfig,
    prompt: &str,
    models: Models<'_>,
) -> Result<SearchOutput, SearchError> {
    search_with_progress(config, prompt, models, &mut |_| true)
}

/// Runs the search; `progress` is called after each selection and may return `false` to
/// cancel (the search then returns [`SearchError::Cancelled`]).
pub fn search_with_progress(
    config: &SearchConfig,
    prompt: &str,
    models: Models<'_>,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<SearchOutput, SearchError> {
    let Models {
        strong,
        tuned,
        untuned,
    } = models;
    let mut guide = LogRatio::new(tuned, untuned, config.beta());
    search_guided(config, prompt, strong, &mut guide, progress)
}

/// Runs the search with any [`Guide`] in place of the tuned / untuned pair (the pair is
/// [`LogRatio`]; the config's `beta` is then not used).
pub fn search_guided(
    config: &SearchConfig,
    prompt: &str,
    strong: &mut dyn Proposer,
    guide: &mut dyn Guide,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<SearchOutput, SearchError> {
    if prompt.trim().is_empty() {
        return Err(crate::error::ConfigError::EmptyPrompt.into());
    }
    let started = Instant::now();
    let method = config.method();
    let (width, successors) = (method.width(), method.successors());
    let n_rows = method.rows();
    let max_new = config.max_new_tokens();
    let mut stats = SearchStats::default();

    let t = Instant::now();
    strong
        .begin(&ProposalSetup {
            prompt,
            rows: n_rows,
            max_new_tokens: max_new,
            sampling: config.sampling(),
            stop: config.stop(),
            chunk_end: config.chunk_end(),
            logprobs: config.trace(),
        })
        .map_err(backend(Role::Strong))?;
    stats.strong_time += t.elapsed();
    guide.begin(prompt, n_rows, max_new, &mut stats)?;

    let mut rows: Vec<Row> = (0..n_rows as u64)
        .map(|i| Row::new(RowRng::new(config.seed(), i)))
        .collect();
    let mut trace = config.trace().then(|| Trace {
        terms: guide.terms(),
        steps: Vec::new(),
    });

    loop {
        // 1. Sample the next chunk of every live row in one call.
        let chunk_len = method.chunk_len().unwrap_or(max_new);
        let mut requests: Vec<ExtendRequest<'_>> = rows
            .iter_mut()
            .enumerate()
            .filter(|(_, r)| r.finish.is_none())
            .map(|(i, r)| ExtendRequest {
                row: i,
                max_tokens: chunk_len.min(max_new - r.strong_tokens),
                rng: &mut r.rng,
            })
            .collect();
        if !requests.is_empty() {
            let live: Vec<usize> = requests.iter().map(|r| r.row).collect();
            let chunks = timed(&mut stats.strong_time, || strong.extend(&mut requests))
                .map_err(backend(Role::Strong))?;
            drop(requests);
            if chunks.len() != live.len() {
                return Err(contract(
                    Role::Strong,
                    format!("{} chunks for {} rows", chunks.len(), live.len()),
                ));
            }
            stats.chunks += 1;
            for (chunk, i) in chunks.into_iter().zip(live) {
                let row = &mut rows[i];
                let budget = max_new - row.strong_tokens;
                if chunk.tokens > budget || (chunk.tokens == 0 && chunk.finish.is_none()) {
                    return Err(contract(
                        Role::Strong,
                        format!("row {i} got {} tokens, allowed 1..={budget}", chunk.tokens),
                    ));
                }
                stats.strong_tokens_sampled += chunk.tokens;
                row.strong_tokens += chunk.tokens;
                row.chunk_tokens += chunk.tokens;
                row.chunk_logprob = row.chunk_logprob.zip(chunk.logprob).map(|(a, b)| a + b);
                row.text.push_str(&chunk.text);
                row.finish = chunk
                    .finish
                    .or_else(|| (row.strong_tokens >= max_new).then_some(Finish::Length));
                row.dirty = true;
            }
        }

        // 2. Score. With L = infinity (Best-of-N, sampling) only once, when all ended.
        let all_ended = rows.iter().all(|r| r.finish.is_some());
        if method.chunk_len().is_none() && !all_ended {
            continue;
        }
        score_rows(&mut rows, guide, &mut stats)?;

        // 3. Keep the top W of the pool (ended rows compete with their final score).
        let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
        let order = rank(&scores);
        let kept = &order[..width.min(order.len())];
        let settled = common_prefix(kept.iter().map(|&i| rows[i].text.as_str()));
        let live_kept = kept.iter().filter(|&&i| rows[i].finish.is_none()).count();
        if let Some(trace) = trace.as_mut() {
            trace.steps.push(TraceStep {
                chunk: stats.chunks,
                rows: (0..rows.len())
                    .map(|i| rows[i].trace_row(kept.contains(&i)))
                    .collect(),
            });
        }
        if !progress(&Progress {
            chunk: stats.chunks,
            settled_text: settled,
            live_rows: live_kept * successors,
        }) {
            return Err(SearchError::Cancelled);
        }
        if live_kept == 0 {
            let beams = order
                .iter()
                .map(|&i| &rows[i])
                .filter_map(|r| {
                    r.finish.map(|finish| Beam {
                        text: r.text.clone(),
                        score: r.score,
                        tuned_logprob: r.tuned,
                        untuned_logprob: r.untuned,
                        finish,
                        strong_tokens: r.strong_tokens,
                    })
                })
                .collect();
            guide.finish(&mut stats);
            stats.total_time = started.elapsed();
            return Ok(SearchOutput {
                beams,
                stats,
                trace,
            });
        }

        // 4. Copy each kept live row K times; an ended row stays once.
        let mut parents = Vec::with_capacity(n_rows);
        let mut next = Vec::with_capacity(n_rows);
        for &i in kept {
            let row = &rows[i];
            let copies = if row.finish.is_some() { 1 } else { successors };
            for j in 0..copies {
                let mut copy = row.child(i);
                if j > 0 {
                    copy.rng = row.rng.fork(j as u64);
                }
                parents.push(i);
                next.push(copy);
            }
        }
        timed(&mut stats.strong_time, || strong.reorder(&parents))
            .map_err(backend(Role::Strong))?;
        guide.reorder(&parents, &mut stats)?;
        rows = next;
    }
}

fn score_rows(
    rows: &mut [Row],
    guide: &mut dyn Guide,
    stats: &mut SearchStats,
) -> Result<(), SearchError> {
    let requests: Vec<ScoreRequest<'_>> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.dirty)
        .map(|(i, r)| ScoreRequest {
            row: i,
            text: &r.text,
            ended: r.finish.is_some(),
        })
        .collect();
    if requests.is_empty() {
        return Ok(());
    }
    let scores = guide.score(&requests, stats)?;
    if scores.len() != requests.len() {
        return Err(SearchError::GuideContract(format!(
            "{} values for {} rows",
            scores.len(),
            requests.len()
        )));
    }
    let idx: Vec<usize> = requests.iter().map(|r| r.row).collect();
    let terms = guide.last_terms();
    for (j, (i, g)) in idx.into_iter().zip(scores).enumerate() {
        let row = &mut rows[i];
        row.tuned = g.tuned;
        row.untuned = g.untuned;
        row.score = g.value;
        row.dirty = false;
        if let Some(t) = terms.get(j) {
            row.terms.clone_from(t);
        }
    }
    Ok(())
}

fn contract(role: Role, message: String) -> SearchError {
    SearchError::Contract { role, message }
}

/// Row indices by score, best first; ties keep the lower index first and NaN sorts last,
/// so the order is deterministic.
pub fn rank(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        sort_key(scores[b])
            .total_cmp(&sort_key(scores[a]))
            .then(a.cmp(&b))
    });
    order
}

/// NaN sorts last.
fn sort_key(score: f64) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else {
        score
    }
}

/// The longest common prefix of `texts`, cut at a char boundary.
fn common_prefix<'a>(mut texts: impl Iterator<Item = &'a str>) -> &'a str {
    let Some(first) = texts.next() else {
        return "";
    };
    let mut len = first.len();
    for t in texts {
        len = first
            .bytes()
            .zip(t.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}

#[cfg(test)]
mod tests {
    use super::{common_prefix, rank};

    #[test]
    fn rank_is_best_first_stable_and_puts_nan_last() {
        assert_eq!(rank(&[1.0, 3.0, f64::NAN, 3.0, -1.0]), vec![1, 3, 0, 4, 2]);
        assert!(rank(&[]).is_empty());
    }

    #[test]
    fn common_prefix_respects_char_boundaries() {
        assert_eq!(common_prefix(["abc", "abd"].into_iter()), "ab");
        assert_eq!(common_prefix(["é", "è"].into_iter()), "");
        assert_eq!(common_prefix(std::iter::empty()), "");
    }
}
