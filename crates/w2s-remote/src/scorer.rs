//! A small model behind an OpenAI-compatible `/v1/completions` endpoint, scoring text by
//! the log-probabilities the engine echoes for "prompt + response".

use serde_json::{json, Value};
use w2s_core::{BackendError, FilledPrompt, PromptTemplate, ScoreRequest, Scorer};

use crate::align::{response_logprob, response_span, Echoed};
use crate::client::{snippet, Client};
use crate::endpoint::{Endpoint, EngineKind, ScoreApi};
use crate::error::RemoteError;

/// A scorer on a remote engine (the tuned or the untuned model of a guide pair).
///
/// Stateless per row: every [`Scorer::score`] call sends one request per row with the
/// whole "prompt + response so far" and leaves prompt caching to the engine (vLLM's
/// `--enable-prefix-caching`, llama-cpp-python's prefix reuse).
pub struct RemoteScorer {
    client: Client,
    template: PromptTemplate,
    engine: Option<EngineKind>,
    prompt: Option<String>,
    rows: usize,
    evaluated: u64,
}

impl RemoteScorer {
    /// A scorer for `endpoint` that reads the prompt through `template` (plain text: the
    /// engine's completions endpoint takes text, so a chat model's markup is written into
    /// the template, see [`RemoteError::Unsupported`]).
    pub fn new(endpoint: Endpoint, template: PromptTemplate) -> Result<Self, RemoteError> {
        Ok(RemoteScorer {
            client: Client::new(endpoint)?,
            template,
            engine: None,
            prompt: None,
            rows: 0,
            evaluated: 0,
        })
    }

    /// Another scorer on the same endpoint with a client of its own, knowing the engine
    /// this one found.
    pub fn replica(&self) -> Result<Self, RemoteError> {
        Ok(RemoteScorer {
            client: Client::new(self.client.ctx.ep.clone())?,
            template: self.template.clone(),
            engine: self.engine,
            prompt: None,
            rows: 0,
            evaluated: 0,
        })
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

    fn begin_inner(&mut self, prompt: &str, rows: usize) -> Result<(), RemoteError> {
        let text = match self.template.fill(prompt).map_err(|e| RemoteError::Usage(e.to_string()))? {
            FilledPrompt::Text(t) => t,
            FilledPrompt::Chat { .. } => {
                return Err(RemoteError::Unsupported(format!(
                    "a remote scorer reads a text prompt, so template '{}' cannot use the model's chat \
                     template: write its chat markup into a plain template instead, e.g. \
                     \"<|im_start|>user\\nWrite a positive review.<|im_end|>\\n<|im_start|>assistant\\n{{prompt}}\" \
                     for ChatML models (the engine must parse special tokens in prompts, as vLLM and \
                     llama-cpp-python do)",
                    self.template.as_str()
                )))
            }
        };
        if self.engine.is_none() {
            let engine = self.client.resolve_engine()?;
            if engine == EngineKind::LlamaServer {
                return Err(RemoteError::Unsupported(format!(
                    "{} is llama.cpp's llama-server, which returns log-probabilities of generated                      tokens only (it refuses echo): it cannot score given text. Run this guide model                      locally, or serve it with vLLM, llama-cpp-python (--logits_all true) or w2s serve",
                    self.client.ctx.ep.base
                )));
            }
            if engine == EngineKind::LlamaCppPython
                && self.client.ctx.ep.score_api == ScoreApi::Echo
            {
                self.check_adds_bos()?;
            }
            self.engine = Some(engine);
        }
        self.prompt = Some(text);
        self.rows = rows;
        self.evaluated = 0;
        Ok(())
    }

    /// llama-cpp-python 0.3.x pairs each echoed token with the logits *after* it unless
    /// it dropped a leading BOS token; with a model that adds no BOS every value would be
    /// shifted by one token. Its tokenizer endpoint shows whether the model adds one
    /// ("a" is one token in every vocabulary, two with a BOS).
    fn check_adds_bos(&self) -> Result<(), RemoteError> {
        let ctx = self.client.ctx.clone();
        let body = json!({"input": "a", "model": ctx.ep.model});
        let reply = self
            .client
            .block_on(async move { ctx.send("../extras/tokenize", Some(&body)).await })??;
        let url = format!("{}/../extras/tokenize", self.client.ctx.ep.base);
        let n = reply
            .get("tokens")
            .and_then(Value::as_array)
            .map(Vec::len)
            .ok_or_else(|| malformed(&url, "no tokens", &reply))?;
        if n < 2 {
            return Err(RemoteError::Misaligned {
                url,
                reason: "llama-cpp-python's echo log-probs are shifted by one token for models that add \
                         no BOS token (e.g. SmolLM2), so this model cannot be scored through it; serve it \
                         with an engine whose echo log-probs are right (vLLM, SGLang) or score it locally"
                    .into(),
            });
        }
        Ok(())
    }

    fn score_inner(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, RemoteError> {
        let url = format!("{}/completions", self.client.ctx.ep.base);
        let echoed = self.echo_all(requests)?;
        let mut out = Vec::with_capacity(requests.len());
        for (r, (echoed, eos, sent)) in requests.iter().zip(echoed) {
            let summed = response_logprob(&echoed, r.text, eos.as_deref()).map_err(|reason| {
                RemoteError::Misaligned {
                    url: url.clone(),
                    reason,
                }
            })?;
            self.evaluated += sent;
            out.push(summed.logprob);
        }
        Ok(out)
    }

    /// Each text's tokens as the engine reads them after the prompt of the last
    /// [`Scorer::begin`], with log p(token | everything before it); no end token.
    pub fn token_logprobs(
        &mut self,
        texts: &[&str],
    ) -> Result<Vec<Vec<(String, f64)>>, RemoteError> {
        let url = format!("{}/completions", self.client.ctx.ep.base);
        let requests = ScoreRequest::per_text(texts, false);
        let echoed = self.echo_all(&requests)?;
        let mut out = Vec::with_capacity(texts.len());
        for (text, (echoed, _, sent)) in texts.iter().zip(echoed) {
            let span =
                response_span(&echoed, text, None).map_err(|reason| RemoteError::Misaligned {
                    url: url.clone(),
                    reason,
                })?;
            self.evaluated += sent;
            let mut tokens = Vec::with_capacity(span.len());
            for i in span {
                let lp = echoed.logprobs[i]
                    .ok_or_else(|| RemoteError::NoLogprobs { url: url.clone() })?;
                tokens.push((echoed.tokens[i].clone(), lp));
            }
            out.push(tokens);
        }
        Ok(out)
    }

    /// Sends "prompt + text (+ end token)" of each request for echoed log-probabilities:
    /// the echoed tokens, the end token used, and the prompt tokens sent.
    #[allow(clippy::type_complexity)]
    fn echo_all(
        &self,
        requests: &[ScoreRequest<'_>],
    ) -> Result<Vec<(Echoed, Option<String>, u64)>, RemoteError> {
        let (Some(prompt), Some(_)) = (self.prompt.as_deref(), self.engine) else {
            return Err(RemoteError::Usage("score before begin".into()));
        };
        let ep = &self.client.ctx.ep;
        let mut bodies = Vec::with_capacity(requests.len());
        let mut eos_of = Vec::with_capacity(requests.len());
        for r in requests {
            if r.row >= self.rows {
                return Err(RemoteError::Usage(format!(
                    "score of row {} of {}",
                    r.row, self.rows
                )));
            }
            let eos = match (r.ended, ep.eos_text.as_deref()) {
                (false, _) | (true, Some("")) => None,
                (true, Some(eos)) => Some(eos),
                (true, None) => {
                    return Err(RemoteError::NoEosText {
                        url: ep.base.clone(),
                    })
                }
            };
            let full = format!("{prompt}{}{}", r.text, eos.unwrap_or(""));
            let mut body = json!({
                "model": ep.model, "prompt": full, "max_tokens": 1, "temperature": 0.0,
            });
            match ep.score_api {
                ScoreApi::Echo => {
                    body["echo"] = json!(true);
                    body["logprobs"] = json!(0);
                }
                ScoreApi::PromptLogprobs => body["prompt_logprobs"] = json!(0),
            }
            bodies.push(body);
            eos_of.push(eos);
        }
        let replies = self.client.post_all("completions", bodies)?;
        let url = format!("{}/completions", ep.base);
        let mut out = Vec::with_capacity(requests.len());
        for (eos, reply) in eos_of.into_iter().zip(replies) {
            let (echoed, sent) = match ep.score_api {
                ScoreApi::Echo => echoed_tokens(&reply, &url)?,
                ScoreApi::PromptLogprobs => prompt_logprobs(&reply, &url)?,
            };
            out.push((echoed, eos.map(str::to_string), sent));
        }
        Ok(out)
    }
}

fn malformed(url: &str, what: &str, reply: &Value) -> RemoteError {
    RemoteError::Malformed {
        url: url.to_string(),
        what: what.to_string(),
        body: snippet(&reply.to_string()),
    }
}

fn usage_count(reply: &Value, field: &str) -> Option<usize> {
    reply
        .pointer(&format!("/usage/{field}"))?
        .as_u64()
        .map(|n| n as usize)
}

/// The echoed prompt tokens of an `echo: true` reply, and the prompt tokens sent.
fn echoed_tokens(reply: &Value, url: &str) -> Result<(Echoed, u64), RemoteError> {
    let choice = reply
        .pointer("/choices/0")
        .ok_or_else(|| malformed(url, "no choices", reply))?;
    let lp = match choice.get("logprobs") {
        None | Some(Value::Null) => {
            return Err(RemoteError::NoLogprobs {
                url: url.to_string(),
            })
        }
        Some(lp) => lp,
    };
    let tokens: Vec<String> = lp
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| RemoteError::NoLogprobs {
            url: url.to_string(),
        })?
        .iter()
        .map(|t| t.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| malformed(url, "a token that is not a string", reply))?;
    let logprobs: Vec<Option<f64>> = lp
        .get("token_logprobs")
        .and_then(Value::as_array)
        .ok_or_else(|| RemoteError::NoLogprobs {
            url: url.to_string(),
        })?
        .iter()
        .map(Value::as_f64)
        .collect();
    let completion = usage_count(reply, "completion_tokens")
        .ok_or_else(|| malformed(url, "no usage.completion_tokens", reply))?;
    let prompt_tokens = usage_count(reply, "prompt_tokens")
        .ok_or_else(|| malformed(url, "no usage.prompt_tokens", reply))?;
    let n_echo = tokens
        .len()
        .checked_sub(completion)
        .ok_or_else(|| malformed(url, "fewer tokens than usage.completion_tokens", reply))?;
    let mut echoed = Echoed { tokens, logprobs };
    echoed.tokens.truncate(n_echo);
    echoed.logprobs.truncate(n_echo);
    Ok((echoed, prompt_tokens as u64))
}

/// vLLM's `prompt_logprobs`: one `{token_id: {logprob, decoded_token}}` per prompt token.
fn prompt_logprobs(reply: &Value, url: &str) -> Result<(Echoed, u64), RemoteError> {
    let list = reply
        .pointer("/choices/0/prompt_logprobs")
        .or_else(|| reply.get("prompt_logprobs"))
        .and_then(Value::as_array)
        .ok_or_else(|| RemoteError::NoLogprobs {
            url: url.to_string(),
        })?;
    let mut echoed = Echoed::default();
    for (i, entry) in list.iter().enumerate() {
        match entry {
            Value::Null if i == 0 => {
                echoed.tokens.push(String::new());
                echoed.logprobs.push(None);
            }
            Value::Object(m) if m.len() == 1 => {
                let (_, v) = m
                    .iter()
                    .next()
                    .ok_or_else(|| malformed(url, "empty entry", reply))?;
                let token = v.get("decoded_token").and_then(Value::as_str);
                let token = token.ok_or_else(|| malformed(url, "no decoded_token", reply))?;
                echoed.tokens.push(token.to_string());
                echoed
                    .logprobs
                    .push(v.get("logprob").and_then(Value::as_f64));
            }
            _ => {
                return Err(malformed(
                    url,
                    "prompt_logprobs entry is not one token (send prompt_logprobs: 0)",
                    reply,
                ))
            }
        }
    }
    Ok((echoed, list.len() as u64))
}

impl Scorer for RemoteScorer {
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        _max_new_tokens: usize,
    ) -> Result<(), BackendError> {
        Ok(self.begin_inner(prompt, rows)?)
    }

    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        Ok(self.score_inner(requests)?)
    }

    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        if let Some(&bad) = parents.iter().find(|&&p| p >= self.rows) {
            return Err(
                RemoteError::Usage(format!("reorder names row {bad} of {}", self.rows)).into(),
            );
        }
        self.rows = parents.len();
        Ok(())
    }

    /// Prompt tokens sent to the engine (its prefix cache may skip part of them).
    fn tokens_evaluated(&self) -> u64 {
        self.evaluated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:1/v1/completions";

    /// The shape vLLM 0.32 returns for `prompt_logprobs: 0` (see the vLLM tests): no
    /// entry for the first token, then one `{id: {logprob, rank, decoded_token}}` each.
    fn reply(entries: Value) -> Value {
        json!({"choices": [{"text": "!", "prompt_logprobs": entries}]})
    }

    fn entry(id: &str, logprob: Value, token: &str) -> Value {
        json!({ id: {"logprob": logprob, "rank": 1, "decoded_token": token} })
    }

    #[test]
    fn prompt_logprobs_are_read_token_by_token() {
        let r = reply(json!([
            null,
            entry("42", json!(-1.5), " it"),
            entry("7", json!(-0.25), " was")
        ]));
        let (echoed, sent) = prompt_logprobs(&r, URL).unwrap();
        assert_eq!(sent, 3);
        assert_eq!(echoed.tokens, ["", " it", " was"]);
        assert_eq!(echoed.logprobs, [None, Some(-1.5), Some(-0.25)]);
    }

    #[test]
    fn an_engine_without_prompt_logprobs_is_named() {
        // An engine that ignores the field answers with a plain completion.
        let e = prompt_logprobs(&json!({"choices": [{"text": "!"}]}), URL).unwrap_err();
        assert!(matches!(e, RemoteError::NoLogprobs { .. }), "{e}");
        assert!(e.to_string().contains(URL), "{e}");
        let e = prompt_logprobs(&reply(Value::Null), URL).unwrap_err();
        assert!(matches!(e, RemoteError::NoLogprobs { .. }), "{e}");
    }

    #[test]
    fn a_null_entry_after_the_first_is_malformed_not_skipped() {
        let r = reply(json!([null, entry("42", json!(-1.5), " it"), null]));
        let e = prompt_logprobs(&r, URL).unwrap_err();
        assert!(
            e.to_string().contains("not one token"),
            "a null entry must not shift the tokens after it: {e}"
        );
        let two = json!({"1": {"logprob": -1.0, "decoded_token": "a"},
                         "2": {"logprob": -2.0, "decoded_token": "b"}});
        let e = prompt_logprobs(&reply(json!([null, two])), URL).unwrap_err();
        assert!(e.to_string().contains("prompt_logprobs: 0"), "{e}");
    }

    #[test]
    fn a_null_logprob_is_kept_missing_not_zero() {
        let r = reply(json!([null, entry("42", Value::Null, " it")]));
        let (echoed, _) = prompt_logprobs(&r, URL).unwrap();
        assert_eq!(echoed.logprobs, [None, None]);
    }
}
