//! The strong model behind `/v1/completions` (or `/v1/chat/completions`): each step asks
//! for continuations of "template-filled prompt + beam text", all beams at once.

use serde_json::{json, Value};
use w2s_core::text::{find_stop, stop_prefix_len, stop_search_start};
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
/// fewer choices than asked) by one request per row. An engine that caps `n` (llama.cpp's
/// `llama-server` at its slot count) gets a group in several requests of at most its cap;
/// the cap is read from the engine (`GET /props`, llama-server) or learnt once from the
/// engine's own 400 error, which is then retried split. All requests of a step are in
/// flight together, bounded by the endpoint's `max_concurrency`.
pub struct RemoteProposer {
    client: Client,
    template: PromptTemplate,
    engine: Option<Engine>,
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
}

/// One row as the engine knows it.
#[derive(Debug, Clone, Default)]
struct RowText {
    /// Everything the engine returned for the row (cut at a stop string): the beam text of
    /// the next request's prompt, possible stop-string start included.
    text: String,
    /// Bytes of `text` handed to the search; the rest is a held-back possible stop start.
    emitted: usize,
    /// Strong tokens sampled for the row.
    tokens: usize,
    /// The row has ended.
    done: bool,
}

/// One HTTP request: the rows (request indices) it serves, its seed and budget.
#[derive(Debug, Clone)]
struct Call {
    rows: Vec<usize>,
    seed: u64,
    max_tokens: usize,
}

/// What the engine returned for one sample, before the row's own bookkeeping.
#[derive(Debug, Clone)]
struct Raw {
    text: String,
    tokens: usize,
    finish: Option<Finish>,
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

    /// HTTP requests sent so far (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.client.requests()
    }

    /// The engine (after the first `begin`, resolved if it was `auto`).
    pub fn engine(&self) -> Option<Engine> {
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
            if api == Api::Chat && !matches!(engine, Engine::Vllm | Engine::Sglang) {
                return Err(RemoteError::Unsupported(format!(
                    "api = \"chat\" continues the assistant's message with continue_final_message, \
                     which {engine:?} does not support; use api = \"completions\" with a plain template"
                )));
            }
            self.use_n = engine.honours_n();
            if engine == Engine::LlamaServer {
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
        if engine == Engine::LlamaServer {
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
        match &st.prompt {
            FilledPrompt::Text(t) => {
                body["prompt"] = json!(format!("{t}{row_text}"));
                if n > 1 {
                    if engine == Engine::LlamaServer {
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
        let st = self
            .state
            .as_mut()
            .ok_or_else(|| RemoteError::Usage("extend before begin".into()))?;
        let mut out = Vec::with_capacity(raws.len());
        for (req, raw) in raws.into_iter().enumerate() {
            let raw = raw
                .ok_or_else(|| RemoteError::Usage("the engine returned too few samples".into()))?;
            out.push(advance(
                &mut st.rows[row_of[req]],
                raw,
                &st.stop,
                st.max_new,
            ));
        }
        Ok(out)
    }
}

/// Adds the engine's sample to the row and returns what the search gets of it.
///
/// - A sample cut at `max_tokens` inside a multi-byte character ends in U+FFFD (the
///   engine could not encode the partial character in JSON). Kept, it would stand in the
///   next prompt for good; so trailing U+FFFD of a sample that ended by length are dropped
///   (their tokens still count) and the next request re-samples from the clean text.
/// - Stop strings are looked for in the row's whole text, not just the new sample: one may
///   straddle two samples (the engine matches only inside its own completion). A possible
///   stop start at the end is held back from the search until the next sample decides it,
///   but stays in the next request's prompt.
fn advance(row: &mut RowText, raw: Raw, stop: &[String], max_new: usize) -> Chunk {
    let Raw {
        mut text,
        tokens,
        mut finish,
    } = raw;
    if finish.is_none() {
        let clean = text.trim_end_matches('\u{FFFD}').len();
        if clean < text.len() {
            tracing::debug!(
                dropped = text[clean..].chars().count(),
                "sample cut inside a character at max_tokens; dropping its U+FFFD"
            );
            text.truncate(clean);
        }
    }
    row.tokens += tokens;
    row.text.push_str(&text);
    if !stop.is_empty() {
        let from = stop_search_start(row.text.len(), text.len(), stop).max(row.emitted);
        if let Some(at) = find_stop(&row.text, stop, from) {
            row.text.truncate(at.max(row.emitted));
            finish = Some(Finish::Stop);
        }
    }
    let ended = finish.is_some() || row.tokens >= max_new;
    let end = if ended {
        row.done = true;
        row.text.len()
    } else {
        (row.text.len() - stop_prefix_len(&row.text, stop)).max(row.emitted)
    };
    let chunk = Chunk {
        text: row.text[row.emitted..end].to_string(),
        tokens,
        finish,
    };
    row.emitted = end;
    chunk
}

/// The most `n` an engine's 400 message allows, if the message is about `n` and names a
/// bound below `asked`; e.g. llama-server's "Field 'n': Value must be between 1 <= value
/// <= 4, but got 16" gives 4.
fn n_bound(message: &str, asked: usize) -> Option<usize> {
    let lower = message.to_lowercase();
    let about_n = [
        "'n'",
        "\"n\"",
        "`n`",
        "n_cmpl",
        "field n ",
        " n must",
        " n should",
    ]
    .iter()
    .any(|k| lower.contains(k))
        || lower.starts_with("n must")
        || lower.starts_with("n should");
    if !about_n {
        return None;
    }
    lower
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse::<usize>().ok())
        .filter(|&b| b >= 1 && b < asked)
        .max()
}

/// The samples of one reply, in choice order.
fn parse_choices(
    reply: &Value,
    url: &str,
    max_tokens: usize,
    has_stops: bool,
) -> Result<Vec<Raw>, RemoteError> {
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
            // The request's count when it had one choice (exact); else the budget for a
            // sample that ran out of it ("length": exact); else the per-choice count if
            // the engine gave one (llama-server lists a character split over several
            // tokens once: a lower bound), else the budget (an upper bound). A row that
            // stopped early has ended, so only the statistics see the difference.
            let tokens = match usage.filter(|_| single) {
                Some(u) => u as usize,
                None if finish.is_none() => max_tokens,
                None => per_choice.unwrap_or(max_tokens),
            };
            // llama-cpp-python samples past max_tokens until a multi-byte character is
            // complete (up to 3 more byte tokens) and counts them: the text is whole, the
            // count is taken as the budget.
            let tokens = if tokens > max_tokens && tokens <= max_tokens + 3 {
                tracing::debug!(
                    tokens,
                    max_tokens,
                    "the engine completed a character past max_tokens"
                );
                max_tokens
            } else {
                tokens
            };
            if tokens > max_tokens {
                return Err(bad(&format!(
                    "{tokens} tokens for max_tokens = {max_tokens}"
                )));
            }
            if tokens == 0 && finish.is_none() {
                return Err(bad("0 tokens and finish_reason \"length\""));
            }
            Ok(Raw {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn raw(text: &str, tokens: usize, finish: Option<Finish>) -> Raw {
        Raw {
            text: text.into(),
            tokens,
            finish,
        }
    }

    #[test]
    fn a_stop_straddling_two_samples_ends_the_row_and_is_cut() {
        let stop = stops(&["\n\n"]);
        let mut row = RowText::default();
        let c = advance(&mut row, raw("A: fine.\n", 5, None), &stop, 20);
        assert_eq!(c.text, "A: fine.");
        assert_eq!(c.finish, None);
        assert_eq!(
            row.text, "A: fine.\n",
            "the held-back newline is in the next prompt"
        );
        let c = advance(&mut row, raw("\nQ: and", 5, None), &stop, 20);
        assert_eq!(c.text, "");
        assert_eq!((c.finish, c.tokens), (Some(Finish::Stop), 5));
        assert!(row.done);
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop() {
        let stop = stops(&["\n\n", "THE END"]);
        let mut row = RowText::default();
        let c = advance(&mut row, raw("so THE", 3, None), &stop, 20);
        assert_eq!(c.text, "so ");
        let c = advance(&mut row, raw("RE it was", 3, None), &stop, 20);
        assert_eq!(c.text, "THERE it was");
        // An ended row releases what it held back.
        let c = advance(&mut row, raw(" THE E", 3, Some(Finish::Eos)), &stop, 20);
        assert_eq!((c.text.as_str(), c.finish), (" THE E", Some(Finish::Eos)));
        let mut row = RowText::default();
        let c = advance(&mut row, raw("x\n", 4, None), &stop, 4);
        assert_eq!(
            (c.text.as_str(), c.finish),
            ("x\n", None),
            "max_new reached"
        );
        assert!(row.done);
    }

    #[test]
    fn a_character_cut_at_max_tokens_is_dropped_not_kept_as_replacement() {
        let mut row = RowText::default();
        let c = advance(&mut row, raw("smile \u{FFFD}", 2, None), &[], 20);
        assert_eq!((c.text.as_str(), c.tokens), ("smile ", 2));
        assert_eq!(row.text, "smile ");
        // Only at a cut by length: an ended sample, or U+FFFD inside, is kept.
        let c = advance(
            &mut row,
            raw("a\u{FFFD}b\u{FFFD}", 4, Some(Finish::Eos)),
            &[],
            20,
        );
        assert_eq!(c.text, "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn the_n_bound_is_read_from_engine_messages() {
        let m = "Field 'n': Value must be between 1 <= value <= 4, but got 16";
        assert_eq!(n_bound(m, 16), Some(4));
        assert_eq!(n_bound("n must be at most 8", 10), Some(8));
        assert_eq!(n_bound("'n' must be <= 128, got 200", 200), Some(128));
        assert_eq!(n_bound("prompt too long: 4096 tokens", 16), None);
        assert_eq!(
            n_bound("n is not supported here", 4),
            None,
            "no bound named"
        );
    }
}
