//! One set of run settings, read from command-line flags (with the `clap` feature) and
//! from a TOML config file (flags win), then checked once into an [`EngineSpec`] and a
//! [`SearchConfig`].

use std::path::{Path, PathBuf};

use serde::Deserialize;
use w2s_core::{
    check_weights, defaults, EntropyEnd, Method, Role, SamplingParams, SearchConfig, TermName,
};
use w2s_llama::LoadOptions;

use crate::error::EngineError;
use crate::spec::{EngineSpec, GuideSpec, GuideTable, ModelTables, RoleSpec};

/// Model, template and search settings shared by every command that runs a search.
/// Every field is optional: unset ones take the paper's defaults ([`w2s_core::defaults`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// TOML file with any of these settings (keys as the flags, with `_` for `-`).
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Strong model: a GGUF file, a name fetched by scripts/fetch-models, or a remote
    /// OpenAI-compatible endpoint URL#MODEL (e.g. http://127.0.0.1:8000/v1#my-model).
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE|NAME|URL#MODEL"))]
    pub strong: Option<String>,
    /// Small tuned model (GGUF file, name or URL#MODEL).
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE|NAME|URL#MODEL"))]
    pub tuned: Option<String>,
    /// Small untuned model (GGUF file, name or URL#MODEL); may be the tuned one with another template.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE|NAME|URL#MODEL"))]
    pub untuned: Option<String>,

    /// Strong model's prompt template, with {prompt}; `chat:USER||ASSISTANT` uses the
    /// model's chat template [default: {prompt}].
    #[cfg_attr(feature = "clap", arg(long, value_name = "T"))]
    pub strong_template: Option<String>,
    /// Tuned model's prompt template [default: {prompt}].
    #[cfg_attr(feature = "clap", arg(long, value_name = "T"))]
    pub tuned_template: Option<String>,
    /// Untuned model's prompt template [default: {prompt}].
    #[cfg_attr(feature = "clap", arg(long, value_name = "T"))]
    pub untuned_template: Option<String>,

    /// Search method: cbs, bon, sample, or cbs:WxKxL / bon:N [default: cbs].
    #[cfg_attr(feature = "clap", arg(long, value_name = "M"))]
    pub method: Option<String>,
    /// Beams kept (W) [default: 4].
    #[cfg_attr(feature = "clap", arg(short = 'w', long = "width", value_name = "W"))]
    #[serde(alias = "width")]
    pub w: Option<usize>,
    /// Successors per beam (K) [default: 4].
    #[cfg_attr(
        feature = "clap",
        arg(short = 'k', long = "successors", value_name = "K")
    )]
    #[serde(alias = "successors")]
    pub k: Option<usize>,
    /// Strong tokens per chunk (L) [default: 5].
    #[cfg_attr(
        feature = "clap",
        arg(short = 'l', long = "chunk-len", value_name = "L")
    )]
    #[serde(alias = "chunk_len")]
    pub l: Option<usize>,
    /// Samples for Best-of-N [default: 16].
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub n: Option<usize>,
    /// Weight of the log-probability ratio [default: 1].
    #[cfg_attr(feature = "clap", arg(long))]
    pub beta: Option<f64>,
    /// New strong-model tokens per response at most [default: 50].
    #[cfg_attr(feature = "clap", arg(long, value_name = "T"))]
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature, 0 = greedy [default: 0.7].
    #[cfg_attr(feature = "clap", arg(long))]
    pub temperature: Option<f32>,
    /// Top-k, 0 = off [default: 50].
    #[cfg_attr(feature = "clap", arg(long))]
    pub top_k: Option<u32>,
    /// Top-p in (0, 1] [default: 1.0].
    #[cfg_attr(feature = "clap", arg(long))]
    pub top_p: Option<f32>,
    /// A string that ends a response (repeatable).
    #[cfg_attr(feature = "clap", arg(long = "stop", value_name = "S"))]
    #[serde(default)]
    pub stop: Vec<String>,
    /// Random seed [default: 1].
    #[cfg_attr(feature = "clap", arg(long))]
    pub seed: Option<u64>,
    /// CPU threads for llama.cpp [default: number of cores].
    #[cfg_attr(feature = "clap", arg(long))]
    pub threads: Option<usize>,
    /// Model layers to offload to the GPU (builds with the `cuda` feature) [default: 0].
    #[cfg_attr(feature = "clap", arg(long))]
    pub gpu_layers: Option<u32>,
    /// Score local guide models from their files as they are. By default a guide whose
    /// weight type has no fast CPU kernel (Q4_1, Q5_1) is scored through a Q8_0 copy made
    /// once under the models folder's `fast/`.
    #[cfg_attr(
        feature = "clap",
        arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")
    )]
    pub keep_guide_weights: Option<bool>,
    /// Score a guide pair that is one local file under two templates in one decode per
    /// step (true) or with two scorers, one decode each (false) [default: false].
    #[cfg_attr(feature = "clap", arg(long, value_name = "BOOL"))]
    pub joint_guide: Option<bool>,

    /// Weigh another tuned / untuned pair into the guide (repeatable): a TOML inline
    /// table, e.g. '{weight = 0.5, tuned = "FILE", untuned = "FILE", tuned_template = "..."}';
    /// the guide is then beta * (main pair) + sum of weight * (pair).
    #[cfg_attr(feature = "clap", arg(long = "guide", value_name = "TABLE"))]
    #[serde(skip)]
    pub guide: Vec<String>,
    /// More pairs of a weighted guide (config file: `[[guides]]` tables with the keys of
    /// --guide).
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(default)]
    pub guides: Vec<GuideTable>,
    /// Adaptive chunk ends: end a chunk before the first token (after --chunk-min) whose
    /// next-token entropy under the strong model exceeds this many nats; L caps a chunk
    /// (local strong models only).
    #[cfg_attr(feature = "clap", arg(long, value_name = "NATS"))]
    pub chunk_entropy: Option<f64>,
    /// With --chunk-entropy: tokens a chunk has at least [default: 2].
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub chunk_min: Option<usize>,

    /// Remote models with every setting (config file only): `[models.strong]` etc.
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(default)]
    pub models: Option<ModelTables>,

    /// Roles whose scorer the caller supplies ([`crate::RoleSource::Custom`]), with the
    /// label that names it (library callers only: e.g. a Python object).
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(skip)]
    pub custom: Vec<(Role, String)>,
}

/// Settings after merging and checking.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Which model plays which role.
    pub engine: EngineSpec,
    /// The search.
    pub search: SearchConfig,
}

impl RunSettings {
    /// Flags override the config file's values.
    pub fn merged(self) -> Result<RunSettings, EngineError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = read_config(&path)?;
        macro_rules! pick {
            ($($f:ident),*) => { RunSettings { $($f: self.$f.or(file.$f),)*
                stop: if self.stop.is_empty() { file.stop } else { self.stop },
                guide: self.guide,
                guides: if self.guides.is_empty() { file.guides } else { self.guides },
                models: self.models.or(file.models),
                custom: self.custom,
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
            gpu_layers,
            keep_guide_weights,
            joint_guide,
            chunk_entropy,
            chunk_min
        ))
    }

    /// The search method, with -w/-k/-l and --n adjusting its numbers.
    pub fn method(&self) -> Result<Method, EngineError> {
        let mut method = match self.method.as_deref() {
            None => Method::default(),
            Some(m) => Method::parse(m)?,
        };
        match &mut method {
            Method::Cbs { w, k, l } => {
                *w = self.w.unwrap_or(*w);
                *k = self.k.unwrap_or(*k);
                *l = self.l.unwrap_or(*l);
            }
            Method::Bon { n } => *n = self.n.unwrap_or(*n),
            Method::Sample => {}
        }
        Ok(method)
    }

    /// The search settings with `method` and `seed`.
    pub fn search_config(&self, method: Method, seed: u64) -> Result<SearchConfig, EngineError> {
        let sampling = SamplingParams::new(
            self.temperature.unwrap_or(defaults::TEMPERATURE),
            self.top_k.unwrap_or(defaults::TOP_K),
            self.top_p.unwrap_or(defaults::TOP_P),
        )?;
        let chunk_end = match (self.chunk_entropy, self.chunk_min) {
            (Some(h), min) => Some(EntropyEnd::new(min.unwrap_or(defaults::CHUNK_MIN), h)?),
            (None, Some(_)) => {
                return Err(EngineError::input(
                    "--chunk-min needs --chunk-entropy (the threshold that ends a chunk)",
                ))
            }
            (None, None) => None,
        };
        Ok(SearchConfig::new(
            method,
            self.max_new_tokens.unwrap_or(defaults::MAX_NEW_TOKENS),
            self.beta.unwrap_or(defaults::BETA),
            seed,
            sampling,
            self.stop.clone(),
        )?
        .with_chunk_end(chunk_end)?)
    }

    /// The extra pairs of a weighted guide: the `--guide` flags if any, else the config
    /// file's `[[guides]]`.
    fn guide_specs(&self) -> Result<Vec<GuideSpec>, EngineError> {
        let tables = if self.guide.is_empty() {
            self.guides.clone()
        } else {
            self.guide
                .iter()
                .map(|g| GuideTable::parse_flag(g))
                .collect::<Result<Vec<_>, _>>()?
        };
        let specs = tables
            .iter()
            .enumerate()
            .map(|(i, t)| t.check(i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        if !specs.is_empty() {
            // The weights the search's WeightedSum checks, checked before any model loads.
            let main = TermName {
                name: "main".into(),
                weight: self.beta.unwrap_or(defaults::BETA),
            };
            let terms: Vec<TermName> = std::iter::once(main)
                .chain(specs.iter().map(|g| TermName {
                    name: g.name.clone(),
                    weight: g.weight,
                }))
                .collect();
            check_weights(&terms)?;
        }
        Ok(specs)
    }

    /// Which model plays which role (remote API keys are read now).
    pub fn engine_spec(&self) -> Result<EngineSpec, EngineError> {
        let tables = self.models.clone().unwrap_or_default();
        let role = |r: Role, model: &Option<String>, template: &Option<String>| match self
            .custom
            .iter()
            .find(|(c, _)| *c == r)
        {
            Some((_, label)) => {
                if model.is_some() || tables.get(r).is_some() {
                    return Err(EngineError::input(format!(
                        "the {r} model is given twice: as {label} and as a model name; keep one"
                    )));
                }
                RoleSpec::custom(r, label, template.as_deref())
            }
            None => RoleSpec::parse(r, model.as_deref(), tables.get(r), template.as_deref()),
        };
        let threads = match self.threads {
            Some(0) => return Err(EngineError::input("--threads must be at least 1")),
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(EngineSpec {
            strong: role(Role::Strong, &self.strong, &self.strong_template)?,
            tuned: role(Role::Tuned, &self.tuned, &self.tuned_template)?,
            untuned: role(Role::Untuned, &self.untuned, &self.untuned_template)?,
            guides: self.guide_specs()?,
            threads,
            load: LoadOptions {
                gpu_layers: self.gpu_layers.unwrap_or(0),
                keep_guide_weights: self.keep_guide_weights.unwrap_or(false),
            },
            joint_guide: self.joint_guide.unwrap_or(false),
        })
    }

    /// Merges the config file and checks everything.
    pub fn check(self) -> Result<Checked, EngineError> {
        let s = self.merged()?;
        let method = s.method()?;
        let search = s.search_config(method, s.seed.unwrap_or(defaults::SEED))?;
        Ok(Checked {
            engine: s.engine_spec()?,
            search,
        })
    }
}

/// Reads a TOML config file; an error names the file and line.
pub fn read_config(path: &Path) -> Result<RunSettings, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        EngineError::input(format!("cannot read config file {}: {e}", path.display()))
    })?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        match line {
            Some(l) => {
                EngineError::input(format!("config file {} line {l}: {msg}", path.display()))
            }
            None => EngineError::input(format!("config file {}: {msg}", path.display())),
        }
    })
}

pub use w2s_core::shown_f32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = std::env::temp_dir().join(format!("w2s-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.toml");
        std::fs::write(
            &path,
            "strong = \"a.gguf\"\ntuned = \"b.gguf\"\nuntuned = \"b.gguf\"\nmethod = \"cbs:2x3x4\"\ntemperature = 0.5\n",
        )
        .unwrap();
        let s = RunSettings {
            config: Some(path),
            temperature: Some(0.9),
            k: Some(8),
            ..RunSettings::default()
        };
        let c = s.check().unwrap();
        assert_eq!(c.search.method(), Method::Cbs { w: 2, k: 8, l: 4 });
        assert_eq!(c.search.sampling().temperature(), 0.9);
        assert_eq!(c.search.max_new_tokens(), defaults::MAX_NEW_TOKENS);
        assert!(c.engine.strong.describe().ends_with("a.gguf"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_role_given_as_flag_and_table_is_refused() {
        let s = RunSettings {
            strong: Some("http://127.0.0.1:9/v1#m".into()),
            tuned: Some("x".into()),
            untuned: Some("x".into()),
            models: Some(ModelTables {
                strong: Some(w2s_remote::RemoteSpec::new("http://127.0.0.1:9/v1", "m")),
                ..ModelTables::default()
            }),
            ..RunSettings::default()
        };
        let e = s.check().unwrap_err();
        assert_eq!(e.kind(), w2s_core::ErrorKind::Input);
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn remote_roles_parse_from_url_and_model() {
        let s = RunSettings {
            strong: Some("http://127.0.0.1:9/v1#big".into()),
            tuned: Some("x".into()),
            untuned: Some("x".into()),
            ..RunSettings::default()
        };
        let c = s.check().unwrap();
        assert_eq!(c.engine.remote_roles(), vec![Role::Strong]);
        assert_eq!(c.engine.strong.describe(), "http://127.0.0.1:9/v1#big");
        let e = c.engine.require_local("EFT").unwrap_err();
        assert!(e.to_string().contains("strong model is remote"), "{e}");
        let bad = RunSettings {
            strong: Some("http://127.0.0.1:9/v1".into()),
            ..RunSettings::default()
        };
        assert_eq!(bad.check().unwrap_err().kind(), w2s_core::ErrorKind::Input);
    }

    #[test]
    fn floats_show_as_written() {
        assert_eq!(shown_f32(0.7).to_string(), "0.7");
        assert_eq!(shown_f32(1.0), 1.0);
    }
}
