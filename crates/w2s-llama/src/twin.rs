//! A prompt-steered guide pair on one model file, scored in one llama.cpp context.
//!
//! A prompt-steered guide reads one GGUF file as both its tuned and its untuned model,
//! under two prompt templates (e.g. "write a very positive review" against "write a very
//! negative review"). Two [`LlamaScorer`]s would hold two contexts and decode their rows
//! one after the other; [`LlamaTwinGuide`] holds one context with both templates' rows
//! and runs both halves' new tokens through the model together, in one decode per score
//! call (more only when a call has more than [`TWIN_BATCH`] tokens to run).
//!
//! [`LlamaScorer`]: crate::LlamaScorer

use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use w2s_core::{
    BackendError, ConfigError, Guide, GuideScore, Interrupt, PromptTemplate, Role, ScoreRequest,
    SearchError, SearchStats,
};

use crate::boundary::anchor_of;
use crate::error::LlamaError;
use crate::incremental::ScorerProfile;
use crate::incremental::{decode_plan, Plan, RowSet};
use crate::model::{Model, ModelContext};
use crate::scorer::SCORE_BATCH;
use crate::seqs::SeqBanks;
use crate::strong::MAX_SEQUENCES;

/// Tokens per decode at most: what two scorers would run in one decode each. llama.cpp
/// still computes at most its micro-batch at a time, so the compute buffer is a
/// scorer's; the output buffer holds this many tokens' logits.
pub const TWIN_BATCH: usize = 2 * SCORE_BATCH;

/// Most rows a twin guide serves: each half keeps two banks of sequence ids, four
/// sequences a row within llama.cpp's limit.
pub const MAX_TWIN_ROWS: usize = MAX_SEQUENCES / 2;

const TUNED: usize = 0;
const UNTUNED: usize = 1;

/// The log-ratio guide `beta * (log p(y | tuned template) - log p(y | untuned template))`
/// of one small model read under two prompt templates, both halves in one llama.cpp
/// context and one decode per score call.
///
/// The tuned half's rows use sequence ids `[0, 2 * rows)` and the untuned half's
/// `[2 * rows, 4 * rows)` (each half two banks of `rows`, as in [`crate::LlamaScorer`]:
/// a reorder copies KV-cache sequences, never re-encodes). Each half keeps its own
/// prompt, encoded once, and scores only each row's new tokens; an ended row gets its
/// end token (end-of-turn under a chat template where the model has one, else
/// end-of-sequence) scored, as a scorer does.
///
/// Counters in [`SearchStats`]: each half's tokens in `tuned_tokens_evaluated` /
/// `untuned_tokens_evaluated`. The halves share their decodes, so time is split: a score
/// call's wall time goes to `tuned_time` and `untuned_time` in proportion to the tokens
/// each half ran in it (half each when none ran), `begin`'s in proportion to the two
/// prompts' tokens, a reorder's half each; the two times add up to the guide's time.
///
/// Errors of one half's template or prompt are that half's ([`Role::Tuned`] /
/// [`Role::Untuned`]); errors of the shared context are reported as the tuned model's.
pub struct LlamaTwinGuide {
    model: Arc<Model>,
    templates: [PromptTemplate; 2],
    beta: f64,
    threads: i32,
    engine: Option<ModelContext>,
    state: Option<State>,
    evaluated: [u64; 2],
    interrupt: Option<Arc<Interrupt>>,
    // Boxed: it is counters, and the guide may be held by value in enums.
    profile: Box<ScorerProfile>,
    /// The same work split between the halves as their time is (see the type's docs).
    halves: Box<[ScorerProfile; 2]>,
}

impl std::fmt::Debug for LlamaTwinGuide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaTwinGuide")
            .field("model", &self.model.path())
            .field("tuned", &self.templates[TUNED])
            .field("untuned", &self.templates[UNTUNED])
            .field("beta", &self.beta)
            .finish_non_exhaustive()
    }
}

struct State {
    sets: [RowSet; 2],
    batch: LlamaBatch<'static>,
}

impl LlamaTwinGuide {
    /// The guide of `model` read through `tuned` and through `untuned`, weighted by
    /// `beta`. An error if `beta` is not finite or a template cannot be rendered for the
    /// model (a chat template on a model without one).
    pub fn new(
        model: Arc<Model>,
        tuned: PromptTemplate,
        untuned: PromptTemplate,
        beta: f64,
        threads: usize,
    ) -> Result<Self, LlamaError> {
        if !beta.is_finite() {
            return Err(ConfigError::Beta(beta).into());
        }
        check_template(&model, &tuned)?;
        check_template(&model, &untuned)?;
        Ok(LlamaTwinGuide {
            model,
            templates: [tuned, untuned],
            beta,
            threads: threads.max(1) as i32,
            engine: None,
            state: None,
            evaluated: [0; 2],
            interrupt: None,
            profile: Box::default(),
            halves: Box::default(),
        })
    }

    /// Reads the prompt through these templates from the next search on (e.g. ones
    /// carrying a request's earlier chat turns); checked as in [`LlamaTwinGuide::new`].
    pub fn set_templates(
        &mut self,
        tuned: PromptTemplate,
        untuned: PromptTemplate,
    ) -> Result<(), LlamaError> {
        check_template(&self.model, &tuned)?;
        check_template(&self.model, &untuned)?;
        self.templates = [tuned, untuned];
        Ok(())
    }

    /// The tuned half's template.
    pub fn tuned_template(&self) -> &PromptTemplate {
        &self.templates[TUNED]
    }

    /// The untuned half's template.
    pub fn untuned_template(&self) -> &PromptTemplate {
        &self.templates[UNTUNED]
    }

    /// The weight of the log-ratio.
    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// Weighs the log-ratio by `beta` from the next score on; an error if it is not finite.
    pub fn set_beta(&mut self, beta: f64) -> Result<(), LlamaError> {
        if !beta.is_finite() {
            return Err(ConfigError::Beta(beta).into());
        }
        self.beta = beta;
        Ok(())
    }

    /// The model both halves read.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Checks `interrupt` between pieces of long work (each micro-batch of a prompt or of
    /// the responses scored), so that a cancelled job stops within one piece.
    pub fn set_interrupt(&mut self, interrupt: Option<Arc<Interrupt>>) {
        self.interrupt = interrupt;
    }

    /// Tokens the current llama.cpp context holds (0 without one).
    pub fn context_tokens(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.ctx.n_ctx() as usize)
    }

    /// Frees the llama.cpp context (KV cache and buffers); the next search makes a new one.
    pub fn release_context(&mut self) {
        self.state = None;
        self.engine = None;
    }

    /// Where the guide's time went in the current search (both halves together).
    pub fn profile(&self) -> ScorerProfile {
        *self.profile
    }

    /// [`LlamaTwinGuide::profile`] split between the halves (tuned, untuned) as their time
    /// is: each call's durations in proportion to the tokens each half ran in it; every
    /// decode counts for both, which ran in it.
    pub fn half_profiles(&self) -> [ScorerProfile; 2] {
        *self.halves
    }

    /// Adds the work since `before` to the halves' profiles, `work` deciding the shares.
    fn split_profile(&mut self, before: ScorerProfile, work: [u64; 2]) {
        let after = *self.profile;
        let total = work[TUNED] + work[UNTUNED];
        let tuned = if total == 0 {
            0.5
        } else {
            work[TUNED] as f64 / total as f64
        };
        for (half, share) in [(TUNED, tuned), (UNTUNED, 1.0 - tuned)] {
            let p = &mut self.halves[half];
            let part = |a: Duration, b: Duration| a.saturating_sub(b).mul_f64(share);
            p.setup += part(after.setup, before.setup);
            p.tokenize += part(after.tokenize, before.tokenize);
            p.decode += part(after.decode, before.decode);
            p.log_softmax += part(after.log_softmax, before.log_softmax);
            p.copies += part(after.copies, before.copies);
            p.cache += part(after.cache, before.cache);
            p.decodes += after.decodes.saturating_sub(before.decodes);
        }
    }

    /// Tokens each half ran through the model in the current search: (tuned, untuned).
    pub fn tokens_evaluated(&self) -> (u64, u64) {
        (self.evaluated[TUNED], self.evaluated[UNTUNED])
    }

    /// The token that ends a response read through `template`: end-of-turn for chat
    /// templates where the model has one, else end-of-sequence.
    fn end_token(&self, template: &PromptTemplate) -> LlamaToken {
        let vocab = self.model.llama().vocab();
        let eot = vocab.eot();
        if template.is_chat() && eot.0 >= 0 {
            eot
        } else {
            vocab.eos()
        }
    }

    /// Each half's templated prompt tokens, checked; an error names its half.
    fn prompts(
        &self,
        prompt: &str,
        max_new: usize,
    ) -> Result<[(String, Vec<LlamaToken>); 2], SearchError> {
        let one = |template: &PromptTemplate| -> Result<_, LlamaError> {
            let text = self.model.render(&template.fill(prompt)?)?;
            let tokens = self.model.tokenize_prompt(&text);
            if tokens.is_empty() {
                return Err(ConfigError::EmptyPrompt.into());
            }
            self.model.check_fits(tokens.len(), max_new)?;
            Ok((text, tokens))
        };
        let tuned = one(&self.templates[TUNED]).map_err(failed(Role::Tuned))?;
        let untuned = one(&self.templates[UNTUNED]).map_err(failed(Role::Untuned))?;
        Ok([tuned, untuned])
    }

    fn begin_inner(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new: usize,
    ) -> Result<(), SearchError> {
        self.state = None;
        if rows > MAX_TWIN_ROWS {
            let e = LlamaError::TooManyRows {
                rows,
                max: MAX_TWIN_ROWS,
            };
            return Err(failed(Role::Tuned)(e));
        }
        let [tuned, untuned] = self.prompts(prompt, max_new)?;
        *self.profile = ScorerProfile::default();
        *self.halves = Default::default();
        self.evaluated = [0; 2];
        let started = Instant::now();
        // As a scorer plans its context, for both halves.
        let per_row = max_new + max_new / 2 + 16;
        let n_ctx = tuned.1.len() + untuned.1.len() + 2 * rows * per_row;
        let prompts = [tuned, untuned].map(|(text, tokens)| {
            let anchor = anchor_of(&self.model, &text, &tokens);
            (tokens, anchor)
        });
        self.open(prompts, rows, n_ctx)
            .map_err(failed(Role::Tuned))?;
        self.profile.setup += started.elapsed();
        Ok(())
    }

    /// (Re)creates the context for `rows` rows a half and encodes both prompts once.
    fn open(
        &mut self,
        prompts: [(Vec<LlamaToken>, Option<crate::boundary::Anchor>); 2],
        rows: usize,
        n_ctx: usize,
    ) -> Result<(), LlamaError> {
        let tuned_banks = SeqBanks::new(rows);
        let untuned_banks = SeqBanks::at(tuned_banks.n_seq() as usize, rows);
        let n_seq = tuned_banks.n_seq() + untuned_banks.n_seq();
        let eos = [TUNED, UNTUNED].map(|h| self.end_token(&self.templates[h]));
        let n_ctx = u32::try_from(n_ctx).map_err(|_| LlamaError::Usage("context too large"))?;
        let engine = ModelContext::ensure(
            &mut self.engine,
            &self.model,
            n_ctx,
            n_seq,
            TWIN_BATCH as u32,
            self.threads,
        )?;
        let mut batch = LlamaBatch::new(TWIN_BATCH, 1);
        let [tuned, untuned] = prompts;
        let interrupt = self.interrupt.as_deref();
        let ctx = &mut engine.ctx;
        let tuned = RowSet::open(ctx, &mut batch, tuned, tuned_banks, rows, eos[0], interrupt)?;
        let untuned = RowSet::open(
            ctx,
            &mut batch,
            untuned,
            untuned_banks,
            rows,
            eos[1],
            interrupt,
        )?;
        self.state = Some(State {
            sets: [tuned, untuned],
            batch,
        });
        Ok(())
    }

    /// Each request's (tuned, untuned) log-prob, growing the context once if a row's
    /// text needs more cells than planned.
    fn score_inner(
        &mut self,
        requests: &[ScoreRequest<'_>],
    ) -> Result<Vec<(f64, f64)>, LlamaError> {
        match self.try_score(requests) {
            Err(LlamaError::Decode(DecodeError::NoKvCacheSlot)) => {
                // Grow the context, start every row of both halves afresh, score again.
                let st = self
                    .state
                    .take()
                    .ok_or(LlamaError::Usage("score before begin"))?;
                let n_ctx = self.engine.as_ref().map_or(0, |e| e.n_ctx as usize);
                let needed: usize = st
                    .sets
                    .iter()
                    .map(|s| s.cells_for(&self.model, requests))
                    .sum();
                let n_ctx = (2 * n_ctx).max(needed + needed / 4 + 16);
                tracing::debug!(n_ctx, "twin guide context full; growing it");
                self.engine = None;
                let rows = st.sets[TUNED].rows.len();
                let prompts = st.sets.map(|s| (s.prompt, s.anchor));
                self.open(prompts, rows, n_ctx)?;
                self.try_score(requests)
            }
            other => other,
        }
    }

    fn try_score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<(f64, f64)>, LlamaError> {
        let Some(mut st) = self.state.take() else {
            return Err(LlamaError::Usage("score before begin"));
        };
        let result = self.score_halves(&mut st, requests);
        self.state = Some(st);
        result
    }

    /// Plans both halves' new tokens and runs them in shared decodes.
    fn score_halves(
        &mut self,
        st: &mut State,
        requests: &[ScoreRequest<'_>],
    ) -> Result<Vec<(f64, f64)>, LlamaError> {
        let engine = self
            .engine
            .as_mut()
            .ok_or(LlamaError::Usage("score before begin"))?;
        let prof = &mut *self.profile;
        let mut plan = Plan::default();
        let [tuned, untuned] = &mut st.sets;
        tuned.plan(
            TUNED,
            &self.model,
            &mut engine.ctx,
            requests,
            &mut plan,
            prof,
        )?;
        untuned.plan(
            UNTUNED,
            &self.model,
            &mut engine.ctx,
            requests,
            &mut plan,
            prof,
        )?;
        decode_plan(
            &mut engine.ctx,
            &mut st.batch,
            &plan,
            &mut [&mut *tuned, &mut *untuned],
            self.interrupt.as_deref(),
            &mut self.evaluated,
            prof,
        )?;
        // The plan holds the tuned half's requests, then the untuned half's.
        let sums = plan.finish(&mut [tuned, untuned]);
        let (t, u) = sums.split_at(requests.len());
        Ok(t.iter().copied().zip(u.iter().copied()).collect())
    }

    /// Adds `elapsed` to the two halves' times in proportion to `work` (half each when
    /// there was none).
    fn split_time(elapsed: Duration, work: [u64; 2], stats: &mut SearchStats) {
        let total = work[TUNED] + work[UNTUNED];
        let tuned = if total == 0 {
            elapsed / 2
        } else {
            elapsed.mul_f64(work[TUNED] as f64 / total as f64)
        };
        stats.tuned_time += tuned;
        stats.untuned_time += elapsed.saturating_sub(tuned);
    }
}

impl Guide for LlamaTwinGuide {
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new_tokens: usize,
        stats: &mut SearchStats,
    ) -> Result<(), SearchError> {
        let t = Instant::now();
        let result = self.begin_inner(prompt, rows, max_new_tokens);
        let work = self
            .state
            .as_ref()
            .map_or([0; 2], |s| s.sets.each_ref().map(|r| r.prompt.len() as u64));
        Self::split_time(t.elapsed(), work, stats);
        self.split_profile(ScorerProfile::default(), work);
        result
    }

    fn score(
        &mut self,
        requests: &[ScoreRequest<'_>],
        stats: &mut SearchStats,
    ) -> Result<Vec<GuideScore>, SearchError> {
        let t = Instant::now();
        let (before, profile) = (self.evaluated, *self.profile);
        let result = self.score_inner(requests);
        let work = [TUNED, UNTUNED].map(|h| self.evaluated[h].saturating_sub(before[h]));
        Self::split_time(t.elapsed(), work, stats);
        self.split_profile(profile, work);
        let pairs = result.map_err(failed(Role::Tuned))?;
        Ok(pairs
            .into_iter()
            .map(|(tuned, untuned)| GuideScore {
                value: self.beta * (tuned - untuned),
                tuned,
                untuned,
            })
            .collect())
    }

    fn reorder(&mut self, parents: &[usize], stats: &mut SearchStats) -> Result<(), SearchError> {
        let (t, profile) = (Instant::now(), *self.profile);
        let result = self.reorder_halves(parents);
        Self::split_time(t.elapsed(), [0; 2], stats);
        self.split_profile(profile, [0; 2]);
        result.map_err(failed(Role::Tuned))
    }

    fn finish(&mut self, stats: &mut SearchStats) {
        stats.tuned_tokens_evaluated = self.evaluated[TUNED];
        stats.untuned_tokens_evaluated = self.evaluated[UNTUNED];
    }
}

impl LlamaTwinGuide {
    /// New row `i` of both halves continues old row `parents[i]`.
    fn reorder_halves(&mut self, parents: &[usize]) -> Result<(), LlamaError> {
        let (Some(engine), Some(st)) = (self.engine.as_mut(), self.state.as_mut()) else {
            return Err(LlamaError::Usage("reorder before begin"));
        };
        let t = Instant::now();
        for set in &mut st.sets {
            set.rows = set.banks.reorder(&mut engine.ctx, &set.rows, parents)?;
        }
        self.profile.cache += t.elapsed();
        Ok(())
    }
}

/// Checks that `template` renders for `model` (a chat template needs the model's own).
fn check_template(model: &Model, template: &PromptTemplate) -> Result<(), LlamaError> {
    model.render(&template.fill("a prompt")?)?;
    Ok(())
}

fn failed(role: Role) -> impl Fn(LlamaError) -> SearchError {
    move |e| SearchError::Backend {
        role,
        source: BackendError::from(e),
    }
}
