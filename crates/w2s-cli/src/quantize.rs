//! `w2s quantize`: a copy of a GGUF model with its weights in a type that llama.cpp's CPU
//! backend multiplies in blocks (for guide models stored as Q4_1, which it does not).

use std::path::PathBuf;

use clap::Args;
use w2s_llama::{requantize, WeightType};

use crate::fail::{usage, Fail};

/// Arguments of `w2s quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The GGUF model to read.
    pub input: PathBuf,
    /// Where to write the copy (must not exist).
    pub output: PathBuf,
    /// Weight type of the copy: q8_0 (near-lossless from any 4- or 5-bit file), q4_0, f16.
    #[arg(long = "type", default_value = "q8_0", value_parser = WeightType::parse)]
    pub to: WeightType,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

pub fn run(args: QuantizeArgs) -> Result<(), Fail> {
    if args.output.exists() {
        return Err(usage(format!(
            "{} already exists; name a new file",
            args.output.display()
        )));
    }
    requantize(&args.input, &args.output, args.to, args.threads)?;
    let mb = std::fs::metadata(&args.output).map_or(0.0, |m| m.len() as f64 / 1e6);
    eprintln!("wrote {} ({mb:.0} MB)", args.output.display());
    Ok(())
}
