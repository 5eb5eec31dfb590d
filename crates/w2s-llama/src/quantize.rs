//! Rewriting a GGUF file's weights in another type, for speed on a given CPU.
//!
//! llama.cpp's CPU backend multiplies batches of tokens with blocked kernels only for some
//! weight types (on x86: F16, BF16, Q8_0, Q4_0, Q5_0, IQ4_NL, and repacked Q4_K); other
//! types, such as Q4_1, take one dot product at a time and score batches several times
//! slower. Rewriting a small model in Q8_0 changes its weights by at most half a Q8_0 step
//! (1/254 of each block's largest weight), a small fraction of the 4-bit file's own error.

use std::ffi::CString;
use std::path::Path;

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
