//! Errors of the llama.cpp backend. Each says what was wrong and what to do.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong in the llama.cpp backend.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LlamaError {
    /// llama.cpp's backend could not start.
    #[error("llama.cpp could not be initialised: {0}")]
    Init(String),
    /// The model file does not exist.
    #[error("model file {0} does not exist; give a GGUF file path or a model name that scripts/fetch-models has fetched")]
    NotFound(PathBuf),
    /// The model file cannot be read.
    #[error("model file {path} cannot be read: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS's reason.
        reason: String,
    },
    /// The file is not a GGUF model.
    #[error("{0} is not a GGUF model file (no GGUF header); convert the model to GGUF first")]
    NotGguf(PathBuf),
    /// llama.cpp refused to load the model.
    #[error("llama.cpp cannot load {path} (architecture '{arch}'): the architecture is unknown to this llama.cpp build or the file is damaged")]
    Load {
        /// The file.
        path: PathBuf,
        /// The architecture named in the file.
        arch: String,
    },
    /// A context could not be created.
    #[error("llama.cpp could not create a context of {n_ctx} tokens for {path}: out of memory? lower W*K or --max-new-tokens")]
    Context {
        /// The model file.
        path: PathBuf,
        /// Context size asked for.
        n_ctx: u32,
    },
    /// Prompt plus new tokens exceed what the model was trained for.
    #[error("the prompt is {prompt_tokens} tokens for {path}; with --max-new-tokens {max_new} that exceeds its context of {n_ctx_train} tokens: shorten the prompt or lower --max-new-tokens")]
    PromptTooLong {
        /// The model file.
        path: PathBuf,
        /// Prompt tokens after templating.
        prompt_tokens: usize,
        /// Max new tokens.
        max_new: usize,
        /// Trained context.
        n_ctx_train: u32,
    },
    /// More rows than llama.cpp's sequence limit allows.
    #[error("{rows} rows is more than the llama.cpp backend's limit of {max}; lower W*K or N")]
    TooManyRows {
        /// Rows asked for.
        rows: usize,
        /// The limit.
        max: usize,
    },
    /// The model's chat template could not be used.
    #[error("chat template of {path}: {reason}; use a plain-text template instead of chat:")]
    ChatTemplate {
        /// The model file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The model cannot judge as asked.
    #[error("judge {path}: {reason}")]
    Judge {
        /// The model file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A forward pass failed.
    #[error("llama.cpp decode failed: {0}")]
    Decode(#[from] llama_cpp_2::DecodeError),
    /// More tokens for a batch than it was made for (a bug of the backend's bookkeeping).
    #[error("llama.cpp batch: {0}")]
    Batch(#[from] llama_cpp_2::llama_batch::BatchAddError),
    /// A KV cache operation failed.
    #[error("llama.cpp KV cache operation failed: {0}")]
    Cache(#[from] llama_cpp_2::context::kv_cache::KvCacheConversionError),
    /// The search used the backend out of order (e.g. extend before begin).
    #[error("backend used out of order: {0}")]
    Usage(&'static str),
    /// A search beyond what a pool of searches on one context was made for.
    #[error("{0}")]
    PoolLimit(String),
    /// Two models that must share a vocabulary do not.
    #[error("{0}")]
    Vocabulary(String),
    /// A bad setting (template, prompt).
    #[error(transparent)]
    Config(#[from] w2s_core::ConfigError),
    /// The work was stopped from outside (its client left, its deadline passed).
    #[error("{0}")]
    Cancelled(String),
}

impl LlamaError {
    /// Whose fault it is: the input's for files, models, templates and prompts that
    /// cannot work; internal for failures of llama.cpp while running.
    pub fn kind(&self) -> w2s_core::ErrorKind {
        use w2s_core::ErrorKind;
        match self {
            LlamaError::Init(_)
            | LlamaError::Decode(_)
            | LlamaError::Batch(_)
            | LlamaError::Cache(_)
            | LlamaError::Usage(_)
            | LlamaError::Context { .. } => ErrorKind::Internal,
            LlamaError::Cancelled(_) => ErrorKind::Cancelled,
            LlamaError::NotFound(_)
            | LlamaError::Unreadable { .. }
            | LlamaError::NotGguf(_)
            | LlamaError::Load { .. }
            | LlamaError::PromptTooLong { .. }
            | LlamaError::TooManyRows { .. }
            | LlamaError::ChatTemplate { .. }
            | LlamaError::Judge { .. }
            | LlamaError::PoolLimit(_)
            | LlamaError::Vocabulary(_)
            | LlamaError::Config(_) => ErrorKind::Input,
        }
    }
}

impl From<LlamaError> for w2s_core::BackendError {
    fn from(e: LlamaError) -> Self {
        w2s_core::BackendError::new(e.kind(), e)
    }
}
