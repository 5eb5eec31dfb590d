//! `w2s trace`: draw a trace file of `w2s generate --trace` as an HTML page.

use std::path::PathBuf;

use clap::Args;
use w2s_eval::{read_traces, trace_page, write_page, Vader};

use crate::fail::{usage, Fail};

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
    let mut vader = match args.gold.as_deref() {
        None => None,
        Some("vader") => Some(Vader::new()),
        Some(other) => {
            return Err(usage(format!(
                "--gold {other}: the trace page scores candidates with vader only; \
                 use `w2s guide-check` for the judge"
            )))
        }
    };
    let records = read_traces(&args.file)?;
    let page = trace_page(
        &records,
        vader.as_mut().map(|v| v as &mut dyn w2s_core::GoldReward),
    )?;
    write_page(&args.html, &page)?;
    let candidates: usize = records
        .iter()
        .flat_map(|r| &r.trace.steps)
        .map(|s| s.rows.len())
        .sum();
    eprintln!(
        "wrote {} ({} searches, {candidates} candidates)",
        args.html.display(),
        records.len()
    );
    Ok(())
}
