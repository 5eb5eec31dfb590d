//! Search request bodies as sent: typed structs of [`Field`]s, one per endpoint and per
//! nested object, whose unknown keys land in a flattened map; and the nested objects
//! (chat messages, `search`) read into their types.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};
use w2s_core::{ChatRole, ChatTurn, Method, SearchConfig};

use super::{Endpoint, Policy};
use crate::error::ApiError;
use crate::fields::{object, reject_unknown, typed, Field};

/// The fields both search endpoints take, as sent.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SharedFields {
    pub(super) model: Field,
    pub(super) temperature: Field,
    pub(super) top_p: Field,
    pub(super) top_k: Field,
    pub(super) stop: Field,
    pub(super) seed: Field,
    pub(super) stream: Field,
    pub(super) n: Field,
    pub(super) search: Field,
    pub(super) user: Field,
    pub(super) logprobs: Field,
    pub(super) presence_penalty: Field,
    pub(super) frequency_penalty: Field,
    pub(super) stream_options: Field,
    pub(super) logit_bias: Field,
    pub(super) tools: Field,
    pub(super) tool_choice: Field,
    pub(super) functions: Field,
    pub(super) function_call: Field,
    pub(super) response_format: Field,
    pub(super) modalities: Field,
    pub(super) audio: Field,
    pub(super) prediction: Field,
    /// The keys neither this nor the endpoint's body knows: ignored, and listed.
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// A `POST /v1/completions` body for the search.
#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionBody {
    prompt: Field,
    max_tokens: Field,
    echo: Field,
    best_of: Field,
    suffix: Field,
    #[serde(flatten)]
    shared: SharedFields,
}

/// A `POST /v1/chat/completions` body.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatBody {
    messages: Field,
    max_tokens: Field,
    max_completion_tokens: Field,
    top_logprobs: Field,
    #[serde(flatten)]
    shared: SharedFields,
}

/// One chat message.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Message {
    role: Field,
    content: Field,
    tool_calls: Field,
    function_call: Field,
    /// Taken and ignored (a speaker's name; an assistant's refusal text).
    #[serde(rename = "name")]
    _name: IgnoredAny,
    #[serde(rename = "refusal")]
    _refusal: IgnoredAny,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// The `stream_options` object.
#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamOptions {
    include_usage: Field,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// The `search` object.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SearchObject {
    method: Field,
    w: Field,
    k: Field,
    l: Field,
    n: Field,
    beta: Field,
    return_beams: Field,
    trace: Field,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// A search body of either endpoint; the fields an endpoint does not take stay absent.
pub(super) struct SearchBody {
    /// `prompt`, or `messages` for chat.
    pub(super) prompt: Field,
    /// `max_completion_tokens` if a chat body sends it, else `max_tokens`, with its name.
    pub(super) max_tokens: (&'static str, Field),
    pub(super) echo: Field,
    pub(super) best_of: Field,
    pub(super) suffix: Field,
    pub(super) top_logprobs: Field,
    pub(super) shared: SharedFields,
    /// The top-level keys no endpoint knows, in key order (ignored).
    pub(super) unknown: Vec<String>,
}

impl SearchBody {
    /// Reads a body of `endpoint`; the top-level keys it does not take are listed in
    /// `unknown`.
    pub(super) fn read(body: &[u8], endpoint: Endpoint) -> Result<Self, ApiError> {
        let b = match endpoint {
            Endpoint::Completions => {
                let b: CompletionBody = object(body)?;
                SearchBody {
                    prompt: b.prompt,
                    max_tokens: ("max_tokens", b.max_tokens),
                    echo: b.echo,
                    best_of: b.best_of,
                    suffix: b.suffix,
                    top_logprobs: Field::default(),
                    shared: b.shared,
                    unknown: Vec::new(),
                }
            }
            Endpoint::Chat => {
                let b: ChatBody = object(body)?;
                SearchBody {
                    prompt: b.messages,
                    max_tokens: if b.max_completion_tokens.is_given() {
                        ("max_completion_tokens", b.max_completion_tokens)
                    } else {
                        ("max_tokens", b.max_tokens)
                    },
                    echo: Field::default(),
                    best_of: Field::default(),
                    suffix: Field::default(),
                    top_logprobs: b.top_logprobs,
                    shared: b.shared,
                    unknown: Vec::new(),
                }
            }
        };
        let mut b = b;
        b.unknown = std::mem::take(&mut b.shared.unknown)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        Ok(b)
    }
}

/// `stream_options`: whether to stream a last chunk with the usage; unknown keys are
/// added to `ignored`.
pub(super) fn stream_options(v: &Field, ignored: &mut Vec<String>) -> Result<bool, ApiError> {
    let o: StreamOptions = match v.get() {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Object(o)) => typed(o.clone())?,
        Some(_) => {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
    };
    ignored.extend(o.unknown.keys().map(|k| format!("stream_options.{k}")));
    Ok(o.include_usage
        .flag("stream_options.include_usage")?
        .unwrap_or(false))
}

/// The most messages one chat request may carry.
pub(super) const MAX_MESSAGES: usize = 256;

/// A chat request's messages: the earlier turns and the last user message, which is the
/// search's prompt. Content is a string or an array of text parts (joined with newlines,
/// as vLLM does). Unknown keys of a message are added to `ignored`.
pub(super) fn chat_prompt(
    messages: Field,
    ignored: &mut Vec<String>,
) -> Result<(Vec<ChatTurn>, String), ApiError> {
    let Some(Value::Array(messages)) = messages.into_value() else {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must be an array of {role, content} objects",
        ));
    };
    if messages.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "{} messages; at most {MAX_MESSAGES} are taken",
                messages.len()
            ),
        ));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(ApiError::invalid(
                "messages",
                format!("messages[{i}] must be an object"),
            ));
        };
        let m: Message = typed(m)?;
        ignored.extend(m.unknown.keys().map(|k| format!("messages[{i}].{k}")));
        for (key, f) in [
            ("tool_calls", &m.tool_calls),
            ("function_call", &m.function_call),
        ] {
            if f.get()
                .is_some_and(|v| !v.is_null() && v != &Value::Array(vec![]))
            {
                return Err(ApiError::invalid(
                    "messages",
                    format!("messages[{i}].{key}: tool calls are not supported by the w2s search"),
                ));
            }
        }
        let role = match m.role.get() {
            Some(Value::String(r)) => match r.as_str() {
                "system" | "developer" => ChatRole::System,
                "user" => ChatRole::User,
                "assistant" => ChatRole::Assistant,
                "tool" | "function" => {
                    return Err(ApiError::invalid(
                        "messages",
                        format!("messages[{i}].role `{r}`: tool messages are not supported by the w2s search"),
                    ))
                }
                _ => {
                    return Err(ApiError::invalid(
                        "messages",
                        format!(
                            "messages[{i}].role must be \"system\", \"developer\", \"user\" or \"assistant\", not `{}`",
                            crate::error::truncate(r, 32)
                        ),
                    ))
                }
            },
            None => return Err(ApiError::invalid("messages", format!("messages[{i}].role is required"))),
            Some(_) => return Err(ApiError::invalid("messages", format!("messages[{i}].role must be a string"))),
        };
        let content = message_content(m.content.get(), i)?;
        turns.push(ChatTurn { role, content });
    }
    match turns.pop() {
        Some(ChatTurn {
            role: ChatRole::User,
            content,
        }) => Ok((turns, content)),
        Some(_) => Err(ApiError::invalid(
            "messages",
            "the last message must be the user's: the search writes the assistant's reply to it",
        )),
        None => Err(ApiError::invalid("messages", "`messages` is empty")),
    }
}

/// A message's content: a string, or an array of `{"type": "text", "text": ...}` parts.
fn message_content(v: Option<&Value>, i: usize) -> Result<String, ApiError> {
    let bad = |m: String| ApiError::invalid("messages", m);
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) if parts.is_empty() => {
            Err(bad(format!("messages[{i}].content is an empty array")))
        }
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str);
                match (kind, p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => {
                        return Err(bad(format!(
                            "messages[{i}].content[{j}].text must be a string"
                        )))
                    }
                    (Some(other), _) => {
                        return Err(bad(format!(
                        "messages[{i}].content[{j}] is a `{}` part; only text parts are supported",
                        crate::error::truncate(other, 32)
                    )))
                    }
                    (None, _) => {
                        return Err(bad(format!(
                            "messages[{i}].content[{j}] must be an object with \"type\": \"text\""
                        )))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        None | Some(Value::Null) => Err(bad(format!("messages[{i}].content is required"))),
        Some(_) => Err(bad(format!(
            "messages[{i}].content must be a string or an array of text parts"
        ))),
    }
}

pub(super) fn search_object(
    v: Field,
    d: &SearchConfig,
    policy: &Policy,
) -> Result<(Method, f64, bool, bool), ApiError> {
    let s: SearchObject = match v.into_value() {
        None | Some(Value::Null) => SearchObject::default(),
        Some(Value::Object(o)) => typed(o)?,
        Some(_) => return Err(ApiError::invalid("search", "`search` must be an object")),
    };
    reject_unknown(&s.unknown, "search.")?;
    let mut method = match s.method.get() {
        None | Some(Value::Null) => d.method(),
        Some(Value::String(m)) => {
            Method::parse(m).map_err(|e| ApiError::invalid("search.method", e.to_string()))?
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "search.method",
                "`search.method` must be a string",
            ))
        }
    };
    let get = |f: &Field, k: &str| {
        f.uint(k).map_err(|e| ApiError {
            param: Some(format!("search.{k}")),
            ..e
        })
    };
    match &mut method {
        Method::Cbs { w, k, l } => {
            *w = get(&s.w, "w")?.unwrap_or(*w);
            *k = get(&s.k, "k")?.unwrap_or(*k);
            *l = get(&s.l, "l")?.unwrap_or(*l);
        }
        Method::Bon { n } => *n = get(&s.n, "n")?.unwrap_or(*n),
        Method::Sample => {}
    }
    let (w, k) = (method.width(), method.successors());
    let checks = [
        ("search.w", w, policy.max_width),
        ("search.k", k, policy.max_successors),
        (
            "search.l",
            method.chunk_len().unwrap_or(1),
            policy.max_chunk,
        ),
        (
            "search.w*k",
            w.saturating_mul(k),
            policy.max_rows_per_request,
        ),
    ];
    for (param, v, max) in checks {
        if v == 0 || v > max {
            return Err(ApiError::invalid(
                param,
                format!("must be between 1 and {max}"),
            ));
        }
    }
    let beta = match s.beta.get() {
        None | Some(Value::Null) => d.beta(),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|b| b.is_finite() && b.abs() <= 100.0)
            .ok_or_else(|| {
                ApiError::invalid("search.beta", "must be a number between -100 and 100")
            })?,
        Some(_) => return Err(ApiError::invalid("search.beta", "must be a number")),
    };
    let return_beams = s.return_beams.flag("return_beams")?.unwrap_or(false);
    let trace = s.trace.flag("trace")?.unwrap_or(false);
    Ok((method, beta, return_beams, trace))
}
