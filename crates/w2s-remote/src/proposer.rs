//! The strong model behind `/v1/completions` (or `/v1/chat/completions`): each step asks
//! for continuations of "template-filled prompt + beam text", all beams at once.

use serde_json::{json, Value};
use w2s_core::{
    BackendError, Chunk, ExtendRequest, FilledPrompt, Finish, PromptTemplate, ProposalSetup,
    Proposer, SamplingParams,
};

use crate::client::{snippet, Client};
use crate::endpoint::{Api, Endpoint, Engine};
use crate::error::RemoteError;

/// A strong model on a remote engine, used as a black box that returns sampled text.
///
/// Rows with the same text and budget (copies of one parent) are served by one request
/// with `n` samples where the engine honours `n`; otherwise (or if the engine returns
/// fewer choices than asked) by one request per row. All requests of a step are in
/// flight together, bounded by the endpoint's `max_concurrency`.
pub struct RemoteProposer {
    client: Client,
    template: PromptTemplate,
    engine: Option<Engine>,
    use_n: bool,
    state: Option<State>,
}

struct State {
    prompt: FilledPrompt,
    rows: Vec<String>,
    sampling: SamplingParams,
    stop: Vec<String>,
}

/// One HTTP request: the rows it serves, their seeds and budget.
struct Group {
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
            state: None,
        })
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.client.requests()
    }

    /// The engine (after the first `begin`, resolved if it was `auto`).
    pub fn engine(&self) -> Option<Engine> {
        self.engine
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
            if api == Api::Chat && !matches!(engine, Engine::Vllm | Engine::Sglang) {
                return Err(RemoteError::Unsupported(format!(
                    "api = \"chat\" continues the assistant's message with continue_final_message, \
                     which {engine:?} does not support; use api = \"completions\" with a plain template"
                )));
            }
            self.use_n = engine.honours_n();
            self.engine = Some(engine);
        }
        self.state = Some(State {
            prompt,
            rows: vec![String::new(); setup.rows],
            sampling: *setup.sampling,
            stop: setup.stop.to_vec(),
        });
        Ok(())
    }

    fn body(&self, st: &State, row_text: &str, n: usize, seed: u64, max_tokens: usize) -> Value {
        let ep = &self.client.ctx.ep;
        let s = &st.sampling;
        let mut body = json!({
            "model": ep.model,
            "max_tokens": max_tokens,
            "temperature": s.temperature(),
            "top_p": s.top_p(),
            "n": n,
            "seed": seed,
        });
        if self.engine.is_some_and(Engine::takes_top_k) && s.top_k() > 0 {
            body["top_k"] = json!(s.top_k());
        }
        if !st.stop.is_empty() {
            body["stop"] = json!(st.stop);
        }
        match &st.prompt {
            FilledPrompt::Text(t) => {
                body["prompt"] = json!(format!("{t}{row_text}"));
                if n > 1 {
                    body["logprobs"] = json!(0); // per-choice token counts
                }
            }
            FilledPrompt::Chat {
                user,
                assistant_prefix,
            } => {
                body["messages"] = json!([
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": format!("{assistant_prefix}{row_text}")},
                ]);
                body["continue_final_message"] = json!(true);
                body["add_generation_prompt"] = json!(false);
                body["logprobs"] = json!(true);
                body["top_logprobs"] = json!(0);
            }
        }
        body
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
        let mut groups: Vec<Group> = Vec::new();
        for (i, r) in requests.iter_mut().enumerate() {
            if r.row >= st.rows.len() || r.max_tokens == 0 {
                return Err(RemoteError::Usage(format!("bad extend of row {}", r.row)));
            }
            let seed = r.rng.next_u64() >> 33; // fits every engine's seed type
            let text = &st.rows[r.row];
            let shared = groups.iter_mut().find(|g| {
                self.use_n && st.rows[row_of[g.rows[0]]] == *text && g.max_tokens == r.max_tokens
            });
            match shared {
                Some(g) => g.rows.push(i),
                None => groups.push(Group {
                    rows: vec![i],
                    seed,
                    max_tokens: r.max_tokens,
                }),
            }
        }
        let mut chunks: Vec<Option<Chunk>> = vec![None; requests.len()];
        let mut pending = groups;
        for _round in 0..2 {
            if pending.is_empty() {
                break;
            }
            let bodies: Vec<Value> = pending
                .iter()
                .map(|g| {
                    self.body(
                        st,
                        &st.rows[row_of[g.rows[0]]],
                        g.rows.len(),
                        g.seed,
                        g.max_tokens,
                    )
                })
                .collect();
            let path = match st.prompt {
                FilledPrompt::Text(_) => "completions",
                FilledPrompt::Chat { .. } => "chat/completions",
            };
            let replies = self.client.post_all(path, bodies)?;
            let url = format!("{}/{path}", self.client.ctx.ep.base);
            let mut missing = Vec::new();
            for (g, reply) in pending.iter().zip(replies) {
                let got = parse_choices(&reply, &url, g.max_tokens, !st.stop.is_empty())?;
                for (k, &req) in g.rows.iter().enumerate() {
                    match got.get(k) {
                        Some(c) => chunks[req] = Some(c.clone()),
                        None => missing.push(req),
                    }
                }
            }
            if missing.is_empty() {
                break;
            }
            // The engine ignored `n`: one request per missing row from now on.
            tracing::debug!(
                missing = missing.len(),
                "engine returned fewer choices than n; sending one request per row"
            );
            self.use_n = false;
            pending = missing
                .into_iter()
                .map(|req| Group {
                    rows: vec![req],
                    seed: requests[req].rng.next_u64() >> 33,
                    max_tokens: requests[req].max_tokens,
                })
                .collect();
        }
        let st = self
            .state
            .as_mut()
            .ok_or_else(|| RemoteError::Usage("extend before begin".into()))?;
        let mut out = Vec::with_capacity(chunks.len());
        for (req, c) in chunks.into_iter().enumerate() {
            let c =
                c.ok_or_else(|| RemoteError::Usage("the engine returned too few samples".into()))?;
            st.rows[row_of[req]].push_str(&c.text);
            out.push(c);
        }
        Ok(out)
    }
}

/// The chunks of one reply, in choice order.
fn parse_choices(
    reply: &Value,
    url: &str,
    max_tokens: usize,
    has_stops: bool,
) -> Result<Vec<Chunk>, RemoteError> {
    let bad = |what: &str| RemoteError::Malformed {
        url: url.to_string(),
        what: what.to_string(),
        body: snippet(&reply.to_string()),
    };
    let mut choices: Vec<&Value> = reply
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no choices"))?
        .iter()
        .collect();
    choices.sort_by_key(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0));
    let single = choices.len() == 1;
    let usage = reply
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_u64);
    choices
        .into_iter()
        .map(|c| {
            let text = c
                .get("text")
                .or_else(|| c.pointer("/message/content"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a choice without text"))?;
            let reason = c.get("finish_reason").and_then(Value::as_str);
            let per_choice = c
                .pointer("/logprobs/tokens")
                .or_else(|| c.pointer("/logprobs/content"))
                .and_then(Value::as_array)
                .map(Vec::len);
            let finish = match reason {
                Some("length") | None => None,
                Some("stop") => Some(match c.get("stop_reason") {
                    Some(Value::String(_)) => Finish::Stop,
                    Some(Value::Number(_)) => Finish::Eos,
                    _ if has_stops => Finish::Stop,
                    _ => Finish::Eos,
                }),
                Some(_) => Some(Finish::Stop),
            };
            // Per-choice count if the engine gave one; else the request's count when it
            // had one choice; else the budget (exact for "length", an upper bound when a
            // sample stopped early: that row has ended, so only the statistics see it).
            let tokens = per_choice
                .or(usage.filter(|_| single).map(|u| u as usize))
                .unwrap_or(max_tokens);
            if tokens > max_tokens {
                return Err(bad(&format!(
                    "{tokens} tokens for max_tokens = {max_tokens}"
                )));
            }
            if tokens == 0 && finish.is_none() {
                return Err(bad("0 tokens and finish_reason \"length\""));
            }
            Ok(Chunk {
                text: text.to_string(),
                tokens,
                finish,
            })
        })
        .collect()
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
            let text = st
                .rows
                .get(p)
                .ok_or_else(|| RemoteError::Usage(format!("reorder names row {p}")))?;
            rows.push(text.clone());
        }
        st.rows = rows;
        Ok(())
    }
}
