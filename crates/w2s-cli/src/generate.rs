//! `w2s generate`: run the search for one prompt or a JSONL set.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use w2s_core::SearchOutput;

use w2s_engine::{
    can_pool, in_flight, parallel_for, search_pooled, Engine, EngineError, RunSettings,
};
use w2s_eval::{read_jsonl, PromptItem, TraceRecord};

use crate::fail::{usage, Fail};

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
    /// With --prompts: searches in flight at once, each with small models of its own over
    /// the shared models (a local strong model samples the rows of all of them in one
    /// decode); output stays in the file's order [default: 1 when the strong model is
    /// local, 8 when it is remote; at most 64].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Record every step of each search (candidates, their values, kept or pruned) as one
    /// JSON line per prompt in FILE; `w2s trace FILE --html OUT` draws it.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

pub fn run(args: GenerateArgs) -> Result<(), Fail> {
    let mut settings = args.run.check()?;
    // A trace file that cannot be written fails before any model is loaded.
    let mut trace = match &args.trace {
        None => None,
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| {
                usage(format!(
                    "cannot write the trace file {}: {e}",
                    path.display()
                ))
            })?,
        )),
    };
    if trace.is_some() {
        settings.search = settings.search.clone().with_trace(true);
    }
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
    let shape = Shape {
        json: args.json,
        many: args.prompts.is_some(),
        verbose: args.verbose,
    };
    let parallel = parallel_for(&settings.engine, args.parallel)?.min(items.len());
    let mut engines = Engine::build(&settings.engine)?.replicas(parallel)?;
    let mut out = std::io::stdout().lock();
    // Results come back as they finish; they are printed in the file's order.
    let mut finished: BTreeMap<usize, SearchOutput> = BTreeMap::new();
    let mut next = 0;
    let mut failed: Option<Fail> = None;
    let mut on_result = |i: usize, result: Result<SearchOutput, EngineError>| {
        match result {
            Ok(r) => {
                finished.insert(i, r);
            }
            Err(e) => {
                failed = Some(e.into());
                return ControlFlow::Break(());
            }
        }
        while let Some(result) = finished.remove(&next) {
            let item = &items[next];
            let traced = trace.as_mut().and_then(|file| {
                TraceRecord::new(&item.id, &item.prompt, &settings.search, &result)
                    .map(|r| r.write(file))
            });
            if let Some(Err(e)) = traced {
                failed = Some(e.into());
                return ControlFlow::Break(());
            }
            if let Err(e) = shape.print(&mut out, item, &settings.search, &result) {
                failed = Some(e);
                return ControlFlow::Break(());
            }
            next += 1;
        }
        ControlFlow::Continue(())
    };
    if parallel > 1 && can_pool(&engines[0]) {
        // A local strong model: the searches in flight share one context of it, their
        // rows sampled in one decode per token (faster than workers taking turns).
        let jobs: Vec<_> = items
            .iter()
            .map(|item| (settings.search.clone(), item.prompt.clone()))
            .collect();
        search_pooled(&mut engines, &jobs, None, &mut |_, _| true, &mut on_result)?;
    } else {
        in_flight(
            &mut engines,
            items.iter().enumerate(),
            |engine, (i, item)| (i, engine.search(&settings.search, &item.prompt)),
            |(i, result)| on_result(i, result),
        );
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How each result is printed.
struct Shape {
    json: bool,
    /// Prompts from a file: each text line starts with the prompt's id.
    many: bool,
    verbose: bool,
}

impl Shape {
    fn print(
        &self,
        out: &mut impl Write,
        item: &PromptItem,
        config: &w2s_core::SearchConfig,
        result: &SearchOutput,
    ) -> Result<(), Fail> {
        if self.json {
            let line = to_json(item, config, result);
            writeln!(out, "{line}")?;
        } else if self.many {
            writeln!(out, "[{}] {}", item.id, result.best().text)?;
        } else {
            writeln!(out, "{}", result.best().text)?;
        }
        out.flush()?;
        if self.verbose && !self.json {
            eprintln!("{}", summary(result));
        }
        Ok(())
    }
}

/// One line: guide value, log-probs, strong tokens and where the time went.
pub fn summary(r: &SearchOutput) -> String {
    let (b, s) = (r.best(), &r.stats);
    // A weighted guide or a custom one has no single pair to show.
    let pair = if b.tuned_logprob.is_nan() {
        String::new()
    } else {
        format!(
            " = tuned {:.2} - untuned {:.2}",
            b.tuned_logprob, b.untuned_logprob
        )
    };
    format!(
        "[guide value {:.2}{pair} | {} strong tokens sampled, {:.1} tok/s | \
         {:.2} s: strong {:.2} s, tuned {:.2} s, untuned {:.2} s]",
        b.score,
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
