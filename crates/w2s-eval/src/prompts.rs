//! Prompt sets: JSONL files with one `{"prompt": "...", "id": ...}` object per line.

use std::path::Path;

use crate::error::{usage, EvalError};

/// One prompt of a set.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptItem {
    /// The `id` field (string or number), else `line-N`.
    pub id: String,
    /// The prompt text.
    pub prompt: String,
}

/// Reads and checks a whole JSONL file before any model work.
pub fn read_jsonl(path: &Path) -> Result<Vec<PromptItem>, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read prompts file {}: {e}", path.display())))?;
    parse_jsonl(&text).map_err(|(line, msg)| {
        usage(format!(
            "{} line {line}: {msg}; each line must be a JSON object like {{\"prompt\": \"...\"}}",
            path.display()
        ))
    })
}

/// Parses JSONL text; an error is (line number, what is wrong).
pub fn parse_jsonl(text: &str) -> Result<Vec<PromptItem>, (usize, String)> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| (n, format!("not valid JSON ({e})")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| (n, "not a JSON object".to_string()))?;
        let prompt = match obj.get("prompt") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err((n, "\"prompt\" is not a string".into())),
            None => return Err((n, "no \"prompt\" field".into())),
        };
        if prompt.trim().is_empty() {
            return Err((n, "the prompt is empty".into()));
        }
        let id = match obj.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(x)) => x.to_string(),
            _ => format!("line-{n}"),
        };
        items.push(PromptItem { id, prompt });
    }
    if items.is_empty() {
        return Err((1, "the file has no prompts".into()));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_and_prompts() {
        let items =
            parse_jsonl("{\"id\": \"a\", \"prompt\": \"x\"}\n\n{\"prompt\": \"y\", \"id\": 7}\n")
                .unwrap();
        assert_eq!(items[0].id, "a");
        assert_eq!(items[1].id, "7");
        assert_eq!(items[1].prompt, "y");
    }

    #[test]
    fn names_the_bad_line() {
        assert_eq!(parse_jsonl("{\"prompt\": \"x\"}\n{oops").unwrap_err().0, 2);
        assert!(parse_jsonl("[1]").unwrap_err().1.contains("object"));
        assert!(parse_jsonl("{\"prompt\": 3}")
            .unwrap_err()
            .1
            .contains("string"));
        assert!(parse_jsonl("{\"id\": 3}").unwrap_err().1.contains("prompt"));
        assert!(parse_jsonl("{\"prompt\": \" \"}")
            .unwrap_err()
            .1
            .contains("empty"));
        assert!(parse_jsonl("\n\n").is_err());
    }
}
