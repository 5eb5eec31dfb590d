//! Which model plays which role: each of strong, tuned and untuned is a local GGUF file
//! or a remote OpenAI-compatible endpoint, with its prompt template.

use std::path::PathBuf;

use serde::Deserialize;
use w2s_core::{PromptTemplate, Role};
use w2s_llama::LoadOptions;
use w2s_remote::{Endpoint, RemoteSpec};

use crate::error::EngineError;

/// The three roles, in the order reports and checks list them.
pub const ROLES: [Role; 3] = [Role::Strong, Role::Tuned, Role::Untuned];

/// `[models.strong]`, `[models.tuned]`, `[models.untuned]` tables of a config file: a
/// remote endpoint with every setting (see [`RemoteSpec`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTables {
    /// The strong model's endpoint.
    pub strong: Option<RemoteSpec>,
    /// The tuned model's endpoint.
    pub tuned: Option<RemoteSpec>,
    /// The untuned model's endpoint.
    pub untuned: Option<RemoteSpec>,
}

impl ModelTables {
    /// The table of `role`.
    pub fn get(&self, role: Role) -> Option<&RemoteSpec> {
        match role {
            Role::Strong => self.strong.as_ref(),
            Role::Tuned => self.tuned.as_ref(),
            Role::Untuned => self.untuned.as_ref(),
        }
    }
}

/// Where a role's model lives.
#[derive(Debug, Clone)]
pub enum RoleSource {
    /// A GGUF file run by llama.cpp in this process.
    Local(PathBuf),
    /// An OpenAI-compatible endpoint: the settings as given and their checked form.
    Remote {
        /// The settings as written (URL, model name, timeouts...).
        spec: Box<RemoteSpec>,
        /// The checked endpoint (API key read from its variable).
        endpoint: Box<Endpoint>,
    },
    /// A scorer the caller supplies when it builds the engine ([`crate::Engine::build_with`]),
    /// e.g. an object of a Python program; the label names it in reports and result files.
    Custom(String),
}

/// One role: its model and the template that gives it the prompt.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// Where the model lives.
    pub source: RoleSource,
    /// How the prompt is given to it.
    pub template: PromptTemplate,
    /// Whether the template was given (`false`: the default `{prompt}`, which a chat
    /// request replaces by the model's own chat template where it has one).
    pub template_given: bool,
}

impl RoleSpec {
    /// A local GGUF file (a path, or a name `scripts/fetch-models` fetched).
    pub fn local(model: &str, template: PromptTemplate) -> Self {
        RoleSpec {
            source: RoleSource::Local(w2s_llama::resolve_model(model)),
            template,
            template_given: true,
        }
    }

    /// A remote endpoint, checked now (the API key is read from its variable).
    pub fn remote(
        role: Role,
        spec: RemoteSpec,
        template: PromptTemplate,
    ) -> Result<Self, EngineError> {
        let endpoint = spec
            .check()
            .map_err(|source| EngineError::Remote { role, source })?;
        Ok(RoleSpec {
            source: RoleSource::Remote {
                spec: Box::new(spec),
                endpoint: Box::new(endpoint),
            },
            template,
            template_given: true,
        })
    }

    /// A role from a model argument (a file, a name, or `URL#MODEL`) or a config table
    /// (not both), with an explicit template, else the table's, else `{prompt}`.
    pub fn parse(
        role: Role,
        model: Option<&str>,
        table: Option<&RemoteSpec>,
        template: Option<&str>,
    ) -> Result<Self, EngineError> {
        let template_of = |t: Option<&str>| -> Result<PromptTemplate, EngineError> {
            match t {
                None => Ok(PromptTemplate::bare()),
                Some(t) => PromptTemplate::new(t)
                    .map_err(|e| EngineError::input(format!("--{role}-template: {e}"))),
            }
        };
        let given = |r: RoleSpec, t: Option<&str>| RoleSpec {
            template_given: t.is_some(),
            ..r
        };
        match (model, table) {
            (Some(_), Some(_)) => Err(EngineError::input(format!(
                "the {role} model is given twice: as --{role} (or {role} = ...) and as [models.{role}]; keep one"
            ))),
            (Some(m), None) if w2s_remote::is_remote(m) => {
                let spec = RemoteSpec::parse(m).map_err(|source| EngineError::Remote { role, source })?;
                let r = RoleSpec::remote(role, spec, template_of(template)?)?;
                Ok(given(r, template))
            }
            (None, Some(t)) => {
                let raw = template.or(t.template.as_deref());
                let r = RoleSpec::remote(role, t.clone(), template_of(raw)?)?;
                Ok(given(r, raw))
            }
            (Some(m), None) => Ok(given(RoleSpec::local(m, template_of(template)?), template)),
            (None, None) => Err(EngineError::input(format!(
                "no {role} model: give --{role} FILE|NAME|URL#MODEL or set {role} = \"...\" in --config"
            ))),
        }
    }

    /// A scorer the caller supplies ([`RoleSource::Custom`]), named `label`; the template
    /// (default `{prompt}`) is recorded but the scorer applies its own.
    pub fn custom(role: Role, label: &str, template: Option<&str>) -> Result<Self, EngineError> {
        let given = template.is_some();
        let template = match template {
            None => PromptTemplate::bare(),
            Some(t) => PromptTemplate::new(t)
                .map_err(|e| EngineError::input(format!("--{role}-template: {e}")))?,
        };
        Ok(RoleSpec {
            source: RoleSource::Custom(label.to_string()),
            template,
            template_given: given,
        })
    }

    /// Whether the model is remote.
    pub fn is_remote(&self) -> bool {
        matches!(self.source, RoleSource::Remote { .. })
    }

    /// The model as a user names it: the file's path, or `URL#MODEL`.
    pub fn describe(&self) -> String {
        match &self.source {
            RoleSource::Local(path) => path.display().to_string(),
            RoleSource::Remote { spec, .. } => format!("{}#{}", spec.url, spec.model),
            RoleSource::Custom(label) => label.clone(),
        }
    }

    /// The local file, if the model is local.
    pub fn local_path(&self) -> Option<&PathBuf> {
        match &self.source {
            RoleSource::Local(path) => Some(path),
            RoleSource::Remote { .. } | RoleSource::Custom(_) => None,
        }
    }
}

/// One more tuned / untuned pair for a guide that is a weighted sum of pairs, as a
/// `[[guides]]` table of a config file or a `--guide '{...}'` flag gives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuideTable {
    /// What the trace and reports call it [default: "guide N"].
    pub name: Option<String>,
    /// Its weight in the sum (the main pair's weight is beta) [default: 1].
    #[serde(default = "one")]
    pub weight: f64,
    /// Small tuned model (GGUF file, name or URL#MODEL).
    pub tuned: String,
    /// Small untuned model (GGUF file, name or URL#MODEL).
    pub untuned: String,
    /// Tuned model's prompt template [default: {prompt}].
    pub tuned_template: Option<String>,
    /// Untuned model's prompt template [default: {prompt}].
    pub untuned_template: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// A checked extra pair of a weighted guide.
#[derive(Debug, Clone)]
pub struct GuideSpec {
    /// Its name in traces.
    pub name: String,
    /// Its weight in the sum.
    pub weight: f64,
    /// The small tuned model.
    pub tuned: RoleSpec,
    /// The small untuned model.
    pub untuned: RoleSpec,
}

impl GuideTable {
    /// Parses a `--guide` flag: a TOML inline table with this table's keys, e.g.
    /// `{weight = 0.5, tuned = "smollm2-135m-instruct", untuned = "smollm2-135m-instruct",
    /// tuned_template = "chat:Write fluent English.||{prompt}"}`.
    pub fn parse_flag(flag: &str) -> Result<GuideTable, EngineError> {
        #[derive(Deserialize)]
        struct Wrap {
            guide: GuideTable,
        }
        toml::from_str::<Wrap>(&format!("guide = {flag}"))
            .map(|w| w.guide)
            .map_err(|e| {
                EngineError::input(format!(
                    "--guide '{flag}': {} (write a TOML inline table such as \
                     {{weight = 0.5, tuned = \"FILE\", untuned = \"FILE\", tuned_template = \"...\"}})",
                    e.message()
                ))
            })
    }

    /// The checked pair; `n` numbers it in the default name.
    pub fn check(&self, n: usize) -> Result<GuideSpec, EngineError> {
        let name = self.name.clone().unwrap_or_else(|| format!("guide {n}"));
        let role = |r: Role, model: &str, template: &Option<String>| {
            RoleSpec::parse(r, Some(model), None, template.as_deref())
                .map_err(|e| EngineError::input(format!("{name}: {e}")))
        };
        Ok(GuideSpec {
            tuned: role(Role::Tuned, &self.tuned, &self.tuned_template)?,
            untuned: role(Role::Untuned, &self.untuned, &self.untuned_template)?,
            weight: self.weight,
            name,
        })
    }
}

/// The three roles of a search and how local models run.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// The large model that samples.
    pub strong: RoleSpec,
    /// The small tuned model.
    pub tuned: RoleSpec,
    /// The small untuned model.
    pub untuned: RoleSpec,
    /// More pairs: the guide is then `beta * main pair + sum of weight * pair`.
    pub guides: Vec<GuideSpec>,
    /// CPU threads per local model.
    pub threads: usize,
    /// How local models load (GPU offload).
    pub load: LoadOptions,
    /// Score a pair that is one local file under two templates as one guide, both halves'
    /// rows in one decode ([`w2s_llama::LlamaTwinGuide`]); `false` (the default): two
    /// scorers, one decode each, which measured 2% faster end to end on a 2-core CPU
    /// (docs/performance.md), where a decode's cost per token is flat in its batch.
    pub joint_guide: bool,
}

impl EngineSpec {
    /// Three roles with llama.cpp's defaults: as many threads as cores, no GPU offload.
    pub fn new(strong: RoleSpec, tuned: RoleSpec, untuned: RoleSpec) -> Self {
        EngineSpec {
            strong,
            tuned,
            untuned,
            guides: Vec::new(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load: LoadOptions::default(),
            joint_guide: false,
        }
    }

    /// The spec of `role`.
    pub fn role(&self, role: Role) -> &RoleSpec {
        match role {
            Role::Strong => &self.strong,
            Role::Tuned => &self.tuned,
            Role::Untuned => &self.untuned,
        }
    }

    /// The roles whose model is remote.
    pub fn remote_roles(&self) -> Vec<Role> {
        ROLES
            .into_iter()
            .filter(|r| self.role(*r).is_remote())
            .collect()
    }

    /// Refuses remote and custom roles for `what`, which needs every model local (e.g.
    /// EFT needs every token's logits).
    pub fn require_local(&self, what: &str) -> Result<(), EngineError> {
        let not_local: Vec<String> = ROLES
            .into_iter()
            .filter_map(|r| match &self.role(r).source {
                RoleSource::Local(_) => None,
                RoleSource::Remote { .. } => Some(format!("the {r} model is remote")),
                RoleSource::Custom(label) => Some(format!("the {r} model is {label}")),
            })
            .collect();
        if not_local.is_empty() {
            return Ok(());
        }
        Err(EngineError::input(format!(
            "{what} needs every model local (GGUF files), but {}",
            not_local.join(" and ")
        )))
    }
}
