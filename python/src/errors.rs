//! One map from the library's error kinds to Python exceptions: bad settings or input
//! raise `ValueError`, a cancelled search `KeyboardInterrupt`, everything else (a remote
//! engine, a model, w2s itself) `w2s.W2sError`. An exception raised by the caller's own
//! Python object inside a search is raised again as it was.

use std::sync::{Arc, Mutex};

use pyo3::create_exception;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::PyErr;
use w2s_core::ErrorKind;

create_exception!(
    _w2s,
    W2sError,
    PyRuntimeError,
    "A model backend (local or remote) or w2s itself failed."
);

/// Where a Python callback's exception waits until the search has unwound.
pub type Slot = Arc<Mutex<Option<PyErr>>>;

/// Stores `err` (the first one wins) and returns its text.
pub fn keep(slot: &Slot, err: PyErr) -> String {
    let text = err.to_string();
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        *s = Some(err);
    }
    text
}

/// The Python exception for a library error of `kind` saying `message`, or the caller's
/// own exception if one of its objects raised during the call.
pub fn to_py(slot: &Slot, kind: ErrorKind, message: String) -> PyErr {
    if let Some(e) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return e;
    }
    match kind {
        ErrorKind::Input => PyValueError::new_err(message),
        ErrorKind::Cancelled => PyKeyboardInterrupt::new_err(message),
        _ => W2sError::new_err(message),
    }
}

/// `ValueError(message)`.
pub fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}
