//! Texts scored outside a search: the strong model's per-token log-probabilities of
//! chosen responses, the guide pair's values of given texts, one text in one pass.

use w2s_core::{score_texts, BackendError, Role, ScoreRequest, Scorer};
use w2s_llama::LlamaScorer;
use w2s_remote::RemoteScorer;

use crate::error::EngineError;
use crate::roles::{SmallModel, Strong};
use crate::spec::RoleSource;
use crate::{Engine, SearchRequest};

impl Engine {
    /// The strong model's log-probability of each token of each text as a response to
    /// the request's prompt (after its history, through the strong model's own template),
    /// as (token text, log p
    /// given everything before it), without an end token. Local: one pass of the model.
    /// Remote: the engine echoes "prompt + text" (engines that cannot echo, such as
    /// llama.cpp's llama-server, and chat templates give an `Unsupported` error).
    pub fn strong_logprobs(
        &mut self,
        request: &SearchRequest<'_>,
        texts: &[&str],
    ) -> Result<Vec<Vec<(String, f64)>>, EngineError> {
        let prompt = request.prompt;
        let template = self
            .spec
            .strong
            .template
            .with_history(request.history)
            .map_err(|e| EngineError::input(format!("the strong model's {e}")))?;
        let wrap = |source: BackendError| {
            EngineError::Search(w2s_core::SearchError::Backend {
                role: Role::Strong,
                source,
            })
        };
        let max_new = texts.iter().map(|t| t.len()).max().unwrap_or(0) + 1;
        match &self.strong {
            Strong::Local(p) => {
                let mut s = LlamaScorer::new(p.model().clone(), template, self.spec.threads);
                let _cpu = self.gate.hold(request.rank);
                s.begin(prompt, texts.len().max(1), max_new).map_err(wrap)?;
                let requests = ScoreRequest::per_text(texts, false);
                s.score(&requests).map_err(wrap)?;
                Ok((0..texts.len())
                    .map(|row| {
                        s.row_tokens(row)
                            .into_iter()
                            .map(|(piece, lp)| (String::from_utf8_lossy(&piece).into_owned(), lp))
                            .collect()
                    })
                    .collect())
            }
            Strong::Remote(_) => {
                let RoleSource::Remote { endpoint, .. } = &self.spec.strong.source else {
                    return Err(EngineError::input("the strong model is not remote"));
                };
                let remote = |source| EngineError::Remote {
                    role: Role::Strong,
                    source,
                };
                let mut s = RemoteScorer::new((**endpoint).clone(), template).map_err(remote)?;
                s.begin(prompt, texts.len().max(1), max_new).map_err(wrap)?;
                s.token_logprobs(texts).map_err(remote)
            }
        }
    }

    /// The main pair's log-probabilities `(tuned, untuned)` of each text as a whole
    /// response to `prompt`, the end term included where `ended`, through the pair's own
    /// scorers (local or remote): the numbers the search's guide would give the texts.
    pub fn pair_logprobs(
        &mut self,
        prompt: &str,
        texts: &[&str],
        ended: &[bool],
    ) -> Result<Vec<(f64, f64)>, EngineError> {
        if texts.len() != ended.len() {
            return Err(EngineError::input(format!(
                "{} texts but {} ended flags",
                texts.len(),
                ended.len()
            )));
        }
        let mut values = [Vec::new(), Vec::new()];
        let roles = [
            (Role::Tuned, &mut self.tuned),
            (Role::Untuned, &mut self.untuned),
        ];
        for (k, (role, model)) in roles.into_iter().enumerate() {
            // Room for the longest text in the model's own tokens (a remote scorer sizes
            // nothing by it).
            let longest = match model.local_model() {
                Some(m) => texts.iter().map(|t| m.tokenize_response(t).len()).max(),
                None => texts.iter().map(|t| t.len()).max(),
            };
            let _cpu = crate::gate::hold_if(&self.gate, self.rank, model.local_model().is_some());
            // At most 64 rows a call, as a search has.
            for (texts, ended) in texts.chunks(64).zip(ended.chunks(64)) {
                let got = score_texts(model, prompt, texts, ended, longest.unwrap_or(0) + 1)
                    .map_err(|source| {
                        EngineError::Search(w2s_core::SearchError::Backend { role, source })
                    })?;
                values[k].extend(got);
            }
        }
        let [tuned, untuned] = values;
        Ok(tuned.into_iter().zip(untuned).collect())
    }

    /// The log-probability of `text` as a whole response to `prompt` under a local guide
    /// model (the end-of-sequence term included if `ended`), in one pass (EFT's responses
    /// are scored this way).
    pub fn score_text(
        &mut self,
        role: Role,
        prompt: &str,
        text: &str,
        ended: bool,
    ) -> Result<f64, EngineError> {
        let guide = match role {
            Role::Tuned => &mut self.tuned,
            Role::Untuned => &mut self.untuned,
            Role::Strong => {
                return Err(EngineError::input(
                    "score_text scores with a guide model, not the strong model",
                ))
            }
        };
        let wrap = |source: BackendError| {
            EngineError::Search(w2s_core::SearchError::Backend { role, source })
        };
        let SmallModel::Local(s) = guide else {
            return Err(EngineError::input(format!(
                "scoring a whole text in one pass needs the {role} model local"
            )));
        };
        let _g = self.gate.hold(self.rank);
        let score = w2s_llama::score_once(s, prompt, text, ended).map_err(wrap)?;
        Ok(score)
    }
}
