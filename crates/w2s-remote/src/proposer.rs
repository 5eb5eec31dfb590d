//! The strong model behind `/v1/completions` (or `/v1/chat/completions`): each step asks
//! for continuations of "template-filled prompt + beam text", all beams at once.

use serde_json::{json, Value};
use w2s_core::{
    BackendError, Chunk, EntropyEnd, ExtendRequest, FilledPrompt, PromptTemplate, ProposalSetup,
    Proposer, SamplingParams,
};

use crate::client::Client;
use crate::endpoint::{Api, Endpoint, EngineKind};
use crate::error::RemoteError;
use crate::reply::{advance, n_bound, parse_choices, Raw, RowText};
use crate::tokens::{chunk_logprob, cut_at_entropy, TOP_LOGPROBS};

/// A strong model on a remote engine, used as a black box that returns sampled text.
///
/// Rows with the same text and budget (copies of one parent) are served by one request
/// with `n` samples where the engine honours `n`; otherwise (or if the engine returns
/// fewer choices than asked) by one request per row. An engine that caps `n` (llama.cpp's
/// `llama-server` at its slot count) gets a group in several requests of at most its cap;
/// the cap is read from the engine (`GET /props`, llama-server) or learnt once from the
/// engine's own 400 error, which is then retried split. All requests of a step are in
/// flight together, bounded by the endpoint's `max_concurrency`.
pub struct RemoteProposer {
    client: Client,
    template: PromptTemplate,
    engine: Option<EngineKind>,
    use_n: bool,
    n_cap: Option<usize>,
    state: Option<State>,
}

struct State {
    prompt: FilledPrompt,
    rows: Vec<RowText>,
    max_new: usize,
    sampling: SamplingParams,
    stop: Vec<String>,
    /// Adaptive chunk ends, read from the engine's top log-probs.
    chunk_end: Option<EntropyEnd>,
    /// Chunks carry their log-probability (a trace).
    logprobs: bool,
}

/// One HTTP request: the rows (request indices) it serves, its seed and budget.
#[derive(Debug, Clone)]
struct Call {
    rows: Vec<usize>,
    seed: u64,
    max_tokens: usize,
}

impl RemoteProposer {
    /// A strong model at `endpoint` reading the prompt through `template`.
    pub fn new(endpoint: Endpoint, template: PromptTemplate) -> Result<Self, RemoteError> {
        Ok(RemoteProposer {
            client: Client::new(endpoint)?,
            template,
            engine: None,
            use_n: true,
            n_cap: None,
            state: None,
        })
    }

    /// Another proposer on the same endpoint with a client of its own, knowing what this
    /// one learnt of the engine (its kind, its `n` cap): no discovery requests again.
    pub fn replica(&self) -> Result<Self, RemoteError> {
        Ok(RemoteProposer {
            client: Client::new(self.client.ctx.ep.clone())?,
            template: self.template.clone(),
            engine: self.engine,
            use_n: self.use_n,
            n_cap: self.n_cap,
            state: None,
        })
    }

    /// The template prompts are read through.
    pub fn template(&self) -> &PromptTemplate {
        &self.template
    }

    /// Reads the prompt through `template` from the next search on (e.g. one carrying a
    /// request's earlier chat turns).
    pub fn set_template(&mut self, template: PromptTemplate) {
        self.template = template;
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.client.requests()
    }

    /// The engine (after the first `begin`, resolved if it was `auto`).
    pub fn engine(&self) -> Option<EngineKind> {
        self.engine
    }

    /// The most samples (`n`) one request asks for, once known: read from the engine
    /// (llama-server's slot count) or learnt from its 400 error. `None`: no cap known.
    pub fn n_cap(&self) -> Option<usize> {
        self.n_cap
    }

    fn begin_inner(&mut self, setup: &ProposalSetup<'_>) -> Result<(), RemoteError> {
        let prompt = self
            .template
            .fill(setup.prompt)
            .map_err(|e| RemoteError::Usage(e.to_string()))?;
        let api = self.client.ctx.ep.api;
        match (&prompt, api) {
            (FilledPrompt::Chat { .. }, Api::Completions) => {
                return Err(RemoteError::Unsupported(format!(
                    "template '{}' uses the model's chat template, which /v1/completions cannot apply: \
                     set api = \"chat\" for an engine that continues an assistant message (vLLM), or \
                     write the chat markup into a plain template",
                    self.template.as_str()
                )))
            }
            (FilledPrompt::Text(_), Api::Chat) => {
                return Err(RemoteError::Unsupported(
                    "api = \"chat\" needs a chat:USER||ASSISTANT template".into(),
                ))
            }
            _ => {}
        }
        if self.engine.is_none() {
            let engine = self.client.resolve_engine()?;
            if api == Api::Chat && !matches!(engine, EngineKind::Vllm | EngineKind::Sglang) {
                return Err(RemoteError::Unsupported(format!(
                    "api = \"chat\" continues the assistant's message with continue_final_message, \
                     which {engine:?} does not support; use api = \"completions\" with a plain template"
                )));
            }
            self.use_n = engine.honours_n();
            if engine == EngineKind::LlamaServer {
                self.n_cap = self.slots();
            }
            self.engine = Some(engine);
        }
        self.state = Some(State {
            prompt,
            rows: vec![RowText::default(); setup.rows],
            max_new: setup.max_new_tokens,
            sampling: *setup.sampling,
            stop: setup.stop.to_vec(),
            chunk_end: setup.chunk_end,
            logprobs: setup.logprobs,
        });
        Ok(())
    }

    /// llama-server's slot count (`total_slots` of `GET /props`), the most `n` it takes.
    /// Not fatal when missing: the cap is then learnt from the first 400.
    fn slots(&self) -> Option<usize> {
        match self.client.get_at_root("props") {
            Ok(props) => {
                let slots = props
                    .get("total_slots")
                    .and_then(Value::as_u64)
                    .filter(|&n| n >= 1)
                    .map(|n| n as usize);
                tracing::debug!(?slots, "llama-server slots (GET /props)");
                slots
            }
            Err(e) => {
                tracing::debug!(error = %e, "no GET /props; the n cap is learnt from a 400");
                None
            }
        }
    }

    fn body(&self, st: &State, row_text: &str, n: usize, seed: u64, max_tokens: usize) -> Value {
        let ep = &self.client.ctx.ep;
        let s = &st.sampling;
        let mut body = json!({
            "model": ep.model,
            "max_tokens": max_tokens,
            "temperature": w2s_core::shown_f32(s.temperature()),
            "top_p": w2s_core::shown_f32(s.top_p()),
            "n": n,
            "seed": seed,
        });
        let engine = self.engine.unwrap_or_default();
        if engine == EngineKind::LlamaServer {
            // Its default chain adds min-p 0.05 and top-k 40 and puts the temperature
            // last; w2s's sampler is temperature, then top-k (0 = off), then top-p.
            body["top_k"] = json!(s.top_k());
            body["samplers"] = json!(["temperature", "top_k", "top_p"]);
        } else if engine.takes_top_k() && s.top_k() > 0 {
            body["top_k"] = json!(s.top_k());
        }
        if !st.stop.is_empty() {
            body["stop"] = json!(st.stop);
        }
        // Per-token log-probs: top ones for adaptive chunk ends, the sampled token's for a
        // trace (pre-sampling on llama-server: the model's own distribution).
        let per_token = st.chunk_end.is_some() || st.logprobs;
        let top = if st.chunk_end.is_some() {
            TOP_LOGPROBS
        } else {
            0
        };
        match &st.prompt {
            FilledPrompt::Text(t) => {
                body["prompt"] = json!(format!("{t}{row_text}"));
                if per_token {
                    let least = usize::from(engine == EngineKind::LlamaServer);
                    body["logprobs"] = json!(top.max(least));
                } else if n > 1 {
                    if engine == EngineKind::LlamaServer {
                        // `logprobs: 0` returns none there; the sampler's own candidates
                        // (post-sampling) are cheap, the full vocabulary is not.
                        body["logprobs"] = json!(1);
                        body["post_sampling_probs"] = json!(true);
                    } else {
                        body["logprobs"] = json!(0); // per-choice token counts
                    }
                }
            }
            FilledPrompt::Chat {
                history,
                user,
                assistant_prefix,
            } => {
                let mut messages: Vec<Value> = history
                    .iter()
                    .map(|t| json!({"role": t.role.as_str(), "content": t.content}))
                    .collect();
                messages.push(json!({"role": "user", "content": user}));
                messages.push(json!({"role": "assistant", "content": format!("{assistant_prefix}{row_text}")}));
                body["messages"] = Value::Array(messages);
                body["continue_final_message"] = json!(true);
                body["add_generation_prompt"] = json!(false);
                body["logprobs"] = json!(true);
                body["top_logprobs"] = json!(top);
            }
        }
        body
    }

    /// Splits groups of rows into requests of at most the known `n` cap; each request's
    /// seed is the seed its first row drew, so a split is reproducible whenever the cap
    /// became known.
    fn calls(&self, groups: &[Call], seeds: &[u64]) -> Vec<Call> {
        let cap = self.n_cap.unwrap_or(usize::MAX).max(1);
        let mut out = Vec::new();
        for g in groups {
            for part in g.rows.chunks(cap) {
                out.push(Call {
                    rows: part.to_vec(),
                    seed: seeds[part[0]],
                    max_tokens: g.max_tokens,
                });
            }
        }
        out
    }

    fn extend_inner(
        &mut self,
        requests: &mut [ExtendRequest<'_>],
    ) -> Result<Vec<Chunk>, RemoteError> {
        let st = self
            .state
            .as_ref()
            .ok_or_else(|| RemoteError::Usage("extend before begin".into()))?;
        // Every row draws one seed per step, however it is served: same seed, same draws.
        // Groups hold request indices; rows with the same text and budget share one.
        let row_of: Vec<usize> = requests.iter().map(|r| r.row).collect();
        let mut seeds = Vec::with_capacity(requests.len());
        let mut groups: Vec<Call> = Vec::new();
        for (i, r) in requests.iter_mut().enumerate() {
            if r.row >= st.rows.len() || r.max_tokens == 0 || st.rows[r.row].done {
                return Err(RemoteError::Usage(format!(
                    "bad extend of row {} (missing, ended, or no tokens asked)",
                    r.row
                )));
            }
            seeds.push(r.rng.next_u64() >> 33); // fits every engine's seed type
            let row = &st.rows[r.row];
            let shared = groups.iter_mut().find(|g| {
                let other = &st.rows[row_of[g.rows[0]]];
                self.use_n
                    && other.text == row.text
                    && other.emitted == row.emitted
                    && g.max_tokens == r.max_tokens
            });
            match shared {
                Some(g) => g.rows.push(i),
                None => groups.push(Call {
                    rows: vec![i],
                    seed: 0,
                    max_tokens: r.max_tokens,
                }),
            }
        }
        let path = match st.prompt {
            FilledPrompt::Text(_) => "completions",
            FilledPrompt::Chat { .. } => "chat/completions",
        };
        let url = format!("{}/{path}", self.client.ctx.ep.base);
        let mut raws: Vec<Option<Raw>> = vec![None; requests.len()];
        let mut pending = groups;
        let (mut learnt_cap, mut fell_back) = (false, false);
        while !pending.is_empty() {
            let calls = self.calls(&pending, &seeds);
            let st = self.state.as_ref().expect("checked above");
            let bodies: Vec<Value> = calls
                .iter()
                .map(|c| {
                    let text = &st.rows[row_of[c.rows[0]]].text;
                    self.body(st, text, c.rows.len(), c.seed, c.max_tokens)
                })
                .collect();
            let widest = calls.iter().map(|c| c.rows.len()).max().unwrap_or(1);
            let replies = match self.client.post_all(path, bodies) {
                Ok(r) => r,
                Err(RemoteError::Rejected {
                    status: 400,
                    message,
                    ..
                }) if !learnt_cap && widest > 1 && n_bound(&message, widest).is_some() => {
                    let cap = n_bound(&message, widest).unwrap_or(1);
                    tracing::debug!(cap, %message, "the engine caps n; splitting requests");
                    self.n_cap = Some(cap);
                    learnt_cap = true;
                    continue; // the same groups and seeds, split
                }
                Err(e) => return Err(e),
            };
            let has_stops = !st.stop.is_empty();
            let mut missing = Vec::new();
            for (c, reply) in calls.iter().zip(replies) {
                let got = parse_choices(&reply, &url, c.max_tokens, has_stops)?;
                for (k, &req) in c.rows.iter().enumerate() {
                    match got.get(k) {
                        Some(raw) => raws[req] = Some(raw.clone()),
                        None => missing.push(req),
                    }
                }
            }
            if missing.is_empty() {
                break;
            }
            if fell_back {
                return Err(RemoteError::Malformed {
                    url,
                    what: "fewer choices than requested, even with n = 1".into(),
                    body: String::new(),
                });
            }
            // The engine ignored `n`: one request per missing row from now on, each with
            // the seed that row drew for this step.
            tracing::debug!(
                missing = missing.len(),
                "engine returned fewer choices than n; sending one request per row"
            );
            self.use_n = false;
            fell_back = true;
            pending = missing
                .into_iter()
                .map(|req| Call {
                    rows: vec![req],
                    seed: seeds[req],
                    max_tokens: requests[req].max_tokens,
                })
                .collect();
        }
        self.chunks(raws, &row_of, &url)
    }

    /// Each request's sample, cut where adaptive chunk ends say, appended to its row.
    fn chunks(
        &mut self,
        raws: Vec<Option<Raw>>,
        row_of: &[usize],
        url: &str,
    ) -> Result<Vec<Chunk>, RemoteError> {
        let st = self
            .state
            .as_mut()
            .ok_or_else(|| RemoteError::Usage("extend before begin".into()))?;
        let mut out = Vec::with_capacity(raws.len());
        for (req, raw) in raws.into_iter().enumerate() {
            let mut raw = raw
                .ok_or_else(|| RemoteError::Usage("the engine returned too few samples".into()))?;
            if let Some(end) = st.chunk_end {
                if raw
                    .steps
                    .as_ref()
                    .is_none_or(|s| s.iter().all(|s| s.entropy.is_none()))
                {
                    return Err(RemoteError::Unsupported(format!(
                        "adaptive chunk ends (--chunk-entropy) need the engine's top \
                         log-probabilities, and {url} returned none: drop --chunk-entropy or \
                         use an engine that returns them (vLLM, SGLang, llama-server)"
                    )));
                }
                cut_at_entropy(&mut raw, end);
            }
            let logprob = if st.logprobs {
                chunk_logprob(&raw)
            } else {
                None
            };
            let mut chunk = advance(&mut st.rows[row_of[req]], raw, &st.stop, st.max_new);
            chunk.logprob = logprob;
            out.push(chunk);
        }
        Ok(out)
    }
}

impl Proposer for RemoteProposer {
    fn begin(&mut self, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        Ok(self.begin_inner(setup)?)
    }

    fn extend(&mut self, requests: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError> {
        Ok(self.extend_inner(requests)?)
    }

    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        let st = self
            .state
            .as_mut()
            .ok_or_else(|| RemoteError::Usage("reorder before begin".into()))?;
        let mut rows = Vec::with_capacity(parents.len());
        for &p in parents {
            let row = st
                .rows
                .get(p)
                .ok_or_else(|| RemoteError::Usage(format!("reorder names row {p}")))?;
            rows.push(row.clone());
        }
        st.rows = rows;
        Ok(())
    }
}
