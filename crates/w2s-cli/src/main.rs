//! `w2s`: weak-to-strong search from the command line.

mod bench;
mod eval;
mod fail;
mod generate;
mod guide_check;
mod quantize;
mod serve;
mod trace;

use clap::{Parser, Subcommand};

/// Align a large language model at inference time by weak-to-strong search.
#[derive(Debug, Parser)]
#[command(name = "w2s", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a response chosen by chunk-level beam search (or Best-of-N, or sampling).
    Generate(generate::GenerateArgs),
    /// Measure each method against raw batched sampling: wall time, token counts, split,
    /// peak memory.
    Bench(bench::BenchArgs),
    /// Serve aligned generations over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Compare methods on a prompt set with gold rewards; resumable; writes a report.
    Eval(eval::EvalArgs),
    /// Redraw an eval directory's report, summary and plots from its results.jsonl.
    Report(eval::ReportArgs),
    /// Check candidate guide pairs against a run's gold: correlation, pair accuracy and
    /// the gold by guide-value bin.
    GuideCheck(guide_check::GuideCheckArgs),
    /// Draw a trace file of `w2s generate --trace` as an HTML page.
    Trace(trace::TraceArgs),
    /// Copy a GGUF model with its weights in another type (Q8_0 scores several times
    /// faster than Q4_1 on CPUs).
    Quantize(quantize::QuantizeArgs),
}

fn main() {
    let cli = Cli::parse();
    // A server logs its own notices (warnings, ignored request fields) unless told
    // otherwise; the other commands log only with W2S_LOG.
    let filter = std::env::var("W2S_LOG").ok().or_else(|| {
        matches!(cli.command, Command::Serve(_)).then(|| "warn,w2s_server=info".to_string())
    });
    if let Some(filter) = filter {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Report(args) => eval::report(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Trace(args) => trace::run(args),
        Command::GuideCheck(args) => guide_check::run(args),
    };
    if let Err(fail) = result {
        eprintln!("error: {}", fail.message);
        std::process::exit(fail.code);
    }
}
