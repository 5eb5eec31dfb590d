//! `w2s generate`: run the search for one prompt or a JSONL set.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use w2s_core::SearchOutput;

use w2s_engine::{Engine, RunSettings};
use w2s_eval::{read_jsonl, PromptItem};

use crate::fail::Fail;

/// Arguments of `w2s generate`.
#[derive(Debug, Args)]
#[command(
    group = clap::ArgGroup::new("input").required(true).args(["prompt", "prompts"]),
    allow_negative_numbers = true
)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub run: RunSettings,
    /// The prompt (the text the response continues or answers).
    #[arg(long)]
    pub prompt: Option<String>,
    /// A JSONL file of prompts, one {"prompt": ..., "id": ...} object per line.
    #[arg(long, value_name = "FILE.jsonl")]
    pub prompts: Option<PathBuf>,
    /// Print JSON (one object per prompt) with every final beam, counters and timings.
    #[arg(long)]
    pub json: bool,
    /// After each plain response, print its guide value, counters and timings to stderr.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

pub fn run(args: GenerateArgs) -> Result<(), Fail> {
    let settings = args.run.check()?;
    let items = match (&args.prompt, &args.prompts) {
        (Some(p), _) => {
            if p.trim().is_empty() {
                return Err(w2s_core::ConfigError::EmptyPrompt.into());
            }
            vec![PromptItem {
                id: "prompt".into(),
                prompt: p.clone(),
            }]
        }
        (None, Some(path)) => read_jsonl(path)?,
        (None, None) => unreachable!("clap requires one of --prompt, --prompts"),
    };
    let mut engine = Engine::build(&settings.engine)?;
    let mut out = std::io::stdout().lock();
    for item in &items {
        let result = engine.search(&settings.search, &item.prompt)?;
        if args.json {
            let line = to_json(item, &settings.search, &result);
            writeln!(out, "{line}")?;
        } else if args.prompts.is_some() {
            writeln!(out, "[{}] {}", item.id, result.best().text)?;
        } else {
            writeln!(out, "{}", result.best().text)?;
        }
        out.flush()?;
        if args.verbose && !args.json {
            eprintln!("{}", summary(&result));
        }
    }
    Ok(())
}

/// One line: guide value, log-probs, strong tokens and where the time went.
pub fn summary(r: &SearchOutput) -> String {
    let (b, s) = (r.best(), &r.stats);
    format!(
        "[guide value {:.2} = tuned {:.2} - untuned {:.2} | {} strong tokens sampled, {:.1} tok/s | \
         {:.2} s: strong {:.2} s, tuned {:.2} s, untuned {:.2} s]",
        b.score,
        b.tuned_logprob,
        b.untuned_logprob,
        s.strong_tokens_sampled,
        s.strong_tokens_sampled as f64 / s.strong_time.as_secs_f64().max(1e-9),
        s.total_time.as_secs_f64(),
        s.strong_time.as_secs_f64(),
        s.tuned_time.as_secs_f64(),
        s.untuned_time.as_secs_f64(),
    )
}

/// The JSON object printed for one prompt.
pub fn to_json(
    item: &PromptItem,
    config: &w2s_core::SearchConfig,
    r: &SearchOutput,
) -> serde_json::Value {
    let s = &r.stats;
    let beams: Vec<_> = r
        .beams
        .iter()
        .map(|b| {
            json!({
                "text": b.text,
                "score": b.score,
                "tuned_logprob": b.tuned_logprob,
                "untuned_logprob": b.untuned_logprob,
                "ended": true,
                "finish": b.finish,
                "strong_tokens": b.strong_tokens,
            })
        })
        .collect();
    let strong_s = s.strong_time.as_secs_f64();
    json!({
        "id": item.id,
        "prompt": item.prompt,
        "method": config.method().to_string(),
        "seed": config.seed(),
        "text": r.best().text,
        "score": r.best().score,
        "beams": beams,
        "strong_tokens_sampled": s.strong_tokens_sampled,
        "chunks": s.chunks,
        "tuned_tokens_evaluated": s.tuned_tokens_evaluated,
        "untuned_tokens_evaluated": s.untuned_tokens_evaluated,
        "strong_tokens_per_s": if strong_s > 0.0 { s.strong_tokens_sampled as f64 / strong_s } else { 0.0 },
        "timings": {
            "strong_s": strong_s,
            "tuned_s": s.tuned_time.as_secs_f64(),
            "untuned_s": s.untuned_time.as_secs_f64(),
            "total_s": s.total_time.as_secs_f64(),
        },
    })
}
