//! Prompt templates: how each model is given the prompt.
//!
//! A template is a string with a `{prompt}` placeholder:
//! - plain text, e.g. `Here is a movie review from imdb: {prompt}`, given to the model as is;
//! - `chat:USER` or `chat:USER||ASSISTANT`: the model's own chat template renders one user
//!   message USER and opens the assistant's turn, whose text then starts with ASSISTANT.
//!   E.g. `chat:Write a very positive movie review.||{prompt}` asks an instruct model for a
//!   positive review and makes the prompt the beginning of its answer.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

const PLACEHOLDER: &str = "{prompt}";

/// A checked template (it has a `{prompt}` placeholder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromptTemplate {
    raw: String,
}

/// A template with the prompt filled in, ready for a model to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilledPrompt {
    /// Text given to the model as is.
    Text(String),
    /// One user message through the model's chat template, then the assistant's text.
    Chat {
        /// The user message.
        user: String,
        /// The start of the assistant's answer (may be empty).
        assistant_prefix: String,
    },
}

impl PromptTemplate {
    /// Checks that `raw` has a `{prompt}` placeholder.
    pub fn new(raw: &str) -> Result<Self, ConfigError> {
        if !raw.contains(PLACEHOLDER) {
            return Err(ConfigError::TemplateWithoutPrompt(raw.to_string()));
        }
        Ok(PromptTemplate {
            raw: raw.to_string(),
        })
    }

    /// The bare prompt: `{prompt}`.
    pub fn bare() -> Self {
        PromptTemplate {
            raw: PLACEHOLDER.to_string(),
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the template goes through the model's chat template.
    pub fn is_chat(&self) -> bool {
        self.raw.starts_with("chat:")
    }

    /// Fills in the prompt. An empty prompt is an error.
    pub fn fill(&self, prompt: &str) -> Result<FilledPrompt, ConfigError> {
        if prompt.trim().is_empty() {
            return Err(ConfigError::EmptyPrompt);
        }
        let put = |s: &str| s.replace(PLACEHOLDER, prompt);
        Ok(match self.raw.strip_prefix("chat:") {
            Some(rest) => {
                let (user, assistant) = rest.split_once("||").unwrap_or((rest, ""));
                FilledPrompt::Chat {
                    user: put(user),
                    assistant_prefix: put(assistant),
                }
            }
            None => FilledPrompt::Text(put(&self.raw)),
        })
    }
}

impl Default for PromptTemplate {
    fn default() -> Self {
        Self::bare()
    }
}

impl TryFrom<String> for PromptTemplate {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PromptTemplate::new(&s)
    }
}

impl From<PromptTemplate> for String {
    fn from(t: PromptTemplate) -> String {
        t.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_plain_text() {
        let t = PromptTemplate::new("Here is a movie review from imdb: {prompt}").unwrap();
        assert_eq!(
            t.fill("I loved").unwrap(),
            FilledPrompt::Text("Here is a movie review from imdb: I loved".into())
        );
    }

    #[test]
    fn fills_chat_with_assistant_prefix() {
        let t = PromptTemplate::new("chat:Write a very positive review.||{prompt}").unwrap();
        assert_eq!(
            t.fill("The film").unwrap(),
            FilledPrompt::Chat {
                user: "Write a very positive review.".into(),
                assistant_prefix: "The film".into()
            }
        );
        let t = PromptTemplate::new("chat:{prompt}").unwrap();
        assert!(t.is_chat());
        assert_eq!(
            t.fill("Hi").unwrap(),
            FilledPrompt::Chat {
                user: "Hi".into(),
                assistant_prefix: String::new()
            }
        );
    }

    #[test]
    fn rejects_template_without_placeholder_and_empty_prompt() {
        assert!(matches!(
            PromptTemplate::new("no placeholder"),
            Err(ConfigError::TemplateWithoutPrompt(_))
        ));
        assert!(matches!(
            PromptTemplate::bare().fill("  "),
            Err(ConfigError::EmptyPrompt)
        ));
    }
}
