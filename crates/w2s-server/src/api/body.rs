//! Search request bodies as sent: typed structs of [`Field`]s, one per endpoint and per
//! nested object, whose unknown keys land in a flattened map; and the nested objects
//! (chat messages, `search`) read into their types.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};
use w2s_core::{Method, SearchConfig};

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
    /// The keys neither this nor the endpoint's body knows.
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
    /// Taken and ignored.
    #[serde(rename = "name")]
    _name: IgnoredAny,
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
}

impl SearchBody {
    /// Reads a body of `endpoint`; any key it does not take is a 400 naming the key.
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
                }
            }
        };
        reject_unknown(&b.shared.unknown, "")?;
        Ok(b)
    }
}

/// One user message; the server's templates give the instructions.
pub(super) fn chat_prompt(messages: Field) -> Result<String, ApiError> {
    let Some(Value::Array(messages)) = messages.into_value() else {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must be an array of {role, content} objects",
        ));
    };
    let mut user = None;
    for (i, m) in messages.into_iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(ApiError::invalid(
                "messages",
                format!("messages[{i}] must be an object"),
            ));
        };
        let m: Message = typed(m)?;
        reject_unknown(&m.unknown, &format!("messages[{i}]."))?;
        let role = m.role.get().and_then(Value::as_str).unwrap_or("");
        let content = match m.content.get() {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "messages",
                    format!("messages[{i}].content must be a string"),
                ))
            }
        };
        match role {
            "user" if user.is_none() => user = Some(content),
            "user" => return Err(ApiError::invalid("messages", "one user message per request: the search continues a single turn")),
            "system" | "developer" | "assistant" => {
                return Err(ApiError::invalid(
                    "messages",
                    format!("`{role}` messages are not supported: the server's templates set the instructions; send one user message"),
                ))
            }
            _ => return Err(ApiError::invalid("messages", format!("messages[{i}].role must be \"user\""))),
        }
    }
    user.ok_or_else(|| ApiError::invalid("messages", "no user message"))
}

pub(super) fn search_object(
    v: Field,
    d: &SearchConfig,
    policy: &Policy,
) -> Result<(Method, f64, bool), ApiError> {
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
    Ok((method, beta, return_beams))
}
