//! Rewriting a GGUF file's weights in another type, for speed on a given CPU.
//!
//! llama.cpp's CPU backend multiplies batches of tokens with blocked kernels only for some
//! weight types (on x86: F16, BF16, Q8_0, Q4_0, Q5_0, IQ4_NL, and repacked Q4_K); other
//! types, such as Q4_1, take one dot product at a time and score batches several times
//! slower. Rewriting a small model in Q8_0 changes its weights by at most half a Q8_0 step
//! (1/254 of each block's largest weight), a small fraction of the 4-bit file's own error.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::error::LlamaError;

/// Weight types a file can be rewritten in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// 8-bit blocks of 32 with one scale.
    Q8_0,
    /// 4-bit blocks of 32 with one scale.
    Q4_0,
    /// 16-bit floats.
    F16,
}

impl WeightType {
    /// Parses `q8_0`, `q4_0` or `f16`.
    pub fn parse(s: &str) -> Result<WeightType, String> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" => Ok(WeightType::Q8_0),
            "q4_0" => Ok(WeightType::Q4_0),
            "f16" => Ok(WeightType::F16),
            other => Err(format!(
                "unknown weight type {other:?}: use q8_0, q4_0 or f16"
            )),
        }
    }

    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        match self {
            WeightType::Q8_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
            WeightType::Q4_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_0,
            WeightType::F16 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_F16,
        }
    }
}

/// Writes `input`'s model to `output` with its weights in `to` (the output and embedding
/// tensors too), using `threads` CPU threads. The file is written beside `output` under
/// a `.partial` name of this process's own and renamed when complete, so an interrupted
/// run leaves no model that looks whole, and two runs writing the same output at once
/// both succeed (the later rename replaces an identical file).
pub fn requantize(
    input: &Path,
    output: &Path,
    to: WeightType,
    threads: usize,
) -> Result<(), LlamaError> {
    crate::model::check_file(input)?;
    crate::model::backend()?;
    if output.exists() && std::fs::canonicalize(output).ok() == std::fs::canonicalize(input).ok() {
        return Err(LlamaError::Usage("the output would overwrite the input"));
    }
    let c = |p: &Path| {
        CString::new(p.to_string_lossy().as_bytes())
            .map_err(|_| LlamaError::Usage("a path holds a NUL byte"))
    };
    let mut partial = output.as_os_str().to_owned();
    partial.push(format!(".partial.{}", std::process::id()));
    let partial = std::path::PathBuf::from(partial);
    let (inp, out) = (c(input)?, c(&partial)?);
    // SAFETY: the default parameters are plain data; the paths are valid C strings that
    // outlive the call.
    let code = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.nthread = threads.max(1) as i32;
        params.ftype = to.ftype();
        params.allow_requantize = true;
        params.quantize_output_tensor = true;
        params.pure_ = true;
        llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params)
    };
    if code != 0 {
        let _ = std::fs::remove_file(&partial);
        return Err(LlamaError::Unreadable {
            path: input.to_path_buf(),
            reason: format!("llama.cpp could not rewrite it (code {code})"),
        });
    }
    std::fs::rename(&partial, output).map_err(|e| LlamaError::Unreadable {
        path: output.to_path_buf(),
        reason: format!("cannot move the finished copy into place: {e}"),
    })
}

/// File types (`general.file_type`) whose weights llama.cpp's x86 CPU backend multiplies
/// one dot product at a time, however large the batch: Q4_1 and Q5_1 (measured: a guide in
/// Q4_1 scores a CBS batch 1.5x slower than its Q8_0 copy).
const SLOW_ON_CPU: [(u32, &str); 2] = [
    (llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_1, "Q4_1"),
    (llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q5_1, "Q5_1"),
];

/// The name of `path`'s weight type where it has no blocked CPU kernel on this machine
/// (x86; other CPUs have other kernels and are left alone), `None` for every other file.
pub fn slow_weight_type(path: &Path) -> Option<&'static str> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let gguf = llama_cpp_2::gguf::GgufContext::from_file(path)?;
    let i = gguf.find_key("general.file_type");
    if i < 0 || gguf.kv_type(i) != llama_cpp_sys_2::GGUF_TYPE_UINT32 {
        return None;
    }
    let ftype = gguf.val_u32(i);
    SLOW_ON_CPU
        .iter()
        .find(|(t, _)| *t == ftype)
        .map(|(_, name)| *name)
}

/// The file a guide model is best scored from on this CPU: `path` itself, or, where its
/// weight type has no fast kernel ([`slow_weight_type`]), a Q8_0 copy made once under
/// `cache` (named by the file's name, size and modification time, so a changed file gets a
/// new copy) and reused after. Q8_0 keeps more than the 4- and 5-bit types hold: the copy
/// moves guide values by about as much as an F16 copy of the same weights does
/// (docs/performance.md). Where the copy cannot be made (a read-only cache, a full disk),
/// the file is used as it is, with a warning.
pub fn fast_guide(path: &Path, cache: &Path, threads: usize) -> PathBuf {
    let Some(slow) = slow_weight_type(path) else {
        return path.to_path_buf();
    };
    let copy = cache.join(copy_name(path));
    if copy.is_file() {
        tracing::debug!(
            model = %path.display(),
            copy = %copy.display(),
            "scoring with the Q8_0 copy of this {slow} guide (--keep-guide-weights: the file as it is)"
        );
        return copy;
    }
    let made = std::fs::create_dir_all(cache)
        .map_err(|e| LlamaError::Unreadable {
            path: cache.to_path_buf(),
            reason: e.to_string(),
        })
        .and_then(|()| requantize(path, &copy, WeightType::Q8_0, threads));
    match made {
        Ok(()) => {
            tracing::info!(
                model = %path.display(),
                copy = %copy.display(),
                "this guide's {slow} weights have no fast kernel on this CPU: made a Q8_0 copy to score with, once (--keep-guide-weights: the file as it is)"
            );
            copy
        }
        Err(e) => {
            tracing::warn!(
                model = %path.display(),
                "scoring this {slow} guide as it is (slower): no Q8_0 copy could be made: {e}"
            );
            path.to_path_buf()
        }
    }
}

/// The file a local guide model is scored from under `options`: its copy of
/// [`fast_guide`] under the models folder's `fast/` (made with `threads`), unless the
/// options keep guide weights as they are or offload the model to a GPU (whose kernels
/// take every type).
pub fn guide_file(path: &Path, options: crate::LoadOptions, threads: usize) -> PathBuf {
    if options.keep_guide_weights || options.gpu_layers > 0 {
        return path.to_path_buf();
    }
    fast_guide(path, &crate::models_dir().join("fast"), threads)
}

/// `NAME-PATHHASH-SIZE-MTIME.q8_0.gguf` for `path` (FNV-1a of its full path: two files of
/// one name in two folders get two copies).
fn copy_name(path: &Path) -> String {
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let hash = full
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let stem = path
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("{stem}-{:08x}-{size}-{mtime}.q8_0.gguf", hash as u32)
}
