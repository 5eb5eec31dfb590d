//! Prompt templates: how each model is given the prompt.
//!
//! A template is a string with a `{prompt}` placeholder:
//! - plain text, e.g. `Here is a movie review from imdb: {prompt}`, given to the model as is;
//! - `chat:USER` or `chat:USER||ASSISTANT`: the model's own chat template renders one user
//!   message USER and opens the assistant's turn, whose text then starts with ASSISTANT.
//!   E.g. `chat:Write a very positive movie review.||{prompt}` asks an instruct model for a
//!   positive review and makes the prompt the beginning of its answer.
//!
//! A chat template whose user part holds `{prompt}` may also carry earlier turns of a
//! conversation ([`PromptTemplate::with_history`]): they are rendered before the user
//! message, so that a multi-turn chat request reaches each model through its own chat
//! template.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

const PLACEHOLDER: &str = "{prompt}";

/// A checked template (it has a `{prompt}` placeholder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromptTemplate {
    raw: String,
    /// Turns rendered before the user message (chat templates only; never serialised:
    /// a conversation belongs to one request).
    history: Vec<ChatTurn>,
}

/// Who speaks a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl ChatRole {
    /// The role's name in chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

/// One earlier turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTurn {
    /// Who said it.
    pub role: ChatRole,
    /// What was said.
    pub content: String,
}

/// A template with the prompt filled in, ready for a model to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilledPrompt {
    /// Text given to the model as is.
    Text(String),
    /// Earlier turns and one user message through the model's chat template, then the
    /// assistant's text.
    Chat {
        /// Turns before the user message (empty for a single-turn prompt).
        history: Vec<ChatTurn>,
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
            history: Vec::new(),
        })
    }

    /// The bare prompt: `{prompt}`.
    pub fn bare() -> Self {
        PromptTemplate {
            raw: PLACEHOLDER.to_string(),
            history: Vec::new(),
        }
    }

    /// `chat:{prompt}`: the prompt as the user's message through the model's own chat
    /// template.
    pub fn chat_default() -> Self {
        PromptTemplate {
            raw: format!("chat:{PLACEHOLDER}"),
            history: Vec::new(),
        }
    }

    /// This template with `history` rendered before its user message. Only a chat
    /// template whose user part holds `{prompt}` can take earlier turns: a plain-text
    /// template has no turns, and one that puts the prompt in the assistant's turn has
    /// its own fixed user message. An empty history gives the template back unchanged.
    pub fn with_history(&self, history: &[ChatTurn]) -> Result<Self, ConfigError> {
        if history.is_empty() {
            return Ok(PromptTemplate {
                raw: self.raw.clone(),
                history: Vec::new(),
            });
        }
        let user_part = self
            .raw
            .strip_prefix("chat:")
            .map(|rest| rest.split_once("||").map_or(rest, |(u, _)| u));
        match user_part {
            Some(user) if user.contains(PLACEHOLDER) => Ok(PromptTemplate {
                raw: self.raw.clone(),
                history: history.to_vec(),
            }),
            _ => Err(ConfigError::SingleTurnTemplate(self.raw.clone())),
        }
    }

    /// The earlier turns this template renders before the user message.
    pub fn history(&self) -> &[ChatTurn] {
        &self.history
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
                    history: self.history.clone(),
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
                history: vec![],
                user: "Write a very positive review.".into(),
                assistant_prefix: "The film".into()
            }
        );
        let t = PromptTemplate::new("chat:{prompt}").unwrap();
        assert!(t.is_chat());
        assert_eq!(
            t.fill("Hi").unwrap(),
            FilledPrompt::Chat {
                history: vec![],
                user: "Hi".into(),
                assistant_prefix: String::new()
            }
        );
    }

    #[test]
    fn history_goes_before_the_user_message_of_chat_templates_only() {
        let turns = vec![
            ChatTurn {
                role: ChatRole::System,
                content: "Be brief.".into(),
            },
            ChatTurn {
                role: ChatRole::User,
                content: "Hi".into(),
            },
            ChatTurn {
                role: ChatRole::Assistant,
                content: "Hello!".into(),
            },
        ];
        let t = PromptTemplate::new("chat:Answer: {prompt}")
            .unwrap()
            .with_history(&turns)
            .unwrap();
        assert_eq!(
            t.fill("Why?").unwrap(),
            FilledPrompt::Chat {
                history: turns.clone(),
                user: "Answer: Why?".into(),
                assistant_prefix: String::new()
            }
        );
        assert_eq!(t.history().len(), 3);
        // Serialised as written: the history belongs to one request.
        assert_eq!(String::from(t.clone()), "chat:Answer: {prompt}");
        assert!(t.with_history(&[]).unwrap().history().is_empty());
        for single in [
            "Here is a movie review from imdb: {prompt}",
            "chat:Write a very positive movie review.||{prompt}",
        ] {
            let t = PromptTemplate::new(single).unwrap();
            assert!(matches!(
                t.with_history(&turns),
                Err(ConfigError::SingleTurnTemplate(_))
            ));
            assert_eq!(t.with_history(&[]).unwrap(), t);
        }
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
