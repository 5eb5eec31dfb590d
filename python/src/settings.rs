//! Settings from Python: the keyword arguments of `Searcher` and `evaluate` come as one
//! dict, read into [`RunSettings`] by its own serde derive, so the settings are listed
//! once, in `w2s_engine::RunSettings` (a guide pair, likewise, into
//! [`w2s_engine::GuideTable`]).

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use w2s_engine::{GuideTable, RunSettings};

/// Settings of [`RunSettings`] that are no keyword arguments: the method and seed are
/// arguments of `generate` and `evaluate`'s `methods` and `seeds`, and remote model
/// tables come from a config file only.
const NOT_KEYWORDS: &[&str] = &[
    "method",
    "w",
    "width",
    "k",
    "successors",
    "l",
    "chunk_len",
    "n",
    "seed",
    "models",
];

/// The keyword settings: those [`RunSettings`] reads, and `config` (the file they come
/// from).
fn keywords() -> Vec<&'static str> {
    let mut known: Vec<&str> = fields::<RunSettings>()
        .iter()
        .copied()
        .filter(|k| !NOT_KEYWORDS.contains(k))
        .chain(["config"])
        .collect();
    known.sort_unstable();
    known.dedup();
    known
}

/// The run settings of a dict of keyword settings (unset ones `None`). A key that is no
/// setting, or a value of the wrong type, raises `TypeError`; values are checked later,
/// with the rest of the settings.
pub fn run_settings(settings: &Bound<'_, PyDict>) -> PyResult<RunSettings> {
    let known = keywords();
    let mut unknown = Vec::new();
    for key in settings.keys() {
        let key: String = key.extract()?;
        if !known.contains(&key.as_str()) {
            unknown.push(key);
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(PyTypeError::new_err(format!(
            "unknown setting(s): {}; known: {}",
            unknown.join(", "),
            known.join(", ")
        )));
    }
    let mut table = to_table(settings, "settings")?;
    let config = match table.remove("config") {
        None => None,
        Some(toml::Value::String(path)) => Some(PathBuf::from(path)),
        Some(other) => {
            return Err(PyTypeError::new_err(format!(
                "config must be a path, got {other}"
            )))
        }
    };
    let mut run = RunSettings::deserialize(toml::Value::Table(table))
        .map_err(|e| PyTypeError::new_err(format!("settings: {e}")))?;
    run.config = config;
    Ok(run)
}

/// A pair of a weighted guide from a dict with the keys of the CLI's `--guide` table.
pub fn guide_table(table: &Bound<'_, PyDict>) -> PyResult<GuideTable> {
    GuideTable::deserialize(toml::Value::Table(to_table(table, "a guide")?))
        .map_err(|e| PyTypeError::new_err(format!("a guide: {e}")))
}

/// A dict as a TOML table (the shape of a config file), without its `None` values.
fn to_table(dict: &Bound<'_, PyDict>, what: &str) -> PyResult<toml::Table> {
    let mut table = toml::Table::new();
    for (key, value) in dict.iter() {
        let key: String = key.extract()?;
        if let Some(v) = to_toml(&value, &format!("{what}: {key}"))? {
            table.insert(key, v);
        }
    }
    Ok(table)
}

/// A Python value as a TOML value; `None` for `None` (an unset setting).
fn to_toml(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<toml::Value>> {
    let v = if value.is_none() {
        return Ok(None);
    } else if value.is_instance_of::<PyBool>() {
        toml::Value::Boolean(value.extract()?)
    } else if value.is_instance_of::<PyInt>() {
        toml::Value::Integer(value.extract()?)
    } else if value.is_instance_of::<PyFloat>() {
        toml::Value::Float(value.extract()?)
    } else if value.is_instance_of::<PyString>() {
        toml::Value::String(value.extract()?)
    } else if let Ok(dict) = value.cast::<PyDict>() {
        toml::Value::Table(to_table(dict, what)?)
    } else if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in value.try_iter()? {
            let item = to_toml(&item?, what)?
                .ok_or_else(|| PyTypeError::new_err(format!("{what}: None in a list")))?;
            items.push(item);
        }
        toml::Value::Array(items)
    } else {
        let kind = value.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "{what}: a {kind} is no setting's value"
        )));
    };
    Ok(Some(v))
}

/// The keys serde's derive reads into `T` (its field list).
fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldList(&mut fields));
    fields
}

/// A deserializer that only notes the fields of the struct asked for.
struct FieldList<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldList<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields noted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}
