//! The server's replies as types: the OpenAI shapes (completions, chat completions, their
//! stream chunks, usage, the model list, the error body) and the `w2s` extension object.
//! Every route builds its reply from these and nothing else.
//!
//! Fields are declared in alphabetical order: that is the order the replies have always
//! had on the wire (they were once built as sorted JSON maps), kept so that bodies stay
//! byte for byte the same.

use serde::Serialize;
use serde_json::Value;
use w2s_core::{Beam, Finish};

/// The reason OpenAI gives for a choice's end.
pub fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Eos | Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// A full answer of `POST /v1/completions` (choices [`TextChoice`]) or
/// `POST /v1/chat/completions` (choices [`ChatChoice`]).
#[derive(Debug, Clone, Serialize)]
pub struct Completion<C> {
    /// The choices, in the order of the prompts, then best first.
    pub choices: Vec<C>,
    /// Unix seconds.
    pub created: u64,
    /// `cmpl-…` or `chatcmpl-…`.
    pub id: String,
    /// The model name the server serves.
    pub model: String,
    /// `text_completion` or `chat.completion`.
    pub object: &'static str,
    /// Tokens used.
    pub usage: Usage,
    /// What the search did (absent for plain requests to one model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub w2s: Option<W2s>,
}

/// A full answer of `POST /v1/completions`.
pub type CompletionResponse = Completion<TextChoice>;

/// A full answer of `POST /v1/chat/completions`.
pub type ChatCompletionResponse = Completion<ChatChoice>;

/// One server-sent event of a streamed answer.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionChunk<C> {
    /// One choice (none in the last chunk of `stream_options.include_usage`).
    pub choices: Vec<C>,
    /// Unix seconds.
    pub created: u64,
    /// The same id in every chunk of an answer.
    pub id: String,
    /// The model name the server serves.
    pub model: String,
    /// `text_completion` or `chat.completion.chunk`.
    pub object: &'static str,
    /// Tokens used (in the finish chunk, or alone in the last chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What the search did (in the finish chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub w2s: Option<W2s>,
}

/// A choice of a completion (whole or streamed: then `text` is the new text).
#[derive(Debug, Clone, Serialize)]
pub struct TextChoice {
    /// `stop` or `length`; null in a stream's chunks before the last.
    pub finish_reason: Option<&'static str>,
    /// Which choice.
    pub index: usize,
    /// The chosen tokens' log-probabilities, when asked for.
    pub logprobs: Option<TextLogprobs>,
    /// The text.
    pub text: String,
}

/// A choice of a whole chat completion.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Which choice.
    pub index: usize,
    /// The chosen tokens' log-probabilities, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// The assistant's message.
    pub message: ChatMessage,
}

/// The assistant's message of a chat choice.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    /// The text.
    pub content: String,
    /// Always `assistant`.
    pub role: &'static str,
}

/// A choice of a streamed chat chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunkChoice {
    /// What the chunk adds.
    pub delta: ChatDelta,
    /// `stop` or `length` in the last chunk, else null.
    pub finish_reason: Option<&'static str>,
    /// Always 0 (one choice is streamed).
    pub index: usize,
    /// Always null (log-probabilities are not streamed).
    pub logprobs: (),
}

/// The new part of a streamed chat message.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatDelta {
    /// New text (absent in a first chunk with none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `assistant`, in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
}

/// Log-probabilities of a completion choice, in OpenAI's legacy shape.
#[derive(Debug, Clone, Serialize)]
pub struct TextLogprobs {
    /// Each token's byte offset in the text.
    pub text_offset: Vec<usize>,
    /// Each token's log-probability (null where there is none, e.g. the first token).
    pub token_logprobs: Vec<Option<f64>>,
    /// The tokens.
    pub tokens: Vec<String>,
    /// Always null (alternatives are not kept).
    pub top_logprobs: (),
}

impl TextLogprobs {
    /// The tokens with their log-probabilities, offsets counted from `start`.
    pub fn new(tokens: &[(String, f64)], start: usize) -> Self {
        let mut offset = start;
        let text_offset = tokens
            .iter()
            .map(|(t, _)| {
                let o = offset;
                offset += t.len();
                o
            })
            .collect();
        TextLogprobs {
            text_offset,
            token_logprobs: tokens.iter().map(|(_, lp)| Some(*lp)).collect(),
            tokens: tokens.iter().map(|(t, _)| t.clone()).collect(),
            top_logprobs: (),
        }
    }
}

/// Log-probabilities of a chat choice.
#[derive(Debug, Clone, Serialize)]
pub struct ChatLogprobs {
    /// One per token of the message.
    pub content: Vec<ChatTokenLogprob>,
    /// Always null.
    pub refusal: (),
}

impl ChatLogprobs {
    /// The tokens with their log-probabilities.
    pub fn new(tokens: &[(String, f64)]) -> Self {
        let content = tokens
            .iter()
            .map(|(t, lp)| ChatTokenLogprob {
                bytes: t.as_bytes().to_vec(),
                logprob: *lp,
                token: t.clone(),
                top_logprobs: [],
            })
            .collect();
        ChatLogprobs {
            content,
            refusal: (),
        }
    }
}

/// One token of a chat choice's log-probabilities.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTokenLogprob {
    /// The token's UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The strong model's log-probability of it.
    pub logprob: f64,
    /// The token.
    pub token: String,
    /// Always empty (alternatives are not kept).
    pub top_logprobs: [(); 0],
}

/// Tokens a request used.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// Tokens of the returned choices.
    pub completion_tokens: usize,
    /// Tokens the guide models scored (searches only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guide_tokens_scored: Option<u64>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens the strong model sampled, kept or not (searches only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strong_tokens_sampled: Option<usize>,
    /// Prompt and completion tokens.
    pub total_tokens: usize,
}

/// The `w2s` object: one search's facts, or, for a list of prompts, each search's.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum W2s {
    /// The request had one prompt.
    One(Box<SearchFacts>),
    /// The request had a list of prompts.
    Many {
        /// The method every search ran.
        method: String,
        /// One per prompt, in order.
        results: Vec<SearchFacts>,
        /// The request's seed.
        seed: u64,
    },
}

/// What one search did.
#[derive(Debug, Clone, Serialize)]
pub struct SearchFacts {
    /// Every final beam, when `search.return_beams` asked for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beams: Option<Vec<BeamFacts>>,
    /// The guide's values of each returned choice, when `logprobs` asked for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<GuideLogprobs>>,
    /// Why the strong model's log-probabilities are missing, if they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs_unavailable: Option<String>,
    /// The method, e.g. `cbs(w=4,k=4,l=5)`.
    pub method: String,
    /// The best beam's guide value.
    pub score: f64,
    /// The seed the search ran with.
    pub seed: u64,
    /// Seconds in each model and in all.
    pub timings: Timings,
    /// Every selection step, when `search.trace` asked for it (the [`w2s_core::Trace`]
    /// with its keys sorted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Value>,
}

/// Seconds a search spent.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timings {
    /// In the strong model.
    pub strong_s: f64,
    /// In all.
    pub total_s: f64,
    /// In the tuned model.
    pub tuned_s: f64,
    /// In the untuned model.
    pub untuned_s: f64,
}

impl From<&w2s_core::SearchStats> for Timings {
    fn from(s: &w2s_core::SearchStats) -> Self {
        Timings {
            strong_s: s.strong_time.as_secs_f64(),
            total_s: s.total_time.as_secs_f64(),
            tuned_s: s.tuned_time.as_secs_f64(),
            untuned_s: s.untuned_time.as_secs_f64(),
        }
    }
}

/// A final beam as the `w2s` object shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BeamFacts {
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Its guide value.
    pub score: f64,
    /// Its strong-model tokens.
    pub strong_tokens: usize,
    /// Its text.
    pub text: String,
    /// log pi_tuned of it.
    pub tuned_logprob: f64,
    /// log pi_untuned of it.
    pub untuned_logprob: f64,
}

impl From<&Beam> for BeamFacts {
    fn from(b: &Beam) -> Self {
        BeamFacts {
            finish_reason: finish_reason(b.finish),
            score: b.score,
            strong_tokens: b.strong_tokens,
            text: b.text.clone(),
            tuned_logprob: b.tuned_logprob,
            untuned_logprob: b.untuned_logprob,
        }
    }
}

/// The guide's values of a returned choice.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GuideLogprobs {
    /// Its guide value.
    pub score: f64,
    /// log pi_tuned of it.
    pub tuned_logprob: f64,
    /// log pi_untuned of it.
    pub untuned_logprob: f64,
}

impl From<&Beam> for GuideLogprobs {
    fn from(b: &Beam) -> Self {
        GuideLogprobs {
            score: b.score,
            tuned_logprob: b.tuned_logprob,
            untuned_logprob: b.untuned_logprob,
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// The models.
    pub data: Vec<ModelCard>,
    /// Always `list`.
    pub object: &'static str,
}

/// One model of [`ModelList`].
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// Unix seconds (when the server started).
    pub created: u64,
    /// Its name.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Always `w2s`.
    pub owned_by: &'static str,
}

/// `GET /health`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Health {
    /// `ok`, `loading`, `stalled`, `upstream_down`, `dead` or `shutting_down`.
    pub status: &'static str,
}

/// An error reply: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorResponse`].
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    /// A short machine-readable code.
    pub code: Option<&'static str>,
    /// What was wrong and what to do.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// OpenAI's error type, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl std::fmt::Display for ErrorResponse {
    /// The body as JSON text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_their_wire_order_and_nulls() {
        let chunk = CompletionChunk {
            choices: vec![ChatChunkChoice {
                delta: ChatDelta {
                    content: Some("Hi".into()),
                    role: Some("assistant"),
                },
                finish_reason: None,
                index: 0,
                logprobs: (),
            }],
            created: 1,
            id: "chatcmpl-w2s-1".into(),
            model: "w2s".into(),
            object: "chat.completion.chunk",
            usage: None,
            w2s: None,
        };
        let built = serde_json::json!({"id": "chatcmpl-w2s-1", "object": "chat.completion.chunk",
            "created": 1, "model": "w2s", "choices": [{"index": 0, "delta": {"role": "assistant",
            "content": "Hi"}, "logprobs": null, "finish_reason": null}]});
        assert_eq!(
            serde_json::to_string(&chunk).unwrap(),
            built.to_string(),
            "declaration order is the sorted order"
        );
        let lp = ChatLogprobs::new(&[("a".into(), -0.5)]);
        assert_eq!(
            serde_json::to_string(&lp).unwrap(),
            r#"{"content":[{"bytes":[97],"logprob":-0.5,"token":"a","top_logprobs":[]}],"refusal":null}"#
        );
        let lp = TextLogprobs::new(&[("a".into(), -0.5), ("bc".into(), -1.0)], 3);
        assert_eq!(
            serde_json::to_string(&lp).unwrap(),
            r#"{"text_offset":[3,4],"token_logprobs":[-0.5,-1.0],"tokens":["a","bc"],"top_logprobs":null}"#
        );
    }
}
