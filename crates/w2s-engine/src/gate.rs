//! The compute gate: local forward passes of searches in flight together take the CPU
//! oldest search first, and the gated wrappers that hold it around local model calls.

use std::sync::{Arc, Condvar, Mutex};

use w2s_core::{
    BackendError, Chunk, ExtendRequest, Guide, GuideScore, ProposalSetup, Proposer, ScoreRequest,
    Scorer, SearchError, SearchStats,
};
use w2s_llama::LlamaTwinGuide;

use crate::roles::{SmallModel, Strong};

/// A lock that hands the CPU to the waiting search that arrived first (the lowest rank,
/// which the engine gives each search it starts). Searches in flight together therefore do not interleave
/// their forward passes while the oldest can run (each keeps its buffers warm, and they
/// finish in arrival order, as one at a time would); when the oldest waits on a remote
/// engine, the next one runs.
#[derive(Debug, Default)]
pub struct OrderedGate {
    state: Mutex<GateState>,
    turn: Condvar,
    /// Engines on other threads take turns here: each turn ends by ending its thread's
    /// CPU helper threads ([`w2s_llama::release_cpu_threads`]), so that only the thread
    /// computing holds a team and the CPU is never oversubscribed by idle teams.
    shared: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct GateState {
    held: bool,
    waiting: std::collections::BinaryHeap<std::cmp::Reverse<u64>>,
}

/// A held turn on the CPU; the next in line gets it when this is dropped.
pub struct CpuTurn<'a>(&'a OrderedGate);

impl OrderedGate {
    /// Waits until no caller of a lower rank waits and the CPU is free.
    pub fn hold(&self, rank: u64) -> CpuTurn<'_> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.waiting.push(std::cmp::Reverse(rank));
        while s.held || s.waiting.peek() != Some(&std::cmp::Reverse(rank)) {
            s = self.turn.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.waiting.pop();
        s.held = true;
        CpuTurn(self)
    }
}

impl OrderedGate {
    /// Marks the gate as taken by engines on several threads.
    pub(crate) fn share(&self) {
        self.shared
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for CpuTurn<'_> {
    fn drop(&mut self) {
        if self.0.shared.load(std::sync::atomic::Ordering::Relaxed) {
            w2s_llama::release_cpu_threads();
        }
        let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        s.held = false;
        drop(s);
        self.0.turn.notify_all();
    }
}

/// The gate every engine of one family takes around a local forward pass.
#[derive(Clone, Default)]
pub struct ComputeGate(pub(crate) Arc<OrderedGate>);

impl ComputeGate {
    /// Holds the CPU for local model work of a job of `rank` until the turn is dropped.
    pub fn hold(&self, rank: u64) -> CpuTurn<'_> {
        self.0.hold(rank)
    }
}

pub(crate) fn hold_if(gate: &OrderedGate, rank: u64, local: bool) -> Option<CpuTurn<'_>> {
    local.then(|| gate.hold(rank))
}

/// The strong model with the compute gate held around local calls.
pub(crate) struct GatedStrong<'a> {
    pub(crate) inner: &'a mut Strong,
    pub(crate) gate: &'a OrderedGate,
    pub(crate) rank: u64,
}

impl Proposer for GatedStrong<'_> {
    fn begin(&mut self, setup: &ProposalSetup<'_>) -> Result<(), BackendError> {
        let _g = hold_if(self.gate, self.rank, self.inner.local().is_some());
        self.inner.begin(setup)
    }
    fn extend(&mut self, requests: &mut [ExtendRequest<'_>]) -> Result<Vec<Chunk>, BackendError> {
        let _g = hold_if(self.gate, self.rank, self.inner.local().is_some());
        self.inner.extend(requests)
    }
    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        let _g = hold_if(self.gate, self.rank, self.inner.local().is_some());
        self.inner.reorder(parents)
    }
}

/// The twin guide (one model under both templates) with the compute gate held around
/// each call.
pub(crate) struct GatedTwin<'a> {
    pub(crate) inner: &'a mut LlamaTwinGuide,
    pub(crate) gate: &'a OrderedGate,
    pub(crate) rank: u64,
}

impl Guide for GatedTwin<'_> {
    fn begin(
        &mut self,
        prompt: &str,
        rows: usize,
        max_new: usize,
        stats: &mut SearchStats,
    ) -> Result<(), SearchError> {
        let _g = self.gate.hold(self.rank);
        self.inner.begin(prompt, rows, max_new, stats)
    }
    fn score(
        &mut self,
        requests: &[ScoreRequest<'_>],
        stats: &mut SearchStats,
    ) -> Result<Vec<GuideScore>, SearchError> {
        let _g = self.gate.hold(self.rank);
        self.inner.score(requests, stats)
    }
    fn reorder(&mut self, parents: &[usize], stats: &mut SearchStats) -> Result<(), SearchError> {
        let _g = self.gate.hold(self.rank);
        self.inner.reorder(parents, stats)
    }
    fn finish(&mut self, stats: &mut SearchStats) {
        self.inner.finish(stats);
    }
}

/// A guide with the compute gate held around local calls.
pub(crate) struct GatedGuide<'a> {
    pub(crate) inner: &'a mut SmallModel,
    pub(crate) gate: &'a OrderedGate,
    pub(crate) rank: u64,
}

impl Scorer for GatedGuide<'_> {
    fn begin(&mut self, prompt: &str, rows: usize, max_new: usize) -> Result<(), BackendError> {
        let _g = hold_if(self.gate, self.rank, self.inner.local().is_some());
        self.inner.begin(prompt, rows, max_new)
    }
    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        let _g = hold_if(self.gate, self.rank, self.inner.local().is_some());
        self.inner.score(requests)
    }
    fn reorder(&mut self, parents: &[usize]) -> Result<(), BackendError> {
        let _g = hold_if(self.gate, self.rank, self.inner.local().is_some());
        self.inner.reorder(parents)
    }
    fn tokens_evaluated(&self) -> u64 {
        self.inner.tokens_evaluated()
    }
}
