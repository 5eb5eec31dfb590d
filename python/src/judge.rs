//! The pairwise judge of the `pairwise` gold reward, as a Python object: `w2s.train` labels
//! preference pairs with it, the same judge (and the same prompt) that `w2s eval` uses.

use std::sync::Mutex;

use pyo3::prelude::*;
use w2s_core::BackendError;

use crate::errors::{to_py, value_error, Slot};

/// A local model that compares two responses to one instruction, in both orders.
#[pyclass(module = "w2s._w2s")]
pub struct PairJudge {
    judge: Mutex<w2s_llama::PairJudge>,
    slot: Slot,
}

#[pymethods]
impl PairJudge {
    #[new]
    #[pyo3(signature = (model=None, threads=None, gpu_layers=0))]
    fn new(
        py: Python<'_>,
        model: Option<&str>,
        threads: Option<usize>,
        gpu_layers: u32,
    ) -> PyResult<Self> {
        let slot = Slot::default();
        if threads == Some(0) {
            return Err(value_error("threads must be at least 1"));
        }
        let threads =
            threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let path = w2s_llama::resolve_model(model.unwrap_or(w2s_eval::DEFAULT_JUDGE));
        let options = w2s_llama::LoadOptions {
            gpu_layers,
            keep_guide_weights: true,
        };
        let judge = py
            .detach(|| {
                let model = w2s_llama::Model::load(&path, options)?;
                w2s_llama::PairJudge::new(model, threads)
            })
            .map_err(|e| {
                let e = BackendError::from(e);
                to_py(&slot, e.kind(), e.to_string())
            })?;
        Ok(PairJudge {
            judge: Mutex::new(judge),
            slot,
        })
    }

    /// The judge's model file.
    #[getter]
    fn path(&self) -> String {
        let judge = self.judge.lock().unwrap_or_else(|p| p.into_inner());
        judge.path().display().to_string()
    }

    /// Judges `a` against `b` as responses to `instruction`, in both orders:
    /// `(p_a_first, p_a_second, answer_mass)`, each `p` the probability that `a` is the
    /// better response when it is shown first / second, and `answer_mass` the probability
    /// the judge puts on the two answer letters (near 1: it answers as asked).
    fn compare(
        &self,
        py: Python<'_>,
        instruction: &str,
        a: &str,
        b: &str,
    ) -> PyResult<(f64, f64, f64)> {
        let got = py.detach(|| {
            let mut judge = self.judge.lock().unwrap_or_else(|p| p.into_inner());
            judge.compare(instruction, a, b)
        });
        let v = got.map_err(|e| {
            let e = BackendError::from(e);
            to_py(&self.slot, e.kind(), e.to_string())
        })?;
        Ok((v.a_first, v.a_second, v.answer_mass))
    }
}
