//! The three models of a search, built from an [`EngineSpec`] for any mix of local and
//! remote roles.

use std::sync::Arc;

use crate::gate::{ComputeGate, GatedGuide, GatedStrong, GatedTwin, OrderedGate};

use w2s_core::{
    search_guided, search_with_progress, ChatTurn, Guide, Interrupt, LogRatio, Models, Progress,
    PromptTemplate, Role, SearchConfig, SearchOutput, TermName, WeightedSum,
};
use w2s_llama::{LlamaProposer, LlamaScorer, LlamaTwinGuide, Model};
use w2s_remote::{RemoteProposer, RemoteScorer};

use crate::error::EngineError;
use crate::request::SearchRequest;
use crate::roles::{CustomScorers, SmallModel, Strong};
use crate::spec::{EngineSpec, RoleSource, RoleSpec};

/// One more pair of a weighted guide.
struct ExtraPair {
    term: TermName,
    tuned: SmallModel,
    untuned: SmallModel,
}

/// The strong model and the guide pair, ready to search. Local models sharing a file
/// are loaded once.
///
/// Several engines may share the loaded models ([`Engine::replica`]): each has its own
/// llama.cpp contexts (so the rows of one search never meet another's) and its own
/// remote clients, and all of them share one *compute gate*, a lock held for every local
/// forward pass of a search ([`OrderedGate`]). Searches on several threads then share the
/// CPU (each pass uses every configured thread, the oldest search first) while any of them
/// may wait on a remote engine, which is what makes searches in flight together pay when
/// the strong model is remote.
pub struct Engine {
    /// The strong model.
    pub(crate) strong: Strong,
    /// The small tuned model.
    pub(crate) tuned: SmallModel,
    /// The small untuned model.
    pub(crate) untuned: SmallModel,
    /// The pair as one guide where both are one local file under two templates (every
    /// prompt-steered pair): both halves' rows scored in one decode.
    pub(crate) twin: Option<LlamaTwinGuide>,
    /// Whether the twin reads this request's templates (else the pair's scorers search).
    pub(crate) twin_ready: bool,
    /// More pairs of a weighted guide ([`EngineSpec::guides`]).
    extra: Vec<ExtraPair>,
    guide: Option<Box<dyn Guide + Send>>,
    pub(crate) spec: EngineSpec,
    pub(crate) gate: Arc<OrderedGate>,
    pub(crate) rank: u64,
}

impl Engine {
    /// Loads the local models and sets up the remote ones (no request is sent yet).
    pub fn build(spec: &EngineSpec) -> Result<Engine, EngineError> {
        Engine::build_with(spec, &mut |_| None)
    }

    /// [`Engine::build`] where `custom` supplies the scorer of each
    /// [`RoleSource::Custom`] role (an input error if it supplies none).
    pub fn build_with(spec: &EngineSpec, custom: CustomScorers<'_>) -> Result<Engine, EngineError> {
        let load = |role: Role, r: &RoleSpec| -> Result<Option<Arc<Model>>, EngineError> {
            match &r.source {
                RoleSource::Local(path) => Model::load(&guide_file(spec, role, path), spec.load)
                    .map(Some)
                    .map_err(|source| EngineError::Local { role, source }),
                RoleSource::Remote { .. } | RoleSource::Custom(_) => Ok(None),
            }
        };
        let strong = match (&spec.strong.source, load(Role::Strong, &spec.strong)?) {
            (_, Some(m)) => Strong::Local(LlamaProposer::new(
                m,
                spec.strong.template.clone(),
                spec.threads,
            )),
            (RoleSource::Remote { endpoint, .. }, None) => Strong::Remote(
                RemoteProposer::new((**endpoint).clone(), spec.strong.template.clone()).map_err(
                    |source| EngineError::Remote {
                        role: Role::Strong,
                        source,
                    },
                )?,
            ),
            (RoleSource::Custom(label), None) => {
                return Err(EngineError::input(format!(
                    "the strong model must be a GGUF file or URL#MODEL, not {label}"
                )))
            }
            (RoleSource::Local(_), None) => unreachable!("a local role loads a model"),
        };
        let mut guide = |role: Role, r: &RoleSpec| -> Result<SmallModel, EngineError> {
            Ok(match (&r.source, load(role, r)?) {
                (_, Some(m)) => {
                    SmallModel::Local(LlamaScorer::new(m, r.template.clone(), spec.threads))
                }
                (RoleSource::Remote { endpoint, .. }, None) => SmallModel::Remote(
                    RemoteScorer::new((**endpoint).clone(), r.template.clone())
                        .map_err(|source| EngineError::Remote { role, source })?,
                ),
                (RoleSource::Custom(label), None) => {
                    SmallModel::Custom(custom(role).ok_or_else(|| {
                        EngineError::input(format!("the {role} model {label} was not supplied"))
                    })?)
                }
                (RoleSource::Local(_), None) => unreachable!("a local role loads a model"),
            })
        };
        let mut extra = Vec::with_capacity(spec.guides.len());
        for g in &spec.guides {
            extra.push(ExtraPair {
                term: TermName {
                    name: g.name.clone(),
                    weight: g.weight,
                },
                tuned: guide(Role::Tuned, &g.tuned)?,
                untuned: guide(Role::Untuned, &g.untuned)?,
            });
        }
        let (tuned, untuned) = (
            guide(Role::Tuned, &spec.tuned)?,
            guide(Role::Untuned, &spec.untuned)?,
        );
        Ok(Engine {
            twin: twin(spec, &tuned, &untuned),
            twin_ready: true,
            tuned,
            untuned,
            extra,
            strong,
            guide: None,
            spec: spec.clone(),
            gate: Arc::default(),
            rank: 0,
        })
    }

    /// Another engine on the same loaded models and the same compute gate, with contexts
    /// and remote clients of its own: a search on it may run on another thread while this
    /// one searches.
    /// An input error where a role or the guide is a caller's object, which cannot be
    /// copied.
    pub fn replica(&self) -> Result<Engine, EngineError> {
        if self.guide.is_some() {
            return Err(EngineError::input(
                "an engine with a custom guide cannot be replicated",
            ));
        }
        let threads = self.spec.threads;
        let strong = match &self.strong {
            Strong::Local(p) => Strong::Local(LlamaProposer::new(
                p.model().clone(),
                self.spec.strong.template.clone(),
                threads,
            )),
            Strong::Remote(p) => {
                Strong::Remote(p.replica().map_err(|source| EngineError::Remote {
                    role: Role::Strong,
                    source,
                })?)
            }
        };
        let guide = |role: Role, g: &SmallModel| -> Result<SmallModel, EngineError> {
            g.replica(role, self.spec.role(role), threads)
        };
        let extra = self
            .extra
            .iter()
            .zip(&self.spec.guides)
            .map(|(p, g)| {
                Ok(ExtraPair {
                    term: p.term.clone(),
                    tuned: p.tuned.replica(Role::Tuned, &g.tuned, threads)?,
                    untuned: p.untuned.replica(Role::Untuned, &g.untuned, threads)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let (tuned, untuned) = (
            guide(Role::Tuned, &self.tuned)?,
            guide(Role::Untuned, &self.untuned)?,
        );
        Ok(Engine {
            twin: twin(&self.spec, &tuned, &untuned),
            twin_ready: true,
            tuned,
            untuned,
            extra,
            strong,
            guide: None,
            spec: self.spec.clone(),
            gate: {
                self.gate.share();
                self.gate.clone()
            },
            rank: 0,
        })
    }

    /// This engine and `n - 1` replicas of it ([`Engine::replica`]): the workers of
    /// [`crate::in_flight`] for `n` searches in flight.
    pub fn replicas(self, n: usize) -> Result<Vec<Engine>, EngineError> {
        let mut engines = Vec::with_capacity(n.max(1));
        for _ in 1..n {
            engines.push(self.replica()?);
        }
        engines.insert(0, self);
        Ok(engines)
    }

    /// Has every role read the next search through its template with `history` before
    /// the prompt ([`SearchRequest::history`], [`SearchRequest::chat`]).
    pub(crate) fn apply_turns(
        &mut self,
        history: &[ChatTurn],
        chat: bool,
    ) -> Result<(), EngineError> {
        let t = |role: Role| {
            request_template(&self.spec, role, self.role_model(role).map(|m| &**m), chat)
                .with_history(history)
                .map_err(|e| EngineError::input(format!("the {role} model's {e}")))
        };
        let (strong, tuned, untuned) = (t(Role::Strong)?, t(Role::Tuned)?, t(Role::Untuned)?);
        self.strong.set_template(strong);
        // Templates the twin cannot render are refused by the pair's own scorers, which
        // then search in its place, with their usual errors.
        self.twin_ready = self
            .twin
            .as_mut()
            .is_some_and(|t| t.set_templates(tuned.clone(), untuned.clone()).is_ok());
        self.tuned.set_template(tuned);
        self.untuned.set_template(untuned);
        for (p, g) in self.extra.iter_mut().zip(&self.spec.guides) {
            for (m, r) in [(&mut p.tuned, &g.tuned), (&mut p.untuned, &g.untuned)] {
                let t = r
                    .template
                    .with_history(history)
                    .map_err(|e| EngineError::input(format!("{}: {e}", g.name)))?;
                m.set_template(t);
            }
        }
        Ok(())
    }

    /// The compute gate this engine shares with its replicas; hold it around any other
    /// local model work (e.g. plain sampling) done next to their searches.
    pub fn gate(&self) -> ComputeGate {
        ComputeGate(self.gate.clone())
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &EngineSpec {
        &self.spec
    }

    /// Has every search rank rows by `guide` instead of the tuned / untuned pair (`None`:
    /// the pair again). The pair's models stay loaded but are not used.
    pub(crate) fn set_guide(&mut self, guide: Option<Box<dyn Guide + Send>>) {
        self.guide = guide;
    }

    /// Whether a custom guide ([`crate::CustomParts`]) replaces the pair.
    pub fn has_custom_guide(&self) -> bool {
        self.guide.is_some()
    }

    /// Runs one search of `config` on `prompt`: [`Engine::run`] with no history.
    pub fn search(
        &mut self,
        config: &SearchConfig,
        prompt: &str,
    ) -> Result<SearchOutput, EngineError> {
        self.run(&SearchRequest::new(config, prompt), &mut |_| true)
    }

    /// Runs one search as `request` says; `progress` is called after each selection and
    /// may return `false` to cancel it. The request's history, interrupt and rank hold
    /// for this search only.
    pub fn run(
        &mut self,
        request: &SearchRequest<'_>,
        progress: &mut dyn FnMut(&Progress<'_>) -> bool,
    ) -> Result<SearchOutput, EngineError> {
        self.apply_turns(request.history, request.chat)?;
        self.rank = request.rank;
        self.set_interrupt(request.interrupt);
        let out = self.guided_search(request.config, request.prompt, progress);
        self.set_interrupt(None);
        out
    }

    /// The search itself, through the compute gate, with the engine's guide: the custom
    /// one, the pair, or the pair and more pairs weighed together.
    fn guided_search(
        &mut self,
        config: &SearchConfig,
        prompt: &str,
        progress: &mut dyn FnMut(&Progress<'_>) -> bool,
    ) -> Result<SearchOutput, EngineError> {
        let (gate, rank) = (&*self.gate, self.rank);
        if let Some(guide) = self.guide.as_deref_mut() {
            if !self.extra.is_empty() {
                return Err(EngineError::input(
                    "a custom guide replaces the tuned / untuned pair; more pairs (--guide, \
                     guides) cannot be weighed into it",
                ));
            }
            let strong = &mut GatedStrong {
                inner: &mut self.strong,
                gate,
                rank,
            };
            return Ok(search_guided(config, prompt, strong, guide, progress)?);
        }
        let gated = |inner| GatedGuide { inner, gate, rank };
        let strong = &mut GatedStrong {
            inner: &mut self.strong,
            gate,
            rank,
        };
        // The main pair: the twin guide where the pair is one file, else two scorers.
        let mut twin = match self.twin.as_mut().filter(|_| self.twin_ready) {
            Some(twin) => {
                let beta = if self.extra.is_empty() {
                    config.beta()
                } else {
                    1.0
                };
                twin.set_beta(beta)
                    .map_err(|e| EngineError::input(e.to_string()))?;
                Some(GatedTwin {
                    inner: twin,
                    gate,
                    rank,
                })
            }
            None => None,
        };
        let (mut tuned, mut untuned) = (gated(&mut self.tuned), gated(&mut self.untuned));
        if self.extra.is_empty() {
            if let Some(guide) = twin.as_mut() {
                return Ok(search_guided(config, prompt, strong, guide, progress)?);
            }
            let models = Models {
                strong,
                tuned: &mut tuned,
                untuned: &mut untuned,
            };
            return Ok(search_with_progress(config, prompt, models, progress)?);
        }
        // A weighted guide: beta * the main pair + each pair's weight * its log-ratio.
        let mut pairs: Vec<(TermName, GatedGuide<'_>, GatedGuide<'_>)> = self
            .extra
            .iter_mut()
            .map(|p| (p.term.clone(), gated(&mut p.tuned), gated(&mut p.untuned)))
            .collect();
        let main = TermName {
            name: "main".into(),
            weight: config.beta(),
        };
        let main_guide: Box<dyn Guide + '_> = match twin.as_mut() {
            Some(twin) => Box::new(twin),
            None => Box::new(LogRatio::new(&mut tuned, &mut untuned, 1.0)),
        };
        let mut terms: Vec<(TermName, Box<dyn Guide + '_>)> = vec![(main, main_guide)];
        for (term, t, u) in pairs.iter_mut() {
            terms.push((term.clone(), Box::new(LogRatio::new(t, u, 1.0))));
        }
        let mut guide = WeightedSum::new(terms)?;
        Ok(search_guided(config, prompt, strong, &mut guide, progress)?)
    }

    /// Runs `f` on the strong model, holding the compute gate where it is local (a
    /// benchmark's raw sampling loop next to the searches).
    pub fn with_strong<R>(&mut self, rank: u64, f: impl FnOnce(&mut Strong) -> R) -> R {
        let _cpu = crate::gate::hold_if(&self.gate, rank, self.strong.local().is_some());
        f(&mut self.strong)
    }

    /// The loaded model of a local role (public through [`crate::LocalModels`]).
    pub(crate) fn role_model(&self, role: Role) -> Option<&Arc<Model>> {
        match role {
            Role::Strong => self.strong.local().map(LlamaProposer::model),
            Role::Tuned => self.tuned.local_model(),
            Role::Untuned => self.untuned.local_model(),
        }
    }

    /// A role's template.
    pub fn template(&self, role: Role) -> &PromptTemplate {
        &self.spec.role(role).template
    }

    /// HTTP requests sent to remote engines so far, per role (retries included).
    pub fn requests_sent(&self) -> [u64; 3] {
        [
            self.strong.requests_sent(),
            self.tuned.requests_sent(),
            self.untuned.requests_sent(),
        ]
    }

    /// Has every local model check `interrupt` between micro-batches of a prompt.
    pub(crate) fn set_interrupt(&mut self, interrupt: Option<&Arc<Interrupt>>) {
        if let Some(p) = self.strong.local_mut() {
            p.set_interrupt(interrupt.cloned());
        }
        for s in self.small_models().filter_map(SmallModel::local_mut) {
            s.set_interrupt(interrupt.cloned());
        }
        if let Some(t) = &mut self.twin {
            t.set_interrupt(interrupt.cloned());
        }
    }

    /// Every small model: the main pair, then each extra pair's.
    pub(crate) fn small_models(&mut self) -> impl Iterator<Item = &mut SmallModel> {
        [&mut self.tuned, &mut self.untuned].into_iter().chain(
            self.extra
                .iter_mut()
                .flat_map(|p| [&mut p.tuned, &mut p.untuned]),
        )
    }
}

/// The twin guide of a pair whose halves are one loaded local file (under two templates),
/// unless the spec asks for two passes or the twin cannot read the templates.
fn twin(spec: &EngineSpec, tuned: &SmallModel, untuned: &SmallModel) -> Option<LlamaTwinGuide> {
    let (t, u) = (tuned.local()?, untuned.local()?);
    if !spec.joint_guide || !Arc::ptr_eq(t.model(), u.model()) {
        return None;
    }
    let twin = LlamaTwinGuide::new(
        t.model().clone(),
        t.template().clone(),
        u.template().clone(),
        1.0,
        spec.threads,
    );
    match &twin {
        Ok(_) => tracing::info!("the tuned and untuned halves score in one decode (joint guide)"),
        Err(e) => tracing::warn!(%e, "no joint guide: the halves score in two decodes"),
    }
    twin.ok()
}

/// The file a local role loads: a guide's may be a faster copy ([`w2s_llama::guide_file`]).
fn guide_file(spec: &EngineSpec, role: Role, path: &std::path::Path) -> std::path::PathBuf {
    if role == Role::Strong {
        return path.to_path_buf();
    }
    w2s_llama::guide_file(path, spec.load, spec.threads)
}

/// The template a role reads a request through: its own, or for a chat request
/// (`chat`) where none was given, the model's own chat template if it has one.
pub(crate) fn request_template(
    spec: &EngineSpec,
    role: Role,
    local: Option<&Model>,
    chat: bool,
) -> PromptTemplate {
    let r = spec.role(role);
    let has_chat = match (&r.source, local) {
        (_, Some(model)) => model.chat_template().is_ok(),
        (RoleSource::Remote { spec, .. }, None) => spec.api == w2s_remote::Api::Chat,
        _ => false,
    };
    if chat && !r.template_given && has_chat {
        PromptTemplate::chat_default()
    } else {
        r.template.clone()
    }
}
