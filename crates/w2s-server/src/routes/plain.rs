//! Plain requests: `POST /v1/completions` with `model` "strong", "tuned" or "untuned"
//! goes to that loaded model with no search: sampling, or echo with per-token
//! log-probabilities (what a remote engine serves to a w2s client).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{check_prompt, created, failure_error, submit, InFlight};
use crate::api::{PlainRequest, PLAIN_MODELS};
use crate::error::ApiError;
use crate::openai::{
    finish_reason, Completion, CompletionResponse, TextChoice, TextLogprobs, Usage,
};
use crate::worker::{Event, Failure, ModelInfo, Outcome, Work};
use crate::App;

/// Answers a plain request to one loaded model: sampling, or echo with log-probabilities.
pub(super) async fn answer(
    app: &Arc<App>,
    info: ModelInfo,
    req: PlainRequest,
    in_flight: InFlight,
) -> Result<Response, ApiError> {
    let Some(model) = info.plain.get(req.role).cloned().flatten() else {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "the {} model runs on a remote engine, not in this server; send plain requests to that engine",
                PLAIN_MODELS[req.role.min(2)]
            ),
        );
        e.param = Some("model".into());
        return Err(e);
    };
    let (prompt, max_tokens) = (req.prompt.clone(), req.max_tokens);
    let cap = app.cfg.max_prompt_tokens;
    let (shown, role) = (info.clone(), req.role.min(2));
    let n = check_prompt("prompt", move || {
        let n = model.tokenize_prompt(&prompt).len();
        if n > cap {
            return Err(format!(
                "the prompt is {n} tokens; this server takes prompts of at most {cap} tokens"
            ));
        }
        model.check_fits(n, max_tokens).map_err(|e| {
            let own = model.path().display().to_string();
            let name = |path: &str| match path == own {
                true => format!("the {} model", PLAIN_MODELS[role]),
                false => path.to_string(),
            };
            shown.client_error_naming(&e, &name)
        })?;
        Ok(n)
    })
    .await?;
    let cost = super::Cost {
        sampling: req.cost(),
        prompt: n as u64,
    };
    let (mut rx, mut guard) = submit(app, Work::Plain(req.clone()), cost, in_flight)?;
    let outcome = loop {
        match rx.recv().await {
            Some(Event::Done(r)) => break r,
            Some(Event::Settled(_)) => continue,
            None => break Err(Failure::Internal("the model worker stopped".into())),
        }
    };
    guard.done = true;
    let body = body(app, &req, outcome.map_err(|f| failure_error(app, f))?)?;
    app.metrics.request(200, "ok");
    Ok(super::reply::with_ignored(
        Json(body).into_response(),
        &req.ignored,
    ))
}

fn body(app: &App, req: &PlainRequest, outcome: Outcome) -> Result<CompletionResponse, ApiError> {
    let id = format!(
        "cmpl-w2s-{:x}",
        app.next_seed.fetch_add(1, Ordering::SeqCst)
    );
    let (choices, prompt_tokens, completion) = match outcome {
        Outcome::Echo {
            text,
            tokens,
            prompt_tokens,
        } => {
            let completion = tokens.len().saturating_sub(prompt_tokens);
            let logprobs = TextLogprobs {
                text_offset: tokens.iter().map(|t| t.offset).collect(),
                token_logprobs: tokens.iter().map(|t| t.logprob).collect(),
                tokens: tokens.into_iter().map(|t| t.text).collect(),
                top_logprobs: (),
            };
            let choice = TextChoice {
                finish_reason: Some("length"),
                index: 0,
                logprobs: Some(logprobs),
                text,
            };
            (vec![choice], prompt_tokens, completion)
        }
        Outcome::Samples {
            choices,
            prompt_tokens,
        } => {
            let completion: usize = choices.iter().map(|c| c.n_tokens).sum();
            let start = req.prompt.len();
            let out = choices
                .into_iter()
                .enumerate()
                .map(|(i, c)| TextChoice {
                    finish_reason: Some(finish_reason(c.finish)),
                    index: i,
                    logprobs: req.logprobs.then(|| TextLogprobs::new(&c.tokens, start)),
                    text: c.text,
                })
                .collect();
            (out, prompt_tokens, completion)
        }
        Outcome::Search(_) => {
            return Err(failure_error(
                app,
                Failure::Internal("unexpected answer".into()),
            ))
        }
    };
    Ok(Completion {
        choices,
        created: created(app),
        id,
        model: PLAIN_MODELS[req.role].to_string(),
        object: "text_completion",
        usage: Usage {
            completion_tokens: completion,
            prompt_tokens,
            total_tokens: prompt_tokens + completion,
            ..Usage::default()
        },
        w2s: None,
    })
}
