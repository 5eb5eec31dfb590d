//! Search traces as files and as a page a researcher can read: one JSON line per search
//! (`w2s generate --trace`), drawn into one self-contained HTML file (`w2s trace`): the
//! beam tree step by step, the final text with each chunk's share of the guide value,
//! and a gold reward beside the guide where one is given.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use w2s_core::{GoldReward, SearchConfig, SearchOutput, Trace};

use crate::error::{usage, EvalError};

/// One traced search, as a line of a trace file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// The prompt's id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// The search method.
    pub method: String,
    /// The seed.
    pub seed: u64,
    /// The best response.
    pub text: String,
    /// Its guide value (`None` if not a number).
    pub score: Option<f64>,
    /// Every step.
    pub trace: Trace,
}

impl TraceRecord {
    /// The record of a traced search; `None` if the search was not traced.
    pub fn new(
        id: &str,
        prompt: &str,
        config: &SearchConfig,
        out: &SearchOutput,
    ) -> Option<TraceRecord> {
        Some(TraceRecord {
            id: id.to_string(),
            prompt: prompt.to_string(),
            method: config.method().to_string(),
            seed: config.seed(),
            text: out.best().text.clone(),
            score: Some(out.best().score).filter(|s| s.is_finite()),
            trace: out.trace.clone()?,
        })
    }

    /// Writes the record as one JSON line.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// Reads a trace file; an error names the file and line.
pub fn read_traces(path: &Path) -> Result<Vec<TraceRecord>, EvalError> {
    let file = std::fs::File::open(path)
        .map_err(|e| usage(format!("cannot read trace file {}: {e}", path.display())))?;
    let mut records = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.map_err(|e| usage(format!("cannot read trace file {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: TraceRecord = serde_json::from_str(&line).map_err(|e| {
            usage(format!(
                "{} line {}: not a trace written by `w2s generate --trace` ({e})",
                path.display(),
                i + 1
            ))
        })?;
        check(&r).map_err(|m| usage(format!("{} line {}: {m}", path.display(), i + 1)))?;
        records.push(r);
    }
    if records.is_empty() {
        return Err(usage(format!(
            "trace file {} holds no searches",
            path.display()
        )));
    }
    Ok(records)
}

/// Parents must name rows of the step before.
fn check(r: &TraceRecord) -> Result<(), String> {
    for (s, step) in r.trace.steps.iter().enumerate() {
        for (i, row) in step.rows.iter().enumerate() {
            let ok = match (s, row.parent) {
                (_, None) => s == 0,
                (0, Some(_)) => false,
                (_, Some(p)) => p < r.trace.steps[s - 1].rows.len(),
            };
            if !ok {
                return Err(format!(
                    "step {} row {i} names a parent that does not exist",
                    s + 1
                ));
            }
        }
    }
    Ok(())
}

/// The whole text of every candidate: `texts[s][r]`, built along the parents.
pub fn candidate_texts(trace: &Trace) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::with_capacity(trace.steps.len());
    for step in &trace.steps {
        let texts = step
            .rows
            .iter()
            .map(|row| {
                let before = match (out.last(), row.parent) {
                    (Some(prev), Some(p)) => prev.get(p).map_or("", String::as_str),
                    _ => "",
                };
                format!("{before}{}", row.chunk)
            })
            .collect();
        out.push(texts);
    }
    out
}

/// The page for `records`; with `gold`, every candidate's whole text so far is scored
/// by it and shown beside the guide value.
pub fn trace_page(
    records: &[TraceRecord],
    mut gold: Option<&mut dyn GoldReward>,
) -> Result<String, EvalError> {
    let mut data = Vec::with_capacity(records.len());
    for r in records {
        let golds = match gold.as_deref_mut() {
            None => None,
            Some(g) => {
                let texts = candidate_texts(&r.trace);
                let mut rows = Vec::with_capacity(texts.len());
                for step in &texts {
                    let mut values = Vec::with_capacity(step.len());
                    for t in step {
                        values.push(g.score(&r.prompt, t).map_err(|e| {
                            EvalError::Internal(format!("gold {} failed: {e}", g.name()))
                        })?);
                    }
                    rows.push(values);
                }
                Some(rows)
            }
        };
        data.push(serde_json::json!({
            "record": r,
            "gold": golds,
        }));
    }
    let gold_name = gold.map(|g| g.name().to_string());
    let json = serde_json::to_string(&serde_json::json!({
        "searches": data,
        "gold_name": gold_name,
    }))
    .map_err(|e| EvalError::Internal(e.to_string()))?;
    // Inside <script>, "</" would end the element.
    let json = json.replace("</", "<\\/");
    Ok(PAGE.replace("/*DATA*/null", &json))
}

/// Writes `page` to `path` through a temporary file, so a reader never sees half a page.
pub fn write_page(path: &Path, page: &str) -> Result<(), EvalError> {
    let tmp = path.with_extension("html.partial");
    std::fs::write(&tmp, page)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            usage(format!("cannot write {}: {e}", path.display()))
        })
}

/// Reads the trace file `trace`, draws it into the page `html` (every candidate scored by
/// `gold` where given: `vader`, the one cheap gold) and returns the number of candidates
/// drawn: what `w2s trace` and `w2s.trace_html` do.
pub fn draw_traces(trace: &Path, html: &Path, gold: Option<&str>) -> Result<usize, EvalError> {
    let mut vader = match gold {
        None => None,
        Some("vader") => Some(crate::Vader::new()),
        Some(other) => {
            return Err(usage(format!(
                "gold {other}: the trace page scores candidates with vader only; \
                 use `w2s guide-check` for the judge"
            )))
        }
    };
    let records = read_traces(trace)?;
    let page = trace_page(&records, vader.as_mut().map(|v| v as &mut dyn GoldReward))?;
    write_page(html, &page)?;
    Ok(records
        .iter()
        .flat_map(|r| &r.trace.steps)
        .map(|s| s.rows.len())
        .sum())
}

const PAGE: &str = include_str!("trace_page.html");

#[cfg(test)]
mod tests {
    use super::*;
    use w2s_core::{TraceRow, TraceStep};

    fn row(parent: Option<usize>, chunk: &str, value: f64, kept: bool) -> TraceRow {
        TraceRow {
            parent,
            chunk: chunk.into(),
            tokens: 1,
            strong_logprob: None,
            tuned: None,
            untuned: None,
            value: Some(value),
            terms: vec![],
            finish: None,
            kept,
        }
    }

    fn record() -> TraceRecord {
        TraceRecord {
            id: "p".into(),
            prompt: "It was </script> good".into(),
            method: "cbs:1x2x1".into(),
            seed: 1,
            text: "ab".into(),
            score: Some(2.0),
            trace: Trace {
                terms: vec![],
                steps: vec![
                    TraceStep {
                        chunk: 1,
                        rows: vec![row(None, "a", 1.0, true), row(None, "b", 0.0, false)],
                    },
                    TraceStep {
                        chunk: 2,
                        rows: vec![row(Some(0), "b", 2.0, true), row(Some(0), "c", 1.5, false)],
                    },
                ],
            },
        }
    }

    #[test]
    fn texts_follow_the_parents() {
        let t = candidate_texts(&record().trace);
        assert_eq!(t, vec![vec!["a", "b"], vec!["ab", "ac"]]);
    }

    #[test]
    fn a_page_embeds_the_data_safely_and_reads_back() {
        struct Len;
        impl GoldReward for Len {
            fn name(&self) -> &str {
                "len"
            }
            fn score(&mut self, _: &str, r: &str) -> Result<f64, w2s_core::BackendError> {
                Ok(r.len() as f64)
            }
        }
        let page = trace_page(&[record()], Some(&mut Len)).unwrap();
        assert!(!page.contains("</script> good"));
        assert!(page.contains("\"gold_name\":\"len\""));
        assert!(
            page.contains("[[1.0,1.0],[2.0,2.0]]"),
            "golds of each candidate"
        );
        let dir = std::env::temp_dir().join(format!("w2s-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        record().write(&mut f).unwrap();
        assert_eq!(read_traces(&path).unwrap(), vec![record()]);
        let mut bad = record();
        bad.trace.steps[1].rows[0].parent = Some(7);
        let mut f = std::fs::File::create(&path).unwrap();
        bad.write(&mut f).unwrap();
        let e = read_traces(&path).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("parent"), "{e}");
        std::fs::write(&path, "").unwrap();
        assert!(read_traces(&path)
            .unwrap_err()
            .to_string()
            .contains("no searches"));
        std::fs::write(&path, "{\"id\": 3}\n").unwrap();
        assert!(read_traces(&path)
            .unwrap_err()
            .to_string()
            .contains("--trace"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
