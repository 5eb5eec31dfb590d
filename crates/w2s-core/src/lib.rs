//! # w2s-core: weak-to-strong search, the algorithm
//!
//! A large "strong" model proposes chunks of text; a beam search keeps the chunks that a
//! small tuned model likes more than its small untuned twin. The guide value of a
//! response `y` to a prompt `x` is
//! `beta * (log pi_tuned(y | x) - log pi_untuned(y | x))`, summed over the whole response
//! so far (and its end-of-sequence token once it has ended).
//!
//! This crate has no I/O: models plug in through two small traits, [`Proposer`] (samples
//! continuations) and [`Scorer`] (scores text). The guide is a third, [`Guide`], whose
//! default is the pair's log-ratio ([`LogRatio`]); [`search_guided`] takes any other
//! (a reward model, a process reward model, a function of the text). Chunk-level beam search, Best-of-N and
//! plain sampling are all [`Method`]s of one [`search`]; the same inputs and seed give the
//! same output.
//!
//! ```
//! use w2s_core::*;
//!
//! /// A toy strong model: appends "a" or "b" at random and ends after 6 letters.
//! struct Letters(Vec<String>);
//! impl Proposer for Letters {
//!     fn begin(&mut self, s: &ProposalSetup<'_>) -> Result<(), BackendError> {
//!         self.0 = vec![String::new(); s.rows];
//!         Ok(())
//!     }
//!     fn extend(&mut self, reqs: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError> {
//!         Ok(reqs.iter_mut().map(|r| {
//!             let letter = if r.rng.next_f64() < 0.5 { "a" } else { "b" };
//!             self.0[r.row].push_str(letter);
//!             let done = self.0[r.row].len() >= 6;
//!             Chunk { text: letter.into(), tokens: 1, finish: done.then_some(Finish::Eos),
//!                     logprob: None }
//!         }).collect())
//!     }
//!     fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
//!         self.0 = parents.iter().map(|&p| self.0[p].clone()).collect();
//!         Ok(())
//!     }
//! }
//! /// A toy scorer: log-probability -1 per letter, but "a" costs only -0.5 if `likes_a`.
//! struct Judge { likes_a: bool }
//! impl Scorer for Judge {
//!     fn begin(&mut self, _: &str, _: usize, _: usize) -> Result<(), BackendError> { Ok(()) }
//!     fn score(&mut self, reqs: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
//!         Ok(reqs.iter().map(|r| r.text.chars()
//!             .map(|c| if c == 'a' && self.likes_a { -0.5 } else { -1.0 }).sum()).collect())
//!     }
//!     fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> { Ok(()) }
//!     fn tokens_evaluated(&self) -> u64 { 0 }
//! }
//!
//! let config = SearchConfig::new(
//!     Method::Cbs { w: 2, k: 4, l: 1 }, 10, 1.0, 42, SamplingParams::default(), vec![],
//! ).unwrap();
//! let (mut strong, mut tuned, mut untuned) =
//!     (Letters(vec![]), Judge { likes_a: true }, Judge { likes_a: false });
//! let out = search(&config, "Say something:", Models {
//!     strong: &mut strong, tuned: &mut tuned, untuned: &mut untuned,
//! }).unwrap();
//! assert_eq!(out.best().text, "aaaaaa"); // the guide prefers "a"
//! assert_eq!(out.best().score, 3.0);
//! ```
#![deny(missing_docs)]

mod backend;
mod config;
mod error;
mod gold;
mod guide;
mod interrupt;
mod many;
mod output;
pub mod rng;
pub mod sampling;
mod search;
mod state;
mod template;
pub mod text;
mod trace;

pub use backend::{
    score_texts, Chunk, ExtendRequest, Finish, ProposalSetup, Proposer, ProposerPool, ScoreRequest,
    Scorer,
};
pub use config::{
    defaults, shown_f32, EntropyEnd, Method, SamplingParams, SearchConfig, MAX_SEARCH_ROWS,
};
pub use error::{BackendError, ConfigError, ErrorKind, Role, SearchError};
pub use gold::GoldReward;
pub use guide::{check_weights, Guide, GuideScore, LogRatio, ValueFn, WeightedSum};
pub use interrupt::Interrupt;
pub use many::{search_many, search_many_each, ManyJob, Places};
pub use output::{Beam, Progress, SearchOutput, SearchStats};
pub use rng::RowRng;
pub use search::{search, search_guided, search_with_progress, Models};
pub use state::{rank, Action, SearchState};
pub use template::{ChatRole, ChatTurn, FilledPrompt, PromptTemplate};
pub use trace::{TermName, Trace, TraceRow, TraceStep};
