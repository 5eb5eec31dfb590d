//! The search as a state machine with no I/O ([`SearchState`]).

use crate::backend::{Chunk, ExtendRequest, Finish, ProposalSetup, ScoreRequest};
use crate::config::SearchConfig;
use crate::error::{ConfigError, Role, SearchError};
use crate::guide::GuideScore;
use crate::output::{Beam, Progress, SearchOutput, SearchStats};
use crate::rng::RowRng;
use crate::trace::{known, TermName, Trace, TraceRow, TraceStep};

/// What a search needs next ([`SearchState::poll`]).
#[derive(Debug)]
pub enum Action<'s> {
    /// Sample the next chunk of these rows with the strong model, then
    /// [`SearchState::feed_chunks`] with one chunk per request, in order.
    Extend(Vec<ExtendRequest<'s>>),
    /// Value these responses with the guide, then [`SearchState::feed_scores`] with one
    /// value per request, in order.
    Score(Vec<ScoreRequest<'s>>),
    /// A selection was made (the trace has a new step): report it, or stop polling to
    /// cancel the search. The next poll goes on.
    Selected(Progress<'s>),
    /// Renumber the rows in every backend (new row `i` continues old row `parents[i]`),
    /// then [`SearchState::reordered`].
    Reorder(&'s [usize]),
    /// The search has ended: [`SearchState::finish`] gives the result.
    Done,
}

/// Where the machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Extend,
    Extending,
    Score,
    Scoring,
    Selected,
    Reordering,
    Done,
}

/// The search as a state machine with no I/O: it says what it needs next ("sample these
/// rows", "value these responses", "renumber the rows", "a selection was made", "done")
/// and takes the results; a driver calls the models. [`crate::search_guided`] drives one
/// search over one set of backends; a driver may as well step many searches and serve
/// their requests together (one batch of a GPU, one decode of a loaded model).
/// Cancelling is not polling again.
///
/// ```
/// use w2s_core::*;
/// # struct Echo;
/// # impl Proposer for Echo {
/// #     fn begin(&mut self, _: &ProposalSetup<'_>) -> Result<(), BackendError> { Ok(()) }
/// #     fn extend(&mut self, r: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError> {
/// #         Ok(r.iter().map(|r| Chunk { text: "a".repeat(r.max_tokens), tokens: r.max_tokens,
/// #             finish: None, logprob: None }).collect())
/// #     }
/// #     fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> { Ok(()) }
/// # }
/// let config = SearchConfig::new(Method::Cbs { w: 2, k: 2, l: 3 }, 6, 1.0, 7,
///     SamplingParams::default(), vec![]).unwrap();
/// let mut state = SearchState::new(&config, "Once upon a time").unwrap();
/// let mut strong = Echo;
/// strong.begin(&state.proposal_setup()).unwrap();
/// loop {
///     match state.poll() {
///         Action::Extend(mut requests) => {
///             let chunks = strong.extend(&mut requests).unwrap();
///             state.feed_chunks(chunks).unwrap();
///         }
///         Action::Score(requests) => {
///             let values = requests.iter().map(|r| GuideScore::value(r.text.len() as f64)).collect();
///             state.feed_scores(values, &[]).unwrap();
///         }
///         Action::Selected(progress) => assert!(progress.chunk >= 1),
///         Action::Reorder(parents) => {
///             strong.reorder(parents).unwrap();
///             state.reordered();
///         }
///         Action::Done => break,
///     }
/// }
/// let out = state.finish(SearchStats::default());
/// assert_eq!(out.best().text, "aaaaaa");
/// ```
#[derive(Debug, Clone)]
pub struct SearchState {
    config: SearchConfig,
    prompt: String,
    rows: Vec<Row>,
    phase: Phase,
    /// Rows of the request in flight (extend or score), in request order.
    asked: Vec<usize>,
    /// The last selection: rows best first, how many kept, the settled text's length, kept
    /// rows still live.
    order: Vec<usize>,
    kept: usize,
    settled: usize,
    live_kept: usize,
    /// The rows after the selection and whom each continues.
    next: Vec<Row>,
    parents: Vec<usize>,
    chunks: usize,
    strong_tokens: usize,
    trace: Option<Trace>,
}

impl SearchState {
    /// A search for `prompt` under `config`: an error for an empty prompt.
    pub fn new(config: &SearchConfig, prompt: &str) -> Result<Self, SearchError> {
        if prompt.trim().is_empty() {
            return Err(ConfigError::EmptyPrompt.into());
        }
        let rows = (0..config.method().rows() as u64)
            .map(|i| Row::new(RowRng::new(config.seed(), i)))
            .collect();
        Ok(SearchState {
            config: config.clone(),
            prompt: prompt.to_string(),
            rows,
            phase: Phase::Extend,
            asked: Vec::new(),
            order: Vec::new(),
            kept: 0,
            settled: 0,
            live_kept: 0,
            next: Vec::new(),
            parents: Vec::new(),
            chunks: 0,
            strong_tokens: 0,
            trace: config.trace().then(Trace::default),
        })
    }

    /// Names the guide's terms in the trace (a weighted guide's [`crate::Guide::terms`]).
    pub fn set_terms(&mut self, terms: Vec<TermName>) {
        if let Some(trace) = self.trace.as_mut() {
            trace.terms = terms;
        }
    }

    /// The prompt, as the user gave it.
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// The search's settings.
    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    /// Rows in flight at most (W * K): what the backends' `begin` prepares.
    pub fn rows(&self) -> usize {
        self.config.method().rows()
    }

    /// What the strong model's [`crate::Proposer::begin`] needs.
    pub fn proposal_setup(&self) -> ProposalSetup<'_> {
        ProposalSetup {
            prompt: &self.prompt,
            rows: self.rows(),
            max_new_tokens: self.config.max_new_tokens(),
            sampling: self.config.sampling(),
            stop: self.config.stop(),
            chunk_end: self.config.chunk_end(),
            logprobs: self.config.trace(),
        }
    }

    /// What the search needs next. Polling again before feeding what was asked asks
    /// again for the same rows.
    pub fn poll(&mut self) -> Action<'_> {
        loop {
            match self.phase {
                Phase::Extend | Phase::Extending => {
                    if self.phase == Phase::Extend {
                        self.asked = live(&self.rows);
                    }
                    if self.asked.is_empty() {
                        self.phase = Phase::Score;
                        continue;
                    }
                    self.phase = Phase::Extending;
                    return Action::Extend(self.extend_requests());
                }
                Phase::Score | Phase::Scoring => {
                    if self.phase == Phase::Score {
                        self.asked = (0..self.rows.len())
                            .filter(|&i| self.rows[i].dirty)
                            .collect();
                    }
                    if self.asked.is_empty() {
                        self.select();
                        continue;
                    }
                    self.phase = Phase::Scoring;
                    let rows = &self.rows;
                    return Action::Score(
                        self.asked
                            .iter()
                            .map(|&i| ScoreRequest {
                                row: i,
                                text: &rows[i].text,
                                ended: rows[i].finish.is_some(),
                            })
                            .collect(),
                    );
                }
                Phase::Selected => {
                    self.phase = if self.live_kept == 0 {
                        Phase::Done
                    } else {
                        self.copy_kept();
                        Phase::Reordering
                    };
                    let best = self
                        .order
                        .first()
                        .map_or("", |&i| self.rows[i].text.as_str());
                    return Action::Selected(Progress {
                        chunk: self.chunks,
                        settled_text: &best[..self.settled],
                        live_rows: self.live_kept * self.config.method().successors(),
                    });
                }
                Phase::Reordering => return Action::Reorder(&self.parents),
                Phase::Done => return Action::Done,
            }
        }
    }

    fn extend_requests(&mut self) -> Vec<ExtendRequest<'_>> {
        let max_new = self.config.max_new_tokens();
        let chunk_len = self.config.method().chunk_len().unwrap_or(max_new);
        let mut asked = self.asked.iter().copied().peekable();
        self.rows
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| asked.next_if_eq(i).is_some())
            .map(|(i, r)| ExtendRequest {
                row: i,
                max_tokens: chunk_len.min(max_new - r.strong_tokens),
                rng: &mut r.rng,
            })
            .collect()
    }

    /// The strong model's chunks for the rows of the last [`Action::Extend`], in order.
    /// An error if they are not what was asked (the backend broke its contract), or if
    /// no chunks were asked for.
    pub fn feed_chunks(&mut self, chunks: Vec<Chunk>) -> Result<(), SearchError> {
        self.expect(Phase::Extending, "chunks")?;
        if chunks.len() != self.asked.len() {
            return Err(contract(
                Role::Strong,
                format!("{} chunks for {} rows", chunks.len(), self.asked.len()),
            ));
        }
        let max_new = self.config.max_new_tokens();
        self.chunks += 1;
        for (chunk, &i) in chunks.into_iter().zip(&self.asked) {
            let row = &mut self.rows[i];
            let budget = max_new - row.strong_tokens;
            if chunk.tokens > budget || (chunk.tokens == 0 && chunk.finish.is_none()) {
                return Err(contract(
                    Role::Strong,
                    format!("row {i} got {} tokens, allowed 1..={budget}", chunk.tokens),
                ));
            }
            self.strong_tokens += chunk.tokens;
            row.add(chunk, max_new);
        }
        // With L = infinity (Best-of-N, sampling) rows are scored once, when all ended.
        let all_ended = self.rows.iter().all(|r| r.finish.is_some());
        self.phase = if self.config.method().chunk_len().is_none() && !all_ended {
            Phase::Extend
        } else {
            Phase::Score
        };
        Ok(())
    }

    /// The guide's values for the responses of the last [`Action::Score`], in order, and
    /// each term's values for a weighted guide ([`crate::Guide::last_terms`]; empty
    /// otherwise). Then the top W of the pool are kept (ended rows compete with their
    /// final value).
    pub fn feed_scores(
        &mut self,
        values: Vec<GuideScore>,
        terms: &[Vec<f64>],
    ) -> Result<(), SearchError> {
        self.expect(Phase::Scoring, "values")?;
        if values.len() != self.asked.len() {
            return Err(SearchError::GuideContract(format!(
                "{} values for {} rows",
                values.len(),
                self.asked.len()
            )));
        }
        for (j, (&i, g)) in self.asked.iter().zip(values).enumerate() {
            let row = &mut self.rows[i];
            row.tuned = g.tuned;
            row.untuned = g.untuned;
            row.score = g.value;
            row.dirty = false;
            if let Some(t) = terms.get(j) {
                row.terms.clone_from(t);
            }
        }
        self.select();
        Ok(())
    }

    /// The backends have renumbered their rows as [`Action::Reorder`] said: the next
    /// chunk can be sampled.
    pub fn reordered(&mut self) {
        if self.phase == Phase::Reordering {
            self.rows = std::mem::take(&mut self.next);
            self.phase = Phase::Extend;
        }
    }

    /// Whether the search has ended ([`Action::Done`]).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The result of an ended search: every finished row of the final pool, best first,
    /// with `stats` (the driver's timings and the guide's counters) completed by the
    /// search's own counters. An ended search always has one (W >= 1 rows are kept).
    pub fn finish(self, mut stats: SearchStats) -> SearchOutput {
        stats.chunks = self.chunks;
        stats.strong_tokens_sampled = self.strong_tokens;
        let beams = self
            .order
            .iter()
            .map(|&i| &self.rows[i])
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
        SearchOutput {
            beams,
            stats,
            trace: self.trace,
        }
    }

    fn expect(&self, phase: Phase, what: &str) -> Result<(), SearchError> {
        if self.phase == phase {
            Ok(())
        } else {
            Err(SearchError::OutOfTurn(format!(
                "{what} fed while the search was at {:?}",
                self.phase
            )))
        }
    }

    /// Keeps the top W of the pool and records the step.
    fn select(&mut self) {
        let scores: Vec<f64> = self.rows.iter().map(|r| r.score).collect();
        self.order = rank(&scores);
        self.kept = self.config.method().width().min(self.order.len());
        let kept = &self.order[..self.kept];
        self.settled = common_prefix(kept.iter().map(|&i| self.rows[i].text.as_str())).len();
        self.live_kept = kept
            .iter()
            .filter(|&&i| self.rows[i].finish.is_none())
            .count();
        if let Some(trace) = self.trace.as_mut() {
            let rows = &self.rows;
            trace.steps.push(TraceStep {
                chunk: self.chunks,
                rows: (0..rows.len())
                    .map(|i| rows[i].trace_row(kept.contains(&i)))
                    .collect(),
            });
        }
        self.phase = Phase::Selected;
    }

    /// Copies each kept live row K times (the copies fork its random stream); an ended
    /// row stays once.
    fn copy_kept(&mut self) {
        let successors = self.config.method().successors();
        self.parents.clear();
        self.next.clear();
        for &i in &self.order[..self.kept] {
            let row = &self.rows[i];
            let copies = if row.finish.is_some() { 1 } else { successors };
            for j in 0..copies {
                let mut copy = row.child(i);
                if j > 0 {
                    copy.rng = row.rng.fork(j as u64);
                }
                self.parents.push(i);
                self.next.push(copy);
            }
        }
    }
}

fn live(rows: &[Row]) -> Vec<usize> {
    (0..rows.len())
        .filter(|&i| rows[i].finish.is_none())
        .collect()
}

fn contract(role: Role, message: String) -> SearchError {
    SearchError::Contract { role, message }
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

    /// Appends a (checked) chunk.
    fn add(&mut self, chunk: Chunk, max_new: usize) {
        self.strong_tokens += chunk.tokens;
        self.chunk_tokens += chunk.tokens;
        self.chunk_logprob = self.chunk_logprob.zip(chunk.logprob).map(|(a, b)| a + b);
        self.text.push_str(&chunk.text);
        self.finish = chunk
            .finish
            .or_else(|| (self.strong_tokens >= max_new).then_some(Finish::Length));
        self.dirty = true;
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
