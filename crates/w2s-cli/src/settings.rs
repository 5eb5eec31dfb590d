//! One set of run settings, read from flags and from a TOML config file (flags win),
//! then checked once into the library's types.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;
use w2s_core::{Method, PromptTemplate, SamplingParams, SearchConfig};

use crate::fail::{usage, Fail};

/// Model, template and search settings shared by the commands that run a search.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// TOML file with any of these settings (keys as the flags, with `_` for `-`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Strong model: a GGUF file, a name fetched by scripts/fetch-models, or a remote
    /// OpenAI-compatible endpoint URL#MODEL (e.g. http://127.0.0.1:8000/v1#my-model).
    #[arg(long, value_name = "FILE|NAME|URL#MODEL")]
    pub strong: Option<String>,
    /// Small tuned model (GGUF file, name or URL#MODEL).
    #[arg(long, value_name = "FILE|NAME|URL#MODEL")]
    pub tuned: Option<String>,
    /// Small untuned model (GGUF file, name or URL#MODEL); may be the tuned one with another template.
    #[arg(long, value_name = "FILE|NAME|URL#MODEL")]
    pub untuned: Option<String>,

    /// Strong model's prompt template, with {prompt}; `chat:USER||ASSISTANT` uses the
    /// model's chat template [default: {prompt}].
    #[arg(long, value_name = "T")]
    pub strong_template: Option<String>,
    /// Tuned model's prompt template [default: {prompt}].
    #[arg(long, value_name = "T")]
    pub tuned_template: Option<String>,
    /// Untuned model's prompt template [default: {prompt}].
    #[arg(long, value_name = "T")]
    pub untuned_template: Option<String>,

    /// Search method: cbs, bon, sample, or cbs:WxKxL / bon:N [default: cbs].
    #[arg(long, value_name = "M")]
    pub method: Option<String>,
    /// Beams kept (W) [default: 4].
    #[arg(short = 'w', long = "width", value_name = "W")]
    #[serde(alias = "width")]
    pub w: Option<usize>,
    /// Successors per beam (K) [default: 4].
    #[arg(short = 'k', long = "successors", value_name = "K")]
    #[serde(alias = "successors")]
    pub k: Option<usize>,
    /// Strong tokens per chunk (L) [default: 5].
    #[arg(short = 'l', long = "chunk-len", value_name = "L")]
    #[serde(alias = "chunk_len")]
    pub l: Option<usize>,
    /// Samples for Best-of-N [default: 16].
    #[arg(long, value_name = "N")]
    pub n: Option<usize>,
    /// Weight of the log-probability ratio [default: 1].
    #[arg(long)]
    pub beta: Option<f64>,
    /// New strong-model tokens per response at most [default: 50].
    #[arg(long, value_name = "T")]
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature, 0 = greedy [default: 0.7].
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Top-k, 0 = off [default: 50].
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Top-p in (0, 1] [default: 1.0].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// A string that ends a response (repeatable).
    #[arg(long = "stop", value_name = "S")]
    #[serde(default)]
    pub stop: Vec<String>,
    /// Random seed [default: 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// CPU threads for llama.cpp [default: number of cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Model layers to offload to the GPU (builds with the `cuda` feature) [default: 0].
    #[arg(long)]
    pub gpu_layers: Option<u32>,

    /// Remote models (config file only): `[models.strong]` etc., see w2s_remote::RemoteSpec.
    #[arg(skip)]
    #[serde(default)]
    pub models: Option<crate::backends::ModelTables>,
}

/// Settings after merging and checking.
#[derive(Debug, Clone)]
pub struct Checked {
    pub strong: PathBuf,
    pub tuned: PathBuf,
    pub untuned: PathBuf,
    pub strong_template: PromptTemplate,
    pub tuned_template: PromptTemplate,
    pub untuned_template: PromptTemplate,
    pub search: SearchConfig,
    pub threads: usize,
    pub gpu_layers: u32,
    pub remote: crate::backends::Remotes,
}

impl RunSettings {
    /// Flags override the config file's values.
    pub fn merged(self) -> Result<RunSettings, Fail> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = read_config(&path)?;
        macro_rules! pick {
            ($($f:ident),*) => { RunSettings { $($f: self.$f.or(file.$f),)*
                stop: if self.stop.is_empty() { file.stop } else { self.stop },
                models: self.models.or(file.models),
                config: self.config } };
        }
        Ok(pick!(
            strong,
            tuned,
            untuned,
            strong_template,
            tuned_template,
            untuned_template,
            method,
            w,
            k,
            l,
            n,
            beta,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            threads,
            gpu_layers
        ))
    }

    /// Checks everything into library types.
    pub fn check(self) -> Result<Checked, Fail> {
        let mut s = self.merged()?;
        let tables = s.models.clone().unwrap_or_default();
        let mut remote = crate::backends::Remotes::default();
        for (flag, table, ep, tmpl) in [
            (
                "strong",
                &tables.strong,
                &mut remote.strong,
                &mut s.strong_template,
            ),
            (
                "tuned",
                &tables.tuned,
                &mut remote.tuned,
                &mut s.tuned_template,
            ),
            (
                "untuned",
                &tables.untuned,
                &mut remote.untuned,
                &mut s.untuned_template,
            ),
        ] {
            let value = match flag {
                "strong" => &s.strong,
                "tuned" => &s.tuned,
                _ => &s.untuned,
            };
            let (e, t) = crate::backends::remote_role(value.as_deref(), table.as_ref(), flag)?;
            *ep = e;
            if tmpl.is_none() {
                *tmpl = t;
            }
        }
        let is_remote = [
            remote.strong.is_some(),
            remote.tuned.is_some(),
            remote.untuned.is_some(),
        ];
        let model = |v: &Option<String>, flag: &str| -> Result<PathBuf, Fail> {
            let role = ["strong", "tuned", "untuned"]
                .iter()
                .position(|r| *r == flag);
            if role.is_some_and(|i| is_remote[i]) {
                return Ok(PathBuf::new());
            }
            let spec = v.as_deref().ok_or_else(|| {
                usage(format!(
                    "no {flag} model: give --{flag} FILE|NAME or set {flag} = \"...\" in --config"
                ))
            })?;
            Ok(w2s_llama::resolve_model(spec))
        };
        let template = |v: &Option<String>, flag: &str| -> Result<PromptTemplate, Fail> {
            match v {
                None => Ok(PromptTemplate::bare()),
                Some(t) => PromptTemplate::new(t).map_err(|e| usage(format!("--{flag}: {e}"))),
            }
        };
        let mut method = match s.method.as_deref() {
            None => Method::default(),
            Some(m) => Method::parse(m)?,
        };
        // -w/-k/-l and --n adjust the method's numbers.
        match &mut method {
            Method::Cbs { w, k, l } => {
                *w = s.w.unwrap_or(*w);
                *k = s.k.unwrap_or(*k);
                *l = s.l.unwrap_or(*l);
            }
            Method::Bon { n } => *n = s.n.unwrap_or(*n),
            Method::Sample => {}
        }
        let sampling = SamplingParams::new(
            s.temperature.unwrap_or(0.7),
            s.top_k.unwrap_or(50),
            s.top_p.unwrap_or(1.0),
        )?;
        let search = SearchConfig::new(
            method,
            s.max_new_tokens.unwrap_or(50),
            s.beta.unwrap_or(1.0),
            s.seed.unwrap_or(1),
            sampling,
            s.stop.clone(),
        )?;
        let threads = match s.threads {
            Some(0) => return Err(usage("--threads must be at least 1")),
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Checked {
            strong: model(&s.strong, "strong")?,
            tuned: model(&s.tuned, "tuned")?,
            untuned: model(&s.untuned, "untuned")?,
            strong_template: template(&s.strong_template, "strong-template")?,
            tuned_template: template(&s.tuned_template, "tuned-template")?,
            untuned_template: template(&s.untuned_template, "untuned-template")?,
            search,
            threads,
            gpu_layers: s.gpu_layers.unwrap_or(0),
            remote,
        })
    }
}

fn read_config(path: &Path) -> Result<RunSettings, Fail> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        match line {
            Some(l) => usage(format!("config file {} line {l}: {msg}", path.display())),
            None => usage(format!("config file {}: {msg}", path.display())),
        }
    })
}

impl Checked {
    /// Refuses remote models for a command that runs local models only.
    pub fn require_local(&self, command: &str) -> Result<(), Fail> {
        let roles = [
            ("strong", self.remote.strong.is_some()),
            ("tuned", self.remote.tuned.is_some()),
            ("untuned", self.remote.untuned.is_some()),
        ];
        let remote: Vec<&str> = roles.iter().filter(|r| r.1).map(|r| r.0).collect();
        if remote.is_empty() {
            return Ok(());
        }
        Err(usage(format!(
            "`w2s {command}` runs local GGUF models only, but the {} model{} remote; \
             remote models work with `w2s generate`",
            remote.join(" and "),
            if remote.len() == 1 { " is" } else { "s are" }
        )))
    }

    /// The local backend's view of these settings.
    pub fn local_spec(&self) -> w2s_llama::LocalSpec {
        w2s_llama::LocalSpec {
            strong: self.strong.clone(),
            tuned: self.tuned.clone(),
            untuned: self.untuned.clone(),
            strong_template: self.strong_template.clone(),
            tuned_template: self.tuned_template.clone(),
            untuned_template: self.untuned_template.clone(),
            threads: self.threads,
            load: w2s_llama::LoadOptions {
                gpu_layers: self.gpu_layers,
            },
        }
    }
}
