//! `w2s trace`: draw a trace file of `w2s generate --trace` as an HTML page.

use std::path::PathBuf;

use clap::Args;
use w2s_eval::draw_traces;

use crate::fail::Fail;

/// Arguments of `w2s trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// A trace file written by `w2s generate --trace FILE`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where to write the page (one self-contained HTML file).
    #[arg(long, value_name = "OUT.html")]
    pub html: PathBuf,
    /// Score every candidate's text so far with this gold and show it beside the guide
    /// value: `vader` (the trace page computes only cheap golds).
    #[arg(long, value_name = "GOLD")]
    pub gold: Option<String>,
}

pub fn run(args: TraceArgs) -> Result<(), Fail> {
    let candidates = draw_traces(&args.file, &args.html, args.gold.as_deref())?;
    eprintln!("wrote {} ({candidates} candidates)", args.html.display());
    Ok(())
}
