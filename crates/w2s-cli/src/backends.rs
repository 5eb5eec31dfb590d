//! Builds the three models of a search from checked settings: each role local (a GGUF
//! file on llama.cpp) or remote (an OpenAI-compatible endpoint), in any mix.

use serde::Deserialize;
use w2s_core::{
    search, Models, PromptTemplate, Proposer, Scorer, SearchConfig, SearchError, SearchOutput,
};
use w2s_llama::{LlamaProposer, LlamaScorer, LoadOptions, LocalModels, Model};
use w2s_remote::{Endpoint, RemoteError, RemoteProposer, RemoteScorer, RemoteSpec};

use crate::fail::{usage, Fail};
use crate::settings::Checked;

/// `[models.strong]`, `[models.tuned]`, `[models.untuned]` tables of a config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTables {
    pub strong: Option<RemoteSpec>,
    pub tuned: Option<RemoteSpec>,
    pub untuned: Option<RemoteSpec>,
}

/// The remote roles, checked (API keys read from their variables).
#[derive(Debug, Clone, Default)]
pub struct Remotes {
    pub strong: Option<Endpoint>,
    pub tuned: Option<Endpoint>,
    pub untuned: Option<Endpoint>,
}

/// One role's remote spec from `--ROLE URL#MODEL` or a `[models.ROLE]` table (not both),
/// checked; and the table's template, if any.
pub fn remote_role(
    flag: Option<&str>,
    table: Option<&RemoteSpec>,
    role: &str,
) -> Result<(Option<Endpoint>, Option<String>), Fail> {
    let spec = match (flag, table) {
        (Some(_), Some(_)) => {
            return Err(usage(format!(
                "the {role} model is given twice: as --{role} (or {role} = ...) and as [models.{role}]; keep one"
            )))
        }
        (Some(f), None) if w2s_remote::is_remote(f) => RemoteSpec::parse(f).map_err(remote_usage(role))?,
        (_, Some(t)) => t.clone(),
        _ => return Ok((None, None)),
    };
    let endpoint = spec.check().map_err(remote_usage(role))?;
    Ok((Some(endpoint), spec.template.clone()))
}

fn remote_usage(role: &str) -> impl Fn(RemoteError) -> Fail + '_ {
    move |e| usage(format!("{role} model: {e}"))
}

/// The three models, each behind its trait.
pub struct Backends {
    strong: Box<dyn Proposer>,
    tuned: Box<dyn Scorer>,
    untuned: Box<dyn Scorer>,
}

impl Backends {
    /// Loads the local models and connects the remote ones.
    pub fn build(c: &Checked) -> Result<Self, Fail> {
        let r = &c.remote;
        if r.strong.is_none() && r.tuned.is_none() && r.untuned.is_none() {
            let m = LocalModels::load(&c.local_spec())?;
            return Ok(Backends {
                strong: Box::new(m.strong),
                tuned: Box::new(m.tuned),
                untuned: Box::new(m.untuned),
            });
        }
        let load = LoadOptions {
            gpu_layers: c.gpu_layers,
        };
        let remote = |e: RemoteError| Fail {
            code: 1,
            message: e.to_string(),
        };
        let strong: Box<dyn Proposer> = match &r.strong {
            Some(ep) => Box::new(
                RemoteProposer::new(ep.clone(), c.strong_template.clone()).map_err(remote)?,
            ),
            None => Box::new(LlamaProposer::new(
                Model::load(&c.strong, load)?,
                c.strong_template.clone(),
                c.threads,
            )),
        };
        let scorer = |ep: &Option<Endpoint>,
                      path,
                      template: &PromptTemplate|
         -> Result<Box<dyn Scorer>, Fail> {
            Ok(match ep {
                Some(ep) => {
                    Box::new(RemoteScorer::new(ep.clone(), template.clone()).map_err(remote)?)
                }
                None => Box::new(LlamaScorer::new(
                    Model::load(path, load)?,
                    template.clone(),
                    c.threads,
                )),
            })
        };
        Ok(Backends {
            strong,
            tuned: scorer(&r.tuned, &c.tuned, &c.tuned_template)?,
            untuned: scorer(&r.untuned, &c.untuned, &c.untuned_template)?,
        })
    }

    /// Runs one search.
    pub fn search(
        &mut self,
        config: &SearchConfig,
        prompt: &str,
    ) -> Result<SearchOutput, SearchError> {
        let models = Models {
            strong: &mut *self.strong,
            tuned: &mut *self.tuned,
            untuned: &mut *self.untuned,
        };
        search(config, prompt, models)
    }
}

/// Exit code of a remote backend's error inside a search: 2 for settings the user must
/// fix, 1 for failures while running.
pub fn remote_exit_code(e: &RemoteError) -> i32 {
    match e {
        RemoteError::Config(_)
        | RemoteError::MissingApiKey(_)
        | RemoteError::UnknownModel { .. }
        | RemoteError::Unsupported(_)
        | RemoteError::NoEosText { .. }
        | RemoteError::TooLong { .. } => 2,
        _ => 1,
    }
}
