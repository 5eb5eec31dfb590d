//! Typed reads of JSON request fields, each failing with a 400 that names the field.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Parses a body into a JSON object whose keys are all in `allowed`.
pub fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "",
            format!("the body is not valid JSON ({e}); send a JSON object"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    };
    reject_unknown(&obj, allowed, "")?;
    Ok(obj)
}

pub fn reject_unknown(
    obj: &Map<String, Value>,
    allowed: &[&str],
    prefix: &str,
) -> Result<(), ApiError> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                &format!("{prefix}{key}"),
                format!("unknown field `{prefix}{key}`"),
            ));
        }
    }
    Ok(())
}

pub fn completion_prompt(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
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

pub fn opt_uint(obj: &Map<String, Value>, key: &str) -> Result<Option<usize>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
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

pub fn opt_number(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a finite number"))),
        Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a number"))),
    }
}

pub fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(
            key,
            format!("`{key}` must be true or false"),
        )),
    }
}

pub fn stop_list(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
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
