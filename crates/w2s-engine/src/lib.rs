//! # w2s-engine: which model plays which role
//!
//! A weak-to-strong search needs three models: the strong model that samples, and the
//! small tuned / untuned pair whose log-probability ratio guides it. Each role may be a
//! local GGUF file run by llama.cpp ([`w2s_llama`]) or a remote OpenAI-compatible engine
//! ([`w2s_remote`]: vLLM, SGLang, llama.cpp's `llama-server`, llama-cpp-python, another
//! w2s), in any mix. This crate owns that choice for every front end (the CLI, the HTTP
//! server, the evaluation harness, bindings):
//! - [`RunSettings`]: the settings as flags (with the `clap` feature) and a TOML config
//!   file give them, including `URL#MODEL` model arguments and `[models.ROLE]` tables;
//!   [`RunSettings::check`] turns them into an [`EngineSpec`] and a
//!   [`w2s_core::SearchConfig`];
//! - [`Engine::build`]: the three models for that spec (a file used by two roles is
//!   loaded once), ready to [`Engine::run`] a [`SearchRequest`] (prompt, history,
//!   configuration, rank at the compute gate, interrupt: everything that varies between
//!   searches, passed as one value; the engine keeps none of it);
//! - [`in_flight`]: N searches in flight together on [`Engine::replicas`], for the batch
//!   front ends;
//! - [`PromptCheck`]: prompt-length checks against every local model's context;
//! - [`EngineError`]: one error type whose [`EngineError::kind`] says whether the input,
//!   a remote engine or w2s itself is at fault.
//!
//! ```no_run
//! use w2s_engine::{Engine, EngineSpec, RoleSpec};
//! use w2s_core::{PromptTemplate, SearchConfig};
//!
//! let spec = EngineSpec::new(
//!     // The strong model behind an engine, the guide pair local.
//!     RoleSpec::parse(w2s_core::Role::Strong, Some("http://127.0.0.1:8000/v1#gemma"), None,
//!         Some("Here is a movie review from imdb: {prompt}"))?,
//!     RoleSpec::local("smollm2-135m-instruct",
//!         PromptTemplate::new("chat:Write a very positive movie review.||{prompt}")?),
//!     RoleSpec::local("smollm2-135m-instruct", PromptTemplate::bare()),
//! );
//! let mut engine = Engine::build(&spec)?;
//! let out = engine.search(&SearchConfig::default(), "I rented this movie last weekend and")?;
//! println!("{} (guide value {:.2})", out.best().text, out.best().score);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod custom;
mod engine;
mod error;
mod gate;
mod inflight;
mod local;
mod pooled;
mod prompt_check;
mod request;
mod rescore;
mod roles;
mod search_pool;
mod settings;
mod spec;

pub use custom::{CustomParts, UnusedScorer};
pub use engine::Engine;
pub use error::EngineError;
pub use gate::{ComputeGate, CpuTurn, OrderedGate};
pub use inflight::{default_parallel, in_flight, parallel_for, MAX_PARALLEL};
pub use local::LocalModels;
pub use pooled::{can_pool, search_pooled};
pub use prompt_check::{PromptCheck, PromptTokens};
pub use request::SearchRequest;
pub use roles::{CustomScorers, SmallModel, Strong};
pub use search_pool::{Admission, SearchPool};
pub use settings::{read_config, shown_f32, Checked, RunSettings};
pub use spec::{EngineSpec, GuideSpec, GuideTable, ModelTables, RoleSource, RoleSpec, ROLES};
