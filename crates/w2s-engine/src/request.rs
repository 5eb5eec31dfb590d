//! One search as an [`crate::Engine`] takes it.

use std::sync::Arc;

use w2s_core::{ChatTurn, Interrupt, SearchConfig};

/// Everything that varies from one search to the next on one engine: the prompt, the
/// earlier chat turns, the checked configuration, the search's place at the compute gate
/// and what may interrupt it. The engine applies it for that search alone
/// ([`crate::Engine::run`]); nothing of it stays behind.
///
/// ```
/// use w2s_core::{ChatRole, ChatTurn, SearchConfig};
/// use w2s_engine::SearchRequest;
///
/// let config = SearchConfig::default();
/// let history = [ChatTurn { role: ChatRole::User, content: "Hi".into() }];
/// let request = SearchRequest {
///     history: &history,
///     chat: true,
///     ..SearchRequest::new(&config, "Tell me a joke.")
/// };
/// assert_eq!(request.rank, 0);
/// ```
#[derive(Clone, Copy)]
pub struct SearchRequest<'a> {
    /// The prompt (the last user message of a chat).
    pub prompt: &'a str,
    /// The checked search configuration.
    pub config: &'a SearchConfig,
    /// Earlier chat turns rendered before the prompt in every role's template (empty:
    /// none); an input error where a role's template takes a single user message.
    pub history: &'a [ChatTurn],
    /// A chat request: a role whose template was not given and whose model has a chat
    /// template of its own (a local GGUF file's, or a remote engine's chat API) reads the
    /// conversation through that template, as vLLM, llama-server and the OpenAI API do
    /// for `/v1/chat/completions`.
    pub chat: bool,
    /// The search's rank at the compute gate: among engines of one family waiting for the
    /// CPU, the lowest rank goes first (e.g. a job's arrival number).
    pub rank: u64,
    /// Checked by every local model between micro-batches of a prompt (see
    /// [`w2s_core::Interrupt`]): a cancelled search stops within one piece.
    pub interrupt: Option<&'a Arc<Interrupt>>,
}

impl<'a> SearchRequest<'a> {
    /// A search of `prompt` with `config`: no history, not a chat, rank 0, no interrupt.
    pub fn new(config: &'a SearchConfig, prompt: &'a str) -> Self {
        SearchRequest {
            prompt,
            config,
            history: &[],
            chat: false,
            rank: 0,
            interrupt: None,
        }
    }
}
