//! Loading GGUF models (each file once per process) and owning llama.cpp contexts.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use w2s_core::FilledPrompt;

use crate::error::LlamaError;

/// How to load models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Layers to offload to the GPU (only with the `cuda` feature; 0 = CPU only).
    pub gpu_layers: u32,
    /// Score with a guide file as it is even where its weight type has no fast CPU kernel
    /// (by default such a guide is scored through a copy in one that has:
    /// [`crate::fast_guide`]).
    pub keep_guide_weights: bool,
}

/// A loaded GGUF model, shared by every role that uses the same file.
pub struct Model {
    inner: LlamaModel,
    path: PathBuf,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.path).finish()
    }
}

/// Models alive in this process, by file and GPU offload.
type Loaded = HashMap<(PathBuf, u32), Weak<Model>>;

pub(crate) fn backend() -> Result<&'static LlamaBackend, LlamaError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LlamaError::Init(e.clone()))
}

impl Model {
    /// Loads `path`, or returns the already loaded model of the same file.
    pub fn load(path: &Path, options: LoadOptions) -> Result<Arc<Model>, LlamaError> {
        static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();
        check_file(path)?;
        let key = (
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            options.gpu_layers,
        );
        let mut loaded = LOADED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(model) = loaded.get(&key).and_then(Weak::upgrade) {
            return Ok(model);
        }
        let arch = llama_cpp_2::gguf::GgufContext::from_file(path)
            .ok_or_else(|| LlamaError::NotGguf(path.to_path_buf()))
            .map(|g| {
                let i = g.find_key("general.architecture");
                (i >= 0)
                    .then(|| g.val_str(i).map(str::to_string))
                    .flatten()
                    .unwrap_or_else(|| "unknown".into())
            })?;
        // On the CPU, llama.cpp repacks the weights it multiplies in blocks (Q4_0, Q4_K,
        // Q8_0, IQ4_NL) into buffers of its own; from a memory-mapped file the mapped pages
        // it read stay resident beside the repacked copy, so those weights count twice
        // (Qwen2.5-Coder-1.5B + SmolLM2: 2,073 MB peak against 1,470 MB read into memory,
        // same text and speed). Offloaded weights live on the GPU: there the map is kept.
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(options.gpu_layers)
            .with_use_mmap(options.gpu_layers > 0);
        let inner = LlamaModel::load_from_file(backend()?, path, &params).map_err(|_| {
            LlamaError::Load {
                path: path.to_path_buf(),
                arch,
            }
        })?;
        let model = Arc::new(Model {
            inner,
            path: path.to_path_buf(),
        });
        loaded.insert(key, Arc::downgrade(&model));
        Ok(model)
    }

    /// Loads only `path`'s vocabulary (tokenisation without weights; nothing is shared
    /// with other loads): for tokenizer checks on vocabulary-only GGUF files.
    pub fn load_vocab_only(path: &Path) -> Result<Model, LlamaError> {
        check_file(path)?;
        let params = LlamaModelParams::default().with_vocab_only(true);
        let inner = LlamaModel::load_from_file(backend()?, path, &params).map_err(|_| {
            LlamaError::Load {
                path: path.to_path_buf(),
                arch: "vocabulary only".into(),
            }
        })?;
        Ok(Model {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The llama.cpp model.
    pub fn llama(&self) -> &LlamaModel {
        &self.inner
    }

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.inner.n_ctx_train()
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.inner.n_vocab().max(0) as usize
    }

    /// Bytes of KV cache one token takes in every layer (f16 keys and values).
    pub fn kv_bytes_per_token(&self) -> u64 {
        let m = &self.inner;
        let arch = m.meta_val_str("general.architecture").unwrap_or_default();
        let key = |k: &str| {
            m.meta_val_str(&format!("{arch}.attention.{k}"))
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let head = (m.n_embd() as u64) / (m.n_head().max(1) as u64);
        let (k, v) = (
            key("key_length").unwrap_or(head),
            key("value_length").unwrap_or(head),
        );
        m.n_layer() as u64 * m.n_head_kv() as u64 * (k + v) * 2
    }

    /// Size of the model file in bytes.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Renders a filled template to the text the model reads.
    pub fn render(&self, prompt: &FilledPrompt) -> Result<String, LlamaError> {
        match prompt {
            FilledPrompt::Text(t) => Ok(t.clone()),
            FilledPrompt::Chat {
                history,
                user,
                assistant_prefix,
            } => {
                let err = |reason: String| LlamaError::ChatTemplate {
                    path: self.path.clone(),
                    reason,
                };
                let messages: Vec<crate::chat::Message<'_>> = history
                    .iter()
                    .map(|t| crate::chat::Message {
                        role: t.role.as_str(),
                        content: &t.content,
                    })
                    .chain(std::iter::once(crate::chat::Message {
                        role: "user",
                        content: user,
                    }))
                    .collect();
                let mut text = self.render_messages(&messages, true).map_err(err)?;
                text.push_str(assistant_prefix);
                Ok(text)
            }
        }
    }

    /// The Jinja chat template stored in the GGUF file.
    pub fn chat_template(&self) -> Result<String, LlamaError> {
        self.inner
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok())
            .ok_or_else(|| LlamaError::ChatTemplate {
                path: self.path.clone(),
                reason: "the model file has no chat template".into(),
            })
    }

    /// Renders chat `messages` through the model's own template (minijinja). A leading
    /// BOS text is dropped when tokenisation adds BOS anyway, so it is never doubled.
    pub fn render_messages(
        &self,
        messages: &[crate::chat::Message<'_>],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = self
            .chat_template()
            .map_err(|_| "the model has none".to_string())?;
        let vocab = self.inner.vocab();
        let special = |t: LlamaToken| {
            vocab
                .text(t)
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (bos, eos) = (special(vocab.bos()), special(vocab.eos()));
        let text =
            crate::chat::render_chat(&template, messages, add_generation_prompt, &bos, &eos)?;
        match text.strip_prefix(bos.as_str()) {
            Some(rest) if !bos.is_empty() && vocab.should_add_bos() => Ok(rest.to_string()),
            _ => Ok(text),
        }
    }

    /// Tokenises rendered prompt text: BOS as the model wants it, special tokens parsed.
    pub fn tokenize_prompt(&self, text: &str) -> Vec<LlamaToken> {
        self.inner.vocab().tokenize(text.as_bytes(), true, true)
    }

    /// Tokenises response text: no BOS, special-token text kept as plain text.
    pub fn tokenize_response(&self, text: &str) -> Vec<LlamaToken> {
        self.inner.vocab().tokenize(text.as_bytes(), false, false)
    }

    /// Checks that prompt + `max_new` tokens fit the trained context.
    #[allow(clippy::missing_errors_doc)]
    pub fn check_fits(&self, prompt_tokens: usize, max_new: usize) -> Result<(), LlamaError> {
        let n_ctx_train = self.n_ctx_train();
        if prompt_tokens + max_new > n_ctx_train as usize {
            return Err(LlamaError::PromptTooLong {
                path: self.path.clone(),
                prompt_tokens,
                max_new,
                n_ctx_train,
            });
        }
        Ok(())
    }
}

pub(crate) fn check_file(path: &Path) -> Result<(), LlamaError> {
    use std::io::Read;
    if !path.exists() {
        return Err(LlamaError::NotFound(path.to_path_buf()));
    }
    let unreadable = |e: std::io::Error| LlamaError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    if path.is_dir() {
        return Err(LlamaError::Unreadable {
            path: path.to_path_buf(),
            reason: "it is a directory".into(),
        });
    }
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(LlamaError::NotGguf(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(LlamaError::NotGguf(path.to_path_buf()))
        }
        Err(e) => Err(unreadable(e)),
    }
}

/// Tokens llama.cpp computes in one pass at most (a longer batch is split). Its compute
/// buffer holds the logits of that many tokens: x a 151k-token vocabulary, 77 MB at 128
/// against 311 MB at 512, per context. CPU matrix throughput is flat from about 64
/// tokens on, so a smaller pass costs no speed.
pub(crate) const MAX_UBATCH: u32 = 128;

/// A llama.cpp context together with the model it borrows.
pub(crate) struct ModelContext {
    // Field order matters: the context is dropped before the model it points into.
    pub(crate) ctx: LlamaContext<'static>,
    pub(crate) model: Arc<Model>,
    pub(crate) n_ctx: u32,
    pub(crate) n_seq: u32,
}

impl ModelContext {
    pub(crate) fn new(
        model: Arc<Model>,
        n_ctx: u32,
        n_seq: u32,
        n_batch: u32,
        threads: i32,
    ) -> Result<ModelContext, LlamaError> {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx.max(64)))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch.min(MAX_UBATCH))
            .with_n_seq_max(n_seq)
            .with_kv_unified(true)
            .with_swa_full(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .inner
            .new_context(backend()?, params)
            .map_err(|_| LlamaError::Context {
                path: model.path.clone(),
                n_ctx,
            })?;
        // SAFETY: the context borrows the model, which lives on the heap inside the Arc we
        // keep in the same struct; `ctx` is declared first, so it is dropped first, and the
        // model is never moved or mutated while the context exists.
        let ctx = unsafe { std::mem::transmute::<LlamaContext<'_>, LlamaContext<'static>>(ctx) };
        Ok(ModelContext {
            ctx,
            model,
            n_ctx,
            n_seq,
        })
    }

    /// Reuses `slot` if it fits `n_ctx` and `n_seq` (its cache cleared), else makes a new
    /// context there; returns it.
    pub(crate) fn ensure<'a>(
        slot: &'a mut Option<ModelContext>,
        model: &Arc<Model>,
        n_ctx: u32,
        n_seq: u32,
        n_batch: u32,
        threads: i32,
    ) -> Result<&'a mut ModelContext, LlamaError> {
        let fits = slot
            .as_ref()
            .is_some_and(|e| e.n_ctx >= n_ctx && e.n_seq >= n_seq);
        if fits {
            if let Some(e) = slot.as_mut() {
                e.ctx.clear_kv_cache();
            }
        } else {
            *slot = None; // free the old one first
            *slot = Some(ModelContext::new(
                model.clone(),
                n_ctx,
                n_seq,
                n_batch,
                threads,
            )?);
        }
        slot.as_mut().ok_or(LlamaError::Usage("no context"))
    }
}
