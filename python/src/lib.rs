//! Python bindings of w2s. The native module `w2s._w2s` only translates: settings into
//! [`w2s_engine::RunSettings`], Python objects into the library's traits
//! ([`w2s_core::Scorer`], [`w2s_core::Guide`], [`w2s_core::GoldReward`]), a search's
//! result into Python objects (`Output`, `Beam`, `Stats`), summaries into JSON for the
//! pure-Python layer (`w2s/__init__.py`), and errors into Python exceptions.
//! Every search runs with the GIL released, on a helper thread, while the calling thread
//! watches for Ctrl-C.

mod errors;
mod judge;
mod objects;
mod results;
mod run;
mod searcher;
mod settings;

use pyo3::prelude::*;

/// The native part of the `w2s` package.
#[pymodule]
fn _w2s(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("W2sError", m.py().get_type::<errors::W2sError>())?;
    m.add_class::<searcher::Searcher>()?;
    m.add_class::<searcher::LocalScorer>()?;
    m.add_class::<judge::PairJudge>()?;
    m.add_class::<results::Output>()?;
    m.add_class::<results::Beam>()?;
    m.add_class::<results::Stats>()?;
    m.add_function(wrap_pyfunction!(searcher::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(searcher::report, m)?)?;
    m.add_function(wrap_pyfunction!(searcher::quantize, m)?)?;
    m.add_function(wrap_pyfunction!(searcher::resolve_model, m)?)?;
    m.add_function(wrap_pyfunction!(searcher::trace_html, m)?)?;
    m.add_function(wrap_pyfunction!(searcher::guide_check, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
