//! `w2s bench`: what each method costs next to the raw batched sampling it is built on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use w2s_core::{
    ExtendRequest, Method, ProposalSetup, Proposer, Role, RowRng, SearchConfig, SearchOutput,
};
use w2s_engine::{Checked, Engine, LocalModels, RunSettings, Strong, ROLES};
use w2s_eval::{read_jsonl, PromptItem};
use w2s_llama::{raw_batch_sample, RawBatch, ScorerProfile};

use crate::fail::{usage, Fail};

mod inflight;
mod tables;
use tables::print_tables;

const DEFAULT_PROMPT: &str = "I rented this movie last weekend and";

/// Arguments of `w2s bench`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct BenchArgs {
    #[command(flatten)]
    pub run: RunSettings,
    /// Methods to measure, comma-separated.
    #[arg(long, default_value = "sample,bon:16,cbs:4x4x5", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// A prompt (default: a movie-review opening).
    #[arg(long, conflicts_with = "prompts")]
    pub prompt: Option<String>,
    /// A JSONL prompts file; the first `--limit` prompts are used.
    #[arg(long, value_name = "FILE.jsonl")]
    pub prompts: Option<PathBuf>,
    /// Prompts to use from --prompts.
    #[arg(long, default_value_t = 3)]
    pub limit: usize,
    /// Repeats of every measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Also measure how CBS scales: W*K = 4, 16, 64 at the run's token count, and 50,
    /// 200, 800 new tokens at W*K = 4 (one prompt, one repeat each).
    #[arg(long)]
    pub scales: bool,
    /// Instead: N searches in flight as N workers against pooled decodes on one context
    /// (e.g. 1,4,8), with the first method over --limit searches (the prompts cycled).
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub in_flight: Vec<usize>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
struct MethodReport {
    method: String,
    rows: usize,
    runs: usize,
    wall_s_median: f64,
    wall_s_min: f64,
    wall_s_max: f64,
    raw_s_median: f64,
    ratio_to_raw: f64,
    strong_ratio_to_raw: f64,
    strong_tokens: f64,
    strong_tokens_per_s: f64,
    guide_tokens_evaluated: f64,
    tuned_tokens_evaluated: f64,
    untuned_tokens_evaluated: f64,
    reencode_tokens_estimate: f64,
    strong_s: f64,
    tuned_s: f64,
    untuned_s: f64,
    bookkeeping_s: f64,
    peak_rss_mb: f64,
    /// HTTP requests to remote engines per search (0 with every model local).
    http_requests: f64,
    /// HTTP requests of the raw baseline per run (remote strong model).
    raw_http_requests: f64,
    /// Where each local small model's time went, per search (tuned, untuned).
    small_split: Vec<SmallSplit>,
}

/// One local small model's time per search, split by step (means over runs).
#[derive(Debug, Default, Clone, Serialize)]
struct SmallSplit {
    role: &'static str,
    setup_s: f64,
    tokenize_s: f64,
    decode_s: f64,
    log_softmax_s: f64,
    copies_s: f64,
    cache_s: f64,
    decodes: f64,
    tokens_per_decode: f64,
}

#[derive(Debug, Serialize)]
struct ScaleRow {
    method: String,
    rows: usize,
    max_new_tokens: usize,
    wall_s: f64,
    strong_tokens: usize,
    ms_per_strong_token: f64,
    strong_s: f64,
    guide_s: f64,
    peak_rss_mb: f64,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    /// The strong model: a file or URL#MODEL.
    strong: String,
    /// What "raw" is: llama.cpp's batched loop, or the engine's own n-sample requests.
    raw_baseline: &'static str,
    threads: usize,
    max_new_tokens: usize,
    prompts: usize,
    repeats: usize,
    models_mb: f64,
    kv_budget_mb: BTreeMap<String, f64>,
    methods: Vec<MethodReport>,
    scales: Vec<ScaleRow>,
}

pub fn run(args: BenchArgs) -> Result<(), Fail> {
    if args.repeats == 0 || args.limit == 0 {
        return Err(usage("--repeats and --limit must be at least 1"));
    }
    let settings = args.run.clone().check()?;
    let methods: Vec<Method> = args
        .methods
        .iter()
        .map(|m| Method::parse(m))
        .collect::<Result<_, _>>()?;
    let items = match (&args.prompt, &args.prompts) {
        (_, Some(path)) => read_jsonl(path)?.into_iter().take(args.limit).collect(),
        (p, None) => vec![PromptItem {
            id: "prompt".into(),
            prompt: p.clone().unwrap_or_else(|| DEFAULT_PROMPT.into()),
        }],
    };
    if !args.in_flight.is_empty() {
        return inflight::run(
            &args.in_flight,
            &settings,
            methods[0],
            &items,
            args.limit,
            args.repeats,
            args.json,
        );
    }
    let mut models = Engine::build(&settings.engine)?;
    let t = settings.search.max_new_tokens();

    let mut samples: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    // Warm-up, untimed: the raw loop and every method once on the first prompt, so that
    // the page cache, the CPU's clocks and llama.cpp's buffers are warm before anything
    // is timed (a cold first run would flatter whichever is measured second).
    for &m in &methods {
        measure_raw(&mut models, &settings, &items[0].prompt, m, t)?;
        measured(
            &mut models,
            &with_method(&settings.search, m, t)?,
            &items[0].prompt,
        )?;
    }
    eprintln!("warm-up done");
    for rep in 0..args.repeats {
        for item in &items {
            for &m in &methods {
                // The raw loop runs just before and just after each search, and the
                // search is compared with their mean: neither order nor a drift of the
                // machine's speed between runs can bias one side (a shared machine's
                // speed moves by 10% from one run to the next).
                let before = measure_raw(&mut models, &settings, &item.prompt, m, t)?;
                let config = with_method(&settings.search, m, t)?;
                let mut run = measured(&mut models, &config, &item.prompt)?;
                let after = measure_raw(&mut models, &settings, &item.prompt, m, t)?;
                run.raw = [before, after];
                eprintln!(
                    "rep {} {} {}: {:.2} s, {} strong tokens; raw {:.2} s / {:.2} s",
                    rep + 1,
                    item.id,
                    m,
                    run.out.stats.total_time.as_secs_f64(),
                    run.out.stats.strong_tokens_sampled,
                    before.0,
                    after.0
                );
                samples.entry(m.to_string()).or_default().push(run);
            }
        }
    }

    let reports: Vec<MethodReport> = methods
        .iter()
        .map(|&m| report(m, &samples[&m.to_string()], t))
        .collect();
    let scales = if args.scales {
        run_scales(&mut models, &settings, &items[0].prompt, t)?
    } else {
        Vec::new()
    };
    let report = BenchReport {
        strong: settings.engine.strong.describe(),
        raw_baseline: if models.local_model(Role::Strong).is_some() {
            "llama.cpp batched sampling loop (no search, no scoring; for CBS, W rows kept and copied K times every L tokens, as the search's cache holds them)"
        } else {
            "the engine's own n-sample requests for the same rows and tokens"
        },
        threads: settings.engine.threads,
        max_new_tokens: t,
        prompts: items.len(),
        repeats: args.repeats,
        models_mb: models_mb(&models),
        kv_budget_mb: kv_budget(&models, &methods, t),
        methods: reports,
        scales,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| usage(e.to_string()))?
        );
    } else {
        print_tables(&report);
    }
    Ok(())
}

fn with_method(base: &SearchConfig, method: Method, t: usize) -> Result<SearchConfig, Fail> {
    Ok(SearchConfig::new(
        method,
        t,
        base.beta(),
        base.seed(),
        *base.sampling(),
        base.stop().to_vec(),
    )?
    .with_chunk_end(base.chunk_end().filter(|_| method.chunk_len().is_some()))?)
}

/// Raw sampling of `rows` rows of `t` tokens with no search and no scoring: the wall
/// time and the HTTP requests it took.
fn measure_raw(
    models: &mut Engine,
    settings: &Checked,
    prompt: &str,
    method: Method,
    t: usize,
) -> Result<(f64, u64), Fail> {
    models.release_contexts();
    let rows = method.rows();
    let seed = settings.search.seed();
    models.with_strong(0, |strong| match strong {
        Strong::Local(p) => {
            let run = raw_batch_sample(
                p.model(),
                &settings.engine.strong.template,
                prompt,
                &RawBatch {
                    rows,
                    tokens: t,
                    sampling: *settings.search.sampling(),
                    seed,
                    threads: settings.engine.threads,
                    beams: method.chunk_len().map(|l| (method.successors(), l)),
                },
            )?;
            Ok((run.wall.as_secs_f64(), 0))
        }
        Strong::Remote(p) => {
            // One step of every row at once: the proposer sends one request with n = rows
            // (split where the engine caps n), as a user of the engine would.
            let before = p.requests_sent();
            let started = std::time::Instant::now();
            let remote = |source| {
                Fail::from(w2s_core::SearchError::Backend {
                    role: Role::Strong,
                    source,
                })
            };
            p.begin(&ProposalSetup {
                prompt,
                rows,
                max_new_tokens: t,
                sampling: settings.search.sampling(),
                stop: &[],
                chunk_end: None,
                logprobs: false,
            })
            .map_err(remote)?;
            let mut rngs: Vec<RowRng> = (0..rows as u64).map(|i| RowRng::new(seed, i)).collect();
            let mut reqs: Vec<ExtendRequest<'_>> = rngs
                .iter_mut()
                .enumerate()
                .map(|(row, rng)| ExtendRequest {
                    row,
                    max_tokens: t,
                    rng,
                })
                .collect();
            p.extend(&mut reqs).map_err(remote)?;
            Ok((started.elapsed().as_secs_f64(), p.requests_sent() - before))
        }
    })
}

/// One measured search.
struct Run {
    out: SearchOutput,
    /// Peak resident memory (MB).
    rss: f64,
    /// HTTP requests sent.
    requests: u64,
    /// The local small models' profiles (tuned, untuned).
    small: [Option<ScorerProfile>; 2],
    /// The raw loop just before and just after the search: (wall s, HTTP requests).
    raw: [(f64, u64); 2],
}

impl Run {
    /// The raw loop's mean wall time around this search.
    fn raw_s(&self) -> f64 {
        (self.raw[0].0 + self.raw[1].0) / 2.0
    }
}

/// One search with fresh contexts and the peak resident memory it reached (MB).
fn measured(models: &mut Engine, config: &SearchConfig, prompt: &str) -> Result<Run, Fail> {
    models.release_contexts();
    let before: u64 = models.requests_sent().iter().sum();
    reset_peak_rss();
    let out = models.search(config, prompt)?;
    let requests = models.requests_sent().iter().sum::<u64>() - before;
    Ok(Run {
        out,
        rss: peak_rss_mb(),
        requests,
        small: models.scorer_profiles(),
        raw: [(f64::NAN, 0); 2],
    })
}

/// The mean split of each local small model over `runs`.
fn small_splits(runs: &[Run]) -> Vec<SmallSplit> {
    ["tuned", "untuned"]
        .iter()
        .enumerate()
        .filter_map(|(i, &role)| {
            let ps: Vec<ScorerProfile> = runs.iter().filter_map(|r| r.small[i]).collect();
            if ps.is_empty() {
                return None;
            }
            let n = ps.len() as f64;
            let mean = |f: &dyn Fn(&ScorerProfile) -> f64| ps.iter().map(f).sum::<f64>() / n;
            let tokens = runs
                .iter()
                .map(|r| {
                    let s = &r.out.stats;
                    [s.tuned_tokens_evaluated, s.untuned_tokens_evaluated][i] as f64
                })
                .sum::<f64>()
                / runs.len() as f64;
            let decodes = mean(&|p| p.decodes as f64);
            Some(SmallSplit {
                role,
                setup_s: mean(&|p| p.setup.as_secs_f64()),
                tokenize_s: mean(&|p| p.tokenize.as_secs_f64()),
                decode_s: mean(&|p| p.decode.as_secs_f64()),
                log_softmax_s: mean(&|p| p.log_softmax.as_secs_f64()),
                copies_s: mean(&|p| p.copies.as_secs_f64()),
                cache_s: mean(&|p| p.cache.as_secs_f64()),
                decodes,
                tokens_per_decode: tokens / decodes.max(1.0),
            })
        })
        .collect()
}

fn report(m: Method, runs: &[Run], t: usize) -> MethodReport {
    let raw_walls: Vec<f64> = runs.iter().flat_map(|r| r.raw.map(|x| x.0)).collect();
    let raw_requests = runs
        .iter()
        .flat_map(|r| r.raw.map(|x| x.1 as f64))
        .sum::<f64>()
        / raw_walls.len().max(1) as f64;
    // Each search against the raw runs around it; the median of those ratios.
    let ratio = |f: &dyn Fn(&SearchOutput) -> f64| {
        median(
            &runs
                .iter()
                .map(|r| f(&r.out) / r.raw_s())
                .collect::<Vec<_>>(),
        )
    };
    let walls: Vec<f64> = runs
        .iter()
        .map(|r| r.out.stats.total_time.as_secs_f64())
        .collect();
    let mean = |f: &dyn Fn(&SearchOutput) -> f64| -> f64 {
        runs.iter().map(|r| f(&r.out)).sum::<f64>() / runs.len() as f64
    };
    let secs = |d: Duration| d.as_secs_f64();
    let wall = median(&walls);
    let strong_s = mean(&|o| secs(o.stats.strong_time));
    let tuned_s = mean(&|o| secs(o.stats.tuned_time));
    let untuned_s = mean(&|o| secs(o.stats.untuned_time));
    let total = mean(&|o| secs(o.stats.total_time));
    let strong_tokens = mean(&|o| o.stats.strong_tokens_sampled as f64);
    let tuned_tok = mean(&|o| o.stats.tuned_tokens_evaluated as f64);
    let untuned_tok = mean(&|o| o.stats.untuned_tokens_evaluated as f64);
    // The authors' code re-encodes every row's whole response at every chunk:
    // about W*K * T * (T/L) / 2 small-model tokens per model.
    let chunks = m
        .chunk_len()
        .map_or(1.0, |l| (t as f64 / l as f64).max(1.0));
    let reencode = m.rows() as f64 * t as f64 * chunks.max(2.0) / 2.0;
    MethodReport {
        method: m.to_string(),
        rows: m.rows(),
        runs: runs.len(),
        wall_s_median: wall,
        wall_s_min: walls.iter().copied().fold(f64::INFINITY, f64::min),
        wall_s_max: walls.iter().copied().fold(0.0, f64::max),
        raw_s_median: median(&raw_walls),
        ratio_to_raw: ratio(&|o| secs(o.stats.total_time)),
        strong_ratio_to_raw: ratio(&|o| secs(o.stats.strong_time)),
        strong_tokens,
        strong_tokens_per_s: strong_tokens / strong_s.max(1e-9),
        guide_tokens_evaluated: tuned_tok + untuned_tok,
        tuned_tokens_evaluated: tuned_tok,
        untuned_tokens_evaluated: untuned_tok,
        reencode_tokens_estimate: reencode,
        strong_s,
        tuned_s,
        untuned_s,
        bookkeeping_s: (total - strong_s - tuned_s - untuned_s).max(0.0),
        peak_rss_mb: runs.iter().map(|r| r.rss).fold(0.0, f64::max),
        http_requests: runs.iter().map(|r| r.requests as f64).sum::<f64>() / runs.len() as f64,
        raw_http_requests: raw_requests,
        small_split: small_splits(runs),
    }
}

fn run_scales(
    models: &mut Engine,
    settings: &Checked,
    prompt: &str,
    t: usize,
) -> Result<Vec<ScaleRow>, Fail> {
    let mut plan = vec![
        (Method::Cbs { w: 2, k: 2, l: 5 }, t),
        (Method::Cbs { w: 4, k: 4, l: 5 }, t),
        (Method::Cbs { w: 8, k: 8, l: 5 }, t),
    ];
    for tokens in [50, 200, 800] {
        if tokens != t {
            plan.push((Method::Cbs { w: 2, k: 2, l: 5 }, tokens));
        }
    }
    let mut rows = Vec::new();
    for (m, tokens) in plan {
        let config = with_method(&settings.search, m, tokens)?;
        let Run { out, rss, .. } = measured(models, &config, prompt)?;
        let s = &out.stats;
        eprintln!("scale {m} T={tokens}: {:.2} s", s.total_time.as_secs_f64());
        rows.push(ScaleRow {
            method: m.to_string(),
            rows: m.rows(),
            max_new_tokens: tokens,
            wall_s: s.total_time.as_secs_f64(),
            strong_tokens: s.strong_tokens_sampled,
            ms_per_strong_token: 1000.0 * s.total_time.as_secs_f64()
                / s.strong_tokens_sampled.max(1) as f64,
            strong_s: s.strong_time.as_secs_f64(),
            guide_s: (s.tuned_time + s.untuned_time).as_secs_f64(),
            peak_rss_mb: rss,
        });
    }
    Ok(rows)
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Size of the local model files (each file once), in MB.
fn models_mb(models: &Engine) -> f64 {
    let mut files: Vec<(&std::path::Path, u64)> = ROLES
        .iter()
        .filter_map(|r| models.local_model(*r))
        .map(|m| (m.path(), m.file_size()))
        .collect();
    files.sort();
    files.dedup();
    files.iter().map(|(_, b)| *b as f64).sum::<f64>() / 1e6
}

/// KV cache each method needs in this process: the local strong model's prompt + W*K*T
/// tokens, each local small model's prompt + W*K*1.5T tokens (as the contexts are
/// sized), in MB.
fn kv_budget(models: &Engine, methods: &[Method], t: usize) -> BTreeMap<String, f64> {
    let per_token = |r: Role| {
        models
            .local_model(r)
            .map_or(0.0, |m| m.kv_bytes_per_token() as f64)
    };
    let strong = per_token(Role::Strong);
    let small = per_token(Role::Tuned) + per_token(Role::Untuned);
    methods
        .iter()
        .map(|m| {
            let rows = m.rows() as f64;
            let bytes = strong * rows * t as f64 + small * rows * (1.5 * t as f64 + 16.0);
            (m.to_string(), bytes / 1e6)
        })
        .collect()
}

fn reset_peak_rss() {
    // Linux: writing 5 resets the peak resident set size (VmHWM) to the current size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
