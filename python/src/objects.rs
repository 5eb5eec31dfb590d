//! Python objects in the library's roles. The Python layer hands each as one callable of
//! a fixed shape (it adapts methods, numpy arrays and per-text functions first):
//! - a scorer or a guide: `f(prompt, texts, ended) -> list[float]`;
//! - a gold reward: `f(prompt, response) -> float`.

use pyo3::prelude::*;
use w2s_core::{BackendError, ErrorKind, GoldReward, ScoreRequest, Scorer};

use crate::errors::{keep, Slot};

/// Calls `f(prompt, texts, ended)`; a Python exception is kept in `slot`.
pub fn values(
    f: &Py<PyAny>,
    slot: &Slot,
    what: &str,
    prompt: &str,
    texts: &[&str],
    ended: &[bool],
) -> Result<Vec<f64>, BackendError> {
    let got: Result<Vec<f64>, String> = Python::attach(|py| {
        f.call1(py, (prompt, texts.to_vec(), ended.to_vec()))
            .and_then(|v| v.extract::<Vec<f64>>(py))
            .map_err(|e| keep(slot, e))
    });
    // The search checks the number of values; a NaN would rank silently last.
    let values =
        got.map_err(|e| BackendError::new(ErrorKind::Internal, format!("{what} raised {e}")))?;
    if let Some(i) = values.iter().position(|v| v.is_nan()) {
        return Err(BackendError::internal(format!(
            "{what} returned NaN for text {i}"
        )));
    }
    Ok(values)
}

/// A Python scorer in the tuned or untuned role: given the prompt as the user wrote it
/// and each whole response so far, it returns log-probabilities (it applies its own
/// template). It keeps no state here: every call sends whole texts.
pub struct PyScorer {
    f: Py<PyAny>,
    what: String,
    prompt: String,
    slot: Slot,
}

impl PyScorer {
    /// `f` as the scorer named `what` (e.g. "the tuned scorer MyModel").
    pub fn new(f: Py<PyAny>, what: String, slot: Slot) -> Self {
        PyScorer {
            f,
            what,
            prompt: String::new(),
            slot,
        }
    }
}

impl Scorer for PyScorer {
    fn begin(&mut self, prompt: &str, _: usize, _: usize) -> Result<(), BackendError> {
        self.prompt = prompt.to_string();
        Ok(())
    }

    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        let texts: Vec<&str> = requests.iter().map(|r| r.text).collect();
        let ended: Vec<bool> = requests.iter().map(|r| r.ended).collect();
        values(
            &self.f,
            &self.slot,
            &self.what,
            &self.prompt,
            &texts,
            &ended,
        )
    }

    fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> {
        Ok(())
    }

    fn tokens_evaluated(&self) -> u64 {
        0
    }
}

/// A Python gold reward: `f(prompt, response) -> float`.
pub struct PyGold {
    f: Py<PyAny>,
    name: String,
    slot: Slot,
}

impl PyGold {
    /// `f` as the gold reward `name`.
    pub fn new(f: Py<PyAny>, name: String, slot: Slot) -> Self {
        PyGold { f, name, slot }
    }
}

impl GoldReward for PyGold {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&mut self, prompt: &str, response: &str) -> Result<f64, BackendError> {
        let got: Result<f64, String> = Python::attach(|py| {
            self.f
                .call1(py, (prompt, response))
                .and_then(|v| v.extract::<f64>(py))
                .map_err(|e| keep(&self.slot, e))
        });
        let v = got.map_err(|e| BackendError::internal(format!("raised {e}")))?;
        if v.is_nan() {
            return Err(BackendError::internal("returned NaN"));
        }
        Ok(v)
    }
}
