//! Request fields as sent, and their typed reads, each failing with a 400 that names the
//! field.
//!
//! A body is read in two steps: it must be JSON and an object, then it becomes a typed
//! struct whose fields are [`Field`]s and whose unknown keys land in a flattened map (see
//! [`reject_unknown`]). Each field is then read into its type by the checks, in the order
//! that decides which error a body with several faults gets.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// One field of a request as sent: absent, or its JSON value (`null` included, which some
/// fields reject and others take as absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Field(Option<Value>);

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Field(Some(v)))
    }
}

impl Field {
    /// The value, if the field was sent (possibly `null`).
    pub fn get(&self) -> Option<&Value> {
        self.0.as_ref()
    }

    /// The value, if the field was sent (possibly `null`), taken out.
    pub fn into_value(self) -> Option<Value> {
        self.0
    }

    /// Whether the field was sent (possibly `null`).
    pub fn is_given(&self) -> bool {
        self.0.is_some()
    }

    /// The value, if sent and not `null`.
    fn set(&self) -> Option<&Value> {
        self.get().filter(|v| !v.is_null())
    }

    /// A non-negative integer, if set.
    pub fn uint(&self, key: &str) -> Result<Option<usize>, ApiError> {
        match self.set() {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid(key, format!("`{key}` must be a non-negative integer"))
                }),
            Some(_) => Err(ApiError::invalid(
                key,
                format!("`{key}` must be an integer"),
            )),
        }
    }

    /// A finite number, if set.
    pub fn number(&self, key: &str) -> Result<Option<f64>, ApiError> {
        match self.set() {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|v| v.is_finite())
                .map(Some)
                .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a finite number"))),
            Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a number"))),
        }
    }

    /// A boolean, if set.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.set() {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(
                key,
                format!("`{key}` must be true or false"),
            )),
        }
    }

    /// A string, if sent: `null` is not one.
    pub fn string(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.get() {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a string"))),
        }
    }

    /// `temperature` in [0, 2], else `default`.
    pub(crate) fn temperature(&self, default: f32) -> Result<f64, ApiError> {
        let t = self
            .number("temperature")?
            .unwrap_or(w2s_core::shown_f32(default));
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid("temperature", "must be between 0 and 2"));
        }
        Ok(t)
    }

    /// `top_p` in (0, 1], else `default`.
    pub(crate) fn top_p(&self, default: f32) -> Result<f64, ApiError> {
        let p = self
            .number("top_p")?
            .unwrap_or(w2s_core::shown_f32(default));
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid("top_p", "must be in (0, 1]"));
        }
        Ok(p)
    }
}

/// Parses a body that must be a JSON object into its typed struct.
pub fn object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "",
            format!("the body is not valid JSON ({e}); send a JSON object"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    };
    typed(obj)
}

/// A JSON object as its typed struct. The structs here take any value in every field, so
/// this fails only if a struct is declared wrongly.
pub fn typed<T: DeserializeOwned>(obj: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(obj))
        .map_err(|_| ApiError::invalid("", "the body must be a JSON object"))
}

/// Rejects the first of the keys a struct did not know (in key order), naming it with
/// `prefix` (the path of the object it sits in).
pub fn reject_unknown(unknown: &Map<String, Value>, prefix: &str) -> Result<(), ApiError> {
    match unknown.keys().next() {
        Some(key) => Err(ApiError::invalid(
            &format!("{prefix}{key}"),
            format!("unknown field `{prefix}{key}`"),
        )),
        None => Ok(()),
    }
}

/// The `prompt` of a completion: a string, or an array of exactly one.
pub fn completion_prompt(v: &Field) -> Result<String, ApiError> {
    match v.get() {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
            Value::String(s) => Ok(s.clone()),
            _ => Err(ApiError::invalid("prompt", "`prompt` must be a string")),
        },
        Some(Value::Array(_)) => Err(ApiError::invalid("prompt", "send one prompt per request")),
        None => Err(ApiError::invalid("prompt", "`prompt` is required")),
        Some(_) => Err(ApiError::invalid("prompt", "`prompt` must be a string")),
    }
}

/// The most prompts one completion request may list (one search each).
pub const MAX_PROMPTS: usize = 64;

/// The `prompt` of a search completion: a string, or an array of up to [`MAX_PROMPTS`]
/// strings (one search each). Token-id prompts are refused.
pub fn completion_prompts(v: &Field) -> Result<Vec<String>, ApiError> {
    let token_ids = || {
        ApiError::invalid(
            "prompt",
            "token-id prompts are not supported (the models may not share a vocabulary); send text",
        )
    };
    match v.get() {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.is_empty() => {
            Err(ApiError::invalid("prompt", "`prompt` is an empty array"))
        }
        Some(Value::Array(a)) if a.len() > MAX_PROMPTS => Err(ApiError::invalid(
            "prompt",
            format!(
                "`prompt` lists {} prompts; at most {MAX_PROMPTS} are taken per request",
                a.len()
            ),
        )),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Err(token_ids()),
                _ => Err(ApiError::invalid(
                    "prompt",
                    format!("prompt[{i}] must be a string"),
                )),
            })
            .collect(),
        None => Err(ApiError::invalid("prompt", "`prompt` is required")),
        Some(_) => Err(ApiError::invalid(
            "prompt",
            "`prompt` must be a string or an array of strings",
        )),
    }
}

/// The `stop` strings: none, one string, or an array of up to four.
pub fn stop_list(v: &Field) -> Result<Vec<String>, ApiError> {
    let list = match v.set() {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid("stop", "`stop` must be a string or an array of strings")
            })?,
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    };
    if list.len() > 4 || list.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::invalid(
            "stop",
            "up to 4 non-empty stop strings of at most 256 bytes",
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        b: Field,
        #[serde(flatten)]
        unknown: Map<String, Value>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Outer {
        a: Field,
        #[serde(flatten)]
        inner: Inner,
    }

    #[test]
    fn fields_keep_null_apart_from_absent_and_unknown_keys_are_kept() {
        let o: Outer =
            object(br#"{"a": null, "z": 1, "y": [2], "b": 18446744073709551615}"#).unwrap();
        assert_eq!(o.a.get(), Some(&Value::Null));
        assert_eq!(o.a.uint("a").unwrap(), None);
        assert_eq!(o.inner.b.uint("b").unwrap(), Some(u64::MAX as usize));
        let e = reject_unknown(&o.inner.unknown, "x.").unwrap_err();
        assert_eq!(
            (e.param.as_deref(), e.message.as_str()),
            (Some("x.y"), "unknown field `x.y`")
        );
        let o: Outer = object(br#"{"b": -2.5}"#).unwrap();
        assert!(!o.a.is_given());
        assert_eq!(o.inner.b.number("b").unwrap(), Some(-2.5));
        assert!(o.inner.b.uint("b").is_err());
    }
}
