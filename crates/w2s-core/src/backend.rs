//! The two capabilities a model backend provides: sampling continuations (the strong
//! model) and scoring text (each small model). Both are object-safe and stateful: a
//! backend keeps per-row state (a KV cache, or the text so far) between calls, and the
//! search tells it when rows are copied or dropped.

use crate::config::{EntropyEnd, SamplingParams};
use crate::error::BackendError;
use crate::rng::RowRng;

/// Why a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// The strong model produced an end-of-generation token.
    Eos,
    /// A stop string appeared (it is cut from the text).
    Stop,
    /// The row reached the maximum number of new tokens.
    Length,
}

/// What the strong model needs to start a search.
#[derive(Debug, Clone)]
pub struct ProposalSetup<'a> {
    /// The user's prompt (the backend applies its own template).
    pub prompt: &'a str,
    /// Rows that may be in flight at once (W*K).
    pub rows: usize,
    /// Strong-model tokens per row at most.
    pub max_new_tokens: usize,
    /// The sampler's settings.
    pub sampling: &'a SamplingParams,
    /// Stop strings.
    pub stop: &'a [String],
    /// End chunks adaptively (see [`EntropyEnd`]); a backend that cannot measure the
    /// next-token entropy refuses in `begin` with an input error.
    pub chunk_end: Option<EntropyEnd>,
    /// Report each chunk's log-probability ([`Chunk::logprob`]) where the backend can.
    pub logprobs: bool,
}

/// Extend row `row` by at most `max_tokens` tokens, drawing random numbers from `rng`.
#[derive(Debug)]
pub struct ExtendRequest<'a> {
    /// Row index (0-based; rows are renumbered by [`Proposer::reorder`]).
    pub row: usize,
    /// Tokens to sample at most in this call (>= 1).
    pub max_tokens: usize,
    /// The row's random stream.
    pub rng: &'a mut RowRng,
}

/// New text of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// New text, never ending inside a UTF-8 character; cut before a stop string.
    pub text: String,
    /// Strong-model tokens sampled for it.
    pub tokens: usize,
    /// Set if the row ended with an end-of-generation token or a stop string.
    pub finish: Option<Finish>,
    /// Sum of the strong model's log-probabilities (at temperature 1, before top-k/top-p)
    /// of the tokens sampled for it, when asked for ([`ProposalSetup::logprobs`]) and known.
    pub logprob: Option<f64>,
}

/// The strong model: samples continuations of rows.
pub trait Proposer {
    /// Starts a search: encodes the prompt and prepares `setup.rows` rows, each empty.
    fn begin(&mut self, setup: &ProposalSetup<'_>) -> Result<(), BackendError>;
    /// Extends the requested rows (in one batch where the backend can); one chunk per
    /// request, in order. A chunk with 0 tokens and no finish is a contract breach.
    fn extend(&mut self, requests: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError>;
    /// Renumbers rows: new row `i` continues old row `parents[i]`; old rows not named are
    /// dropped. A parent may be named several times.
    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError>;
}

/// A strong model that serves several searches at once: each search (numbered by the
/// driver) has its own rows, and one [`ProposerPool::extend`] samples the rows of many
/// searches together (one batched decode on a local model, one batch of a GPU). See
/// [`crate::search_many`].
pub trait ProposerPool {
    /// Starts search `search` (as [`Proposer::begin`]); a search number may be reused
    /// once its search has [`ProposerPool::end`]ed.
    fn begin(&mut self, search: usize, setup: &ProposalSetup<'_>) -> Result<(), BackendError>;
    /// Extends the rows of several searches: `(search, requests)` pairs, each search at
    /// most once; one chunk per request, in order.
    fn extend(
        &mut self,
        requests: &mut [(usize, Vec<ExtendRequest<'_>>)],
    ) -> Result<Vec<Vec<Chunk>>, BackendError>;
    /// Renumbers the rows of search `search` (as [`Proposer::reorder`]).
    fn reorder(&mut self, search: usize, parents: &[usize]) -> Result<(), BackendError>;
    /// Frees what search `search` holds.
    fn end(&mut self, search: usize);
}

/// Score the whole response of row `row` so far.
#[derive(Debug, Clone, Copy)]
pub struct ScoreRequest<'a> {
    /// Row index (0-based; rows are renumbered by [`Scorer::reorder`]).
    pub row: usize,
    /// The whole response so far (prompt excluded). It extends what was last scored for
    /// this row, but may re-tokenise differently at the old end.
    pub text: &'a str,
    /// The response has ended: score the model's end-of-sequence token after it too.
    pub ended: bool,
}

impl<'a> ScoreRequest<'a> {
    /// One request per text, text `i` as row `i`.
    pub fn per_text<S: AsRef<str>>(texts: &'a [S], ended: bool) -> Vec<ScoreRequest<'a>> {
        texts
            .iter()
            .enumerate()
            .map(|(row, text)| ScoreRequest {
                row,
                text: text.as_ref(),
                ended,
            })
            .collect()
    }
}

/// A small model: log-probability of a response given the prompt.
pub trait Scorer {
    /// Starts a search on `prompt` with up to `rows` rows of up to `max_new_tokens` strong
    /// tokens each (as text).
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new_tokens: usize,
    ) -> Result<(), BackendError>;
    /// Sum of log p(response token | prompt, earlier tokens), natural log, for each
    /// request in order; the EOS token's term is included for ended responses.
    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError>;
    /// Renumbers rows like [`Proposer::reorder`].
    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError>;
    /// Tokens this scorer has run through its model since the last `begin`.
    fn tokens_evaluated(&self) -> u64;
}

/// Scores whole texts as responses to `prompt` from a fresh start (rescoring, not a
/// search): `begin` with one row per text and room for `max_new` tokens each, then one
/// `score` call; the end term is included where `ended`. An error if the lengths differ
/// or the scorer returns another number of values.
pub fn score_texts(
    scorer: &mut dyn Scorer,
    prompt: &str,
    texts: &[&str],
    ended: &[bool],
    max_new: usize,
) -> Result<Vec<f64>, BackendError> {
    if texts.len() != ended.len() {
        return Err(BackendError::new(
            crate::ErrorKind::Input,
            format!("{} texts but {} ended flags", texts.len(), ended.len()),
        ));
    }
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    scorer.begin(prompt, texts.len(), max_new)?;
    let requests: Vec<ScoreRequest<'_>> = texts
        .iter()
        .zip(ended)
        .enumerate()
        .map(|(row, (text, &ended))| ScoreRequest { row, text, ended })
        .collect();
    let values = scorer.score(&requests)?;
    if values.len() != texts.len() {
        return Err(BackendError::internal(format!(
            "{} scores for {} texts",
            values.len(),
            texts.len()
        )));
    }
    Ok(values)
}
