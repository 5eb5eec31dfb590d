//! The one place that maps errors to messages and exit codes: 2 for bad input (flags,
//! files, models, prompts), 1 for failures while running.

use w2s_core::{ConfigError, SearchError};
use w2s_llama::LlamaError;

/// A failure with its exit code.
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub message: String,
}

/// Bad input: exit status 2.
pub fn usage(message: impl Into<String>) -> Fail {
    Fail {
        code: 2,
        message: message.into(),
    }
}

impl From<ConfigError> for Fail {
    fn from(e: ConfigError) -> Self {
        usage(e.to_string())
    }
}

impl From<LlamaError> for Fail {
    fn from(e: LlamaError) -> Self {
        let code = if is_input_error(&e) { 2 } else { 1 };
        Fail {
            code,
            message: e.to_string(),
        }
    }
}

fn is_input_error(e: &LlamaError) -> bool {
    !matches!(
        e,
        LlamaError::Init(_)
            | LlamaError::Decode(_)
            | LlamaError::Cache(_)
            | LlamaError::Usage(_)
            | LlamaError::Context { .. }
    )
}

impl From<SearchError> for Fail {
    fn from(e: SearchError) -> Self {
        let code = match &e {
            SearchError::Config(_) => 2,
            SearchError::Backend { source, .. } => {
                if source.downcast_ref::<ConfigError>().is_some() {
                    2
                } else if let Some(r) = source.downcast_ref::<w2s_remote::RemoteError>() {
                    crate::backends::remote_exit_code(r)
                } else if let Some(l) = source.downcast_ref::<LlamaError>() {
                    if is_input_error(l) {
                        2
                    } else {
                        1
                    }
                } else {
                    1
                }
            }
            _ => 1,
        };
        Fail {
            code,
            message: e.to_string(),
        }
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail {
            code: 1,
            message: e.to_string(),
        }
    }
}
