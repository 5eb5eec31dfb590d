//! The one place that maps errors to messages and exit codes: 2 for bad input (flags,
//! files, models, prompts, settings a remote engine cannot serve), 1 for failures while
//! running. The kind comes from the libraries' errors; nothing here looks inside them.

use w2s_core::ErrorKind;

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

fn code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Input => 2,
        _ => 1,
    }
}

macro_rules! from_kinded {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Self {
                Fail {
                    code: code(e.kind()),
                    message: e.to_string(),
                }
            }
        }
    )*};
}

from_kinded!(
    w2s_engine::EngineError,
    w2s_eval::EvalError,
    w2s_core::SearchError,
    w2s_llama::LlamaError
);

impl From<w2s_core::ConfigError> for Fail {
    fn from(e: w2s_core::ConfigError) -> Self {
        usage(e.to_string())
    }
}

impl From<w2s_server::OptionsError> for Fail {
    fn from(e: w2s_server::OptionsError) -> Self {
        usage(e.to_string())
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
