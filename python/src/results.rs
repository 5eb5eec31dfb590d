//! A search's result as Python objects (`w2s.Output`, `w2s.Beam`, `w2s.Stats`), made
//! from the library's [`SearchOutput`] directly: one shape, no JSON in between.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use w2s_core::{SearchOutput, SearchStats};

/// One finished candidate.
#[pyclass(module = "w2s._w2s", name = "Beam", frozen, get_all, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct Beam {
    /// The response text (prompt excluded).
    text: String,
    /// The guide's value (beta * (tuned - untuned) for the pair).
    score: f64,
    /// log p_tuned(text | prompt); None when a custom guide replaced the pair.
    tuned_logprob: Option<f64>,
    /// log p_untuned(text | prompt); None when a custom guide replaced the pair.
    untuned_logprob: Option<f64>,
    /// "eos", "stop" or "length".
    finish: String,
    /// Strong-model tokens in this response.
    strong_tokens: usize,
}

#[pymethods]
impl Beam {
    /// A plain dict (JSON-ready).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("text", &self.text)?;
        d.set_item("score", self.score)?;
        d.set_item("tuned_logprob", self.tuned_logprob)?;
        d.set_item("untuned_logprob", self.untuned_logprob)?;
        d.set_item("finish", &self.finish)?;
        d.set_item("strong_tokens", self.strong_tokens)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Beam(text={:?}, score={}, finish={:?}, strong_tokens={})",
            self.text, self.score, self.finish, self.strong_tokens
        )
    }
}

/// Counters and timings (seconds) of one search.
#[pyclass(module = "w2s._w2s", name = "Stats", frozen, get_all, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    strong_tokens_sampled: usize,
    chunks: usize,
    tuned_tokens_evaluated: u64,
    untuned_tokens_evaluated: u64,
    strong_time: f64,
    tuned_time: f64,
    untuned_time: f64,
    total_time: f64,
    /// Time in a custom guide (0 with the tuned / untuned pair).
    guide_time: f64,
}

impl From<&SearchStats> for Stats {
    fn from(s: &SearchStats) -> Self {
        Stats {
            strong_tokens_sampled: s.strong_tokens_sampled,
            chunks: s.chunks,
            tuned_tokens_evaluated: s.tuned_tokens_evaluated,
            untuned_tokens_evaluated: s.untuned_tokens_evaluated,
            strong_time: s.strong_time.as_secs_f64(),
            tuned_time: s.tuned_time.as_secs_f64(),
            untuned_time: s.untuned_time.as_secs_f64(),
            total_time: s.total_time.as_secs_f64(),
            guide_time: s.guide_time.as_secs_f64(),
        }
    }
}

#[pymethods]
impl Stats {
    /// A plain dict (JSON-ready).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("strong_tokens_sampled", self.strong_tokens_sampled)?;
        d.set_item("chunks", self.chunks)?;
        d.set_item("tuned_tokens_evaluated", self.tuned_tokens_evaluated)?;
        d.set_item("untuned_tokens_evaluated", self.untuned_tokens_evaluated)?;
        d.set_item("strong_time", self.strong_time)?;
        d.set_item("tuned_time", self.tuned_time)?;
        d.set_item("untuned_time", self.untuned_time)?;
        d.set_item("total_time", self.total_time)?;
        d.set_item("guide_time", self.guide_time)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Stats(strong_tokens_sampled={}, chunks={}, total_time={:.3})",
            self.strong_tokens_sampled, self.chunks, self.total_time
        )
    }
}

/// The result of one search: every finished row, best first.
#[pyclass(module = "w2s._w2s", name = "Output", frozen, get_all)]
pub struct Output {
    prompt: String,
    method: String,
    seed: u64,
    beams: Py<PyList>,
    stats: Py<Stats>,
    /// Every step of the search when it was asked for with `trace=True` (the shape
    /// `w2s generate --trace` writes), else None.
    trace: Option<Py<PyAny>>,
}

impl Output {
    /// The Python form of `out`, a search of `prompt` by `method` at `seed`.
    pub fn new(
        py: Python<'_>,
        out: &SearchOutput,
        prompt: &str,
        method: &str,
        seed: u64,
    ) -> PyResult<Self> {
        let finite = |v: f64| (!v.is_nan()).then_some(v);
        let beams: Vec<Beam> = out
            .beams
            .iter()
            .map(|b| Beam {
                text: b.text.clone(),
                score: b.score,
                tuned_logprob: finite(b.tuned_logprob),
                untuned_logprob: finite(b.untuned_logprob),
                finish: finish_name(b.finish),
                strong_tokens: b.strong_tokens,
            })
            .collect();
        let trace = match &out.trace {
            None => None,
            Some(t) => {
                // The trace is a deep tree of steps: Python's own JSON reader makes it the
                // dicts and lists the CLI's trace file holds.
                let text = serde_json::to_string(t).map_err(|e| {
                    pyo3::exceptions::PyRuntimeError::new_err(format!("trace: {e}"))
                })?;
                let json = py.import("json")?;
                Some(json.call_method1("loads", (text,))?.unbind())
            }
        };
        Ok(Output {
            prompt: prompt.to_string(),
            method: method.to_string(),
            seed,
            beams: PyList::new(py, beams)?.unbind(),
            stats: Py::new(py, Stats::from(&out.stats))?,
            trace,
        })
    }
}

/// The name a finish reason has in every output ("eos", "stop", "length").
fn finish_name(f: w2s_core::Finish) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{f:?}").to_lowercase())
}

#[pymethods]
impl Output {
    /// The best response.
    #[getter]
    fn text(&self, py: Python<'_>) -> PyResult<String> {
        let best = self.beams.bind(py).get_item(0)?;
        Ok(best.cast::<Beam>()?.get().text.clone())
    }

    /// The best response's guide value.
    #[getter]
    fn score(&self, py: Python<'_>) -> PyResult<f64> {
        let best = self.beams.bind(py).get_item(0)?;
        Ok(best.cast::<Beam>()?.get().score)
    }

    /// A plain dict (JSON-ready).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("prompt", &self.prompt)?;
        d.set_item("method", &self.method)?;
        d.set_item("seed", self.seed)?;
        let beams = PyList::empty(py);
        for b in self.beams.bind(py).iter() {
            beams.append(b.cast::<Beam>()?.get().to_dict(py)?)?;
        }
        d.set_item("beams", beams)?;
        d.set_item("stats", self.stats.get().to_dict(py)?)?;
        d.set_item("trace", self.trace.as_ref().map(|t| t.clone_ref(py)))?;
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Output(prompt={:?}, method={:?}, seed={}, text={:?}, score={})",
            self.prompt,
            self.method,
            self.seed,
            self.text(py)?,
            self.score(py)?
        ))
    }
}
