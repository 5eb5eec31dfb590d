//! `w2s`: weak-to-strong search from the command line.

mod backends;
mod fail;
mod generate;
mod prompts;
mod settings;

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
}

fn main() {
    if let Ok(filter) = std::env::var("W2S_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
    };
    if let Err(fail) = result {
        eprintln!("error: {}", fail.message);
        std::process::exit(fail.code);
    }
}
