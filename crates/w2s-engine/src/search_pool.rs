//! Searches of a local strong model stepped together as they arrive (a server's
//! requests): [`w2s_core::Places`] over one [`LlamaProposerPool`], each place guided by
//! the pair of an engine of its own, each search with its own history, template,
//! settings and interrupt.

use std::ops::ControlFlow;
use std::sync::Arc;

use w2s_core::{Guide, ManyJob, Places, Progress, Role, SearchError, SearchOutput};
use w2s_llama::{templated_prompt_tokens, LlamaProposerPool, Model};

use crate::engine::request_template;
use crate::pooled::{can_pool, place_guide};
use crate::{Engine, EngineError, SearchRequest};

/// Up to `places` searches in flight on one context of a local strong model, the rows of
/// every search due for a chunk sampled in one decode per token; a search joins at the
/// next step after it arrives and frees its place as it ends.
///
/// The context is made for the largest search seen (rows, new tokens, prompt tokens): a
/// search that does not fit waits ([`Admission::Wait`]) until the searches running have
/// ended, then the context is made anew, large enough. [`SearchPool::shrink`] gives a
/// large one back while nothing runs.
pub struct SearchPool {
    engines: Vec<Engine>,
    places: Places,
    /// Per place: the job running there and its beta.
    owners: Vec<Option<(usize, f64)>>,
    pool: Option<LlamaProposerPool>,
    /// What the pool was made for: rows, new tokens, prompt tokens.
    made_for: (usize, usize, usize),
    model: Arc<Model>,
}

/// What [`SearchPool::admit`] did with a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It runs in `place`; its templated prompt is `prompt_tokens` strong-model tokens.
    Started {
        /// Its place (a number below the pool's places).
        place: usize,
        /// Strong-model prompt tokens.
        prompt_tokens: usize,
    },
    /// No place or no room for it now: ask again after a search has ended.
    Wait,
}

impl SearchPool {
    /// `places` places on replicas of `engine`; an input error where the engine cannot
    /// pool ([`can_pool`]). No context is made before the first search.
    pub fn new(engine: Engine, places: usize) -> Result<Self, EngineError> {
        if !can_pool(&engine) {
            return Err(EngineError::input(
                "pooled searches need a local strong model guided by the tuned / untuned pair alone",
            ));
        }
        let model = engine
            .role_model(Role::Strong)
            .ok_or_else(|| EngineError::input("no local strong model"))?
            .clone();
        let engines = engine.replicas(places.max(1))?;
        let n = engines.len();
        Ok(SearchPool {
            engines,
            places: Places::new(n),
            owners: vec![None; n],
            pool: None,
            made_for: (0, 0, 0),
            model,
        })
    }

    /// The first place's engine, for work beside the searches between steps (plain
    /// requests, the strong model's log-probabilities of an answer): its own contexts,
    /// not the pool's.
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engines[0]
    }

    /// Searches running.
    pub fn running(&self) -> usize {
        self.places.running()
    }

    /// Tokens of cache the pool's context holds (0 before the first search).
    pub fn context_tokens(&self) -> usize {
        self.pool
            .as_ref()
            .map_or(0, LlamaProposerPool::context_tokens)
    }

    /// Starts `request` as job number `job` in a free place, decoding its prompt (checked
    /// against `request.interrupt`); [`Admission::Wait`] where no place is free or it does
    /// not fit the context while others run. An error is the request's alone (its
    /// template, its prompt, its guide's prompt); nothing else is disturbed.
    pub fn admit(
        &mut self,
        job: usize,
        request: &SearchRequest<'_>,
    ) -> Result<Admission, EngineError> {
        let config = request.config;
        let spec = &self.engines[0].spec;
        let template = request_template(spec, Role::Strong, Some(&self.model), request.chat)
            .with_history(request.history)
            .map_err(|e| EngineError::input(format!("the strong model's {e}")))?;
        let prompt_tokens = templated_prompt_tokens(&self.model, &template, request.prompt)
            .map_err(|source| SearchError::Backend {
                role: Role::Strong,
                source,
            })?;
        let (rows, max_new) = (config.method().rows(), config.max_new_tokens());
        if LlamaProposerPool::max_searches(rows) == 0 {
            return Err(EngineError::input(format!(
                "a pooled search has at most {} rows (W * K); this one has {rows}",
                LlamaProposerPool::max_searches(1) / 2
            )));
        }
        let fits = self
            .pool
            .as_ref()
            .is_some_and(|p| p.fits(rows, max_new, prompt_tokens));
        if !fits {
            if !self.places.is_empty() {
                return Ok(Admission::Wait);
            }
            self.remake(rows, max_new, prompt_tokens)?;
        }
        let Some(pool) = self.pool.as_mut() else {
            return Err(EngineError::input("no context for pooled searches"));
        };
        let free = (0..pool.capacity().min(self.places.len())).find(|&p| self.places.is_free(p));
        let Some(place) = free else {
            return Ok(Admission::Wait);
        };
        let engine = &mut self.engines[place];
        engine.apply_turns(request.history, request.chat)?;
        let beta = config.beta();
        if let Some(twin) = engine.twin.as_mut().filter(|_| engine.twin_ready) {
            twin.set_beta(beta)
                .map_err(|e| EngineError::input(e.to_string()))?;
        }
        engine.set_interrupt(request.interrupt);
        pool.set_template(template);
        pool.set_interrupt(request.interrupt.cloned());
        let spec = ManyJob {
            config: config.clone(),
            prompt: request.prompt.to_string(),
        };
        let mut guide = place_guide(engine, beta);
        let started = self.places.start(place, job, spec, &mut *guide, pool);
        drop(guide);
        // The shared decodes answer to no one search's interrupt: a search that goes away
        // ends at its next selection.
        pool.set_interrupt(None);
        match started {
            Ok(()) => {
                self.owners[place] = Some((job, beta));
                Ok(Admission::Started {
                    place,
                    prompt_tokens,
                })
            }
            Err(e) => {
                self.engines[place].set_interrupt(None);
                Err(e.into())
            }
        }
    }

    /// One round of every running search ([`Places::step`]): each ended search's result
    /// goes to `done(job, result)`. A failure of the strong model in the shared decode
    /// ends every running search: the pool is emptied and its context made anew for the
    /// next, and the error returned (the caller fails the searches it had admitted).
    pub fn step(
        &mut self,
        progress: &mut dyn FnMut(usize, &Progress<'_>) -> bool,
        done: &mut dyn FnMut(usize, Result<SearchOutput, EngineError>),
    ) -> Result<(), EngineError> {
        let Some(pool) = self.pool.as_mut() else {
            return Ok(());
        };
        let mut owned: Vec<Box<dyn Guide + '_>> = self
            .engines
            .iter_mut()
            .zip(&self.owners)
            .map(|(e, o)| place_guide(e, o.map_or(1.0, |(_, beta)| beta)))
            .collect();
        let mut guides: Vec<&mut dyn Guide> = owned
            .iter_mut()
            .map(|g| &mut **g as &mut dyn Guide)
            .collect();
        let stepped = self
            .places
            .step(&mut guides, pool, progress, &mut |job, r| {
                done(job, r.map_err(EngineError::from));
                ControlFlow::Continue(())
            });
        drop(guides);
        drop(owned);
        for (place, owner) in self.owners.iter_mut().enumerate() {
            if owner.is_some() && self.places.is_free(place) {
                *owner = None;
                self.engines[place].set_interrupt(None);
            }
        }
        if let Err(e) = stepped {
            self.reset();
            return Err(e.into());
        }
        Ok(())
    }

    /// Drops every running search and the context, and frees each engine's contexts (after
    /// a failure or a panic, when they may be half-updated); returns the dropped jobs.
    pub fn reset(&mut self) -> Vec<usize> {
        let dropped = match self.pool.as_mut() {
            Some(pool) => self.places.clear(pool),
            None => Vec::new(),
        };
        self.pool = None;
        self.made_for = (0, 0, 0);
        self.owners.fill(None);
        for e in &mut self.engines {
            e.set_interrupt(None);
            crate::LocalModels::release_contexts(e);
        }
        dropped
    }

    /// While nothing runs: frees the pool's context if it holds more than `max_tokens`
    /// tokens, and each engine's contexts over that ([`crate::LocalModels::shrink_contexts`]).
    /// Whether any was freed.
    pub fn shrink(&mut self, max_tokens: usize) -> bool {
        if !self.places.is_empty() {
            return false;
        }
        let mut freed = false;
        if self.context_tokens() > max_tokens {
            self.pool = None;
            self.made_for = (0, 0, 0);
            freed = true;
        }
        for e in &mut self.engines {
            freed |= crate::LocalModels::shrink_contexts(e, max_tokens);
        }
        freed
    }

    /// A new context, for searches as large as the largest so far and this one.
    fn remake(
        &mut self,
        rows: usize,
        max_new: usize,
        prompt_tokens: usize,
    ) -> Result<(), EngineError> {
        let (r, m, p) = self.made_for;
        let made_for = (r.max(rows), m.max(max_new), p.max(prompt_tokens));
        let places = self
            .places
            .len()
            .min(LlamaProposerPool::max_searches(made_for.0));
        self.pool = None;
        let first = &self.engines[0];
        let pool = LlamaProposerPool::new(
            self.model.clone(),
            first.template(Role::Strong).clone(),
            first.spec().threads,
            places,
            made_for.0,
            made_for.1,
            made_for.2,
        )
        .map_err(|source| EngineError::Local {
            role: Role::Strong,
            source,
        })?;
        tracing::info!(
            places,
            rows = made_for.0,
            new_tokens = made_for.1,
            prompt_tokens = made_for.2,
            "searches in flight share one context of the strong model"
        );
        self.pool = Some(pool);
        self.made_for = made_for;
        Ok(())
    }
}
