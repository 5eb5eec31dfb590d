//! The result file, `results.jsonl`: one line per (method, seed, prompt), appended and
//! flushed to disk as soon as it is done. Reopening it keeps every complete line, cuts a
//! torn last line (a write interrupted by kill -9 or power loss) so that it is redone,
//! and knows which lines are done, so a rerun never duplicates one. A line whose gold
//! rewards are scored again (the run's gold rewards changed) is appended anew; when a
//! key appears more than once, the last line is the one that counts.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use w2s_core::Finish;

use crate::error::{usage, EvalError};

/// One gold reward of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldScore {
    /// The reward's name (`vader`, `judge`).
    pub name: String,
    /// Its value.
    pub value: f64,
}

/// Seconds spent, by component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub strong_s: f64,
    pub tuned_s: f64,
    pub untuned_s: f64,
    /// The whole method (search or EFT), guide scoring included, gold excluded.
    pub method_s: f64,
    pub gold_s: f64,
    /// In a custom guide (see [`w2s_core::Guide`]), where one replaced the pair.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub guide_s: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The pairwise judge's verdict on a response against the reference method's response
/// to the same (seed, prompt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairScore {
    /// The reference method.
    pub reference: String,
    /// The judge model's file name.
    pub judge: String,
    /// P(this response is better) when it is shown first.
    #[serde(deserialize_with = "nan_if_null")]
    pub first: f64,
    /// P(this response is better) when it is shown second.
    #[serde(deserialize_with = "nan_if_null")]
    pub second: f64,
    /// The judge's probability on the two answer letters, averaged over the orders (NaN,
    /// written as null, when the judge was not asked).
    #[serde(deserialize_with = "nan_if_null")]
    pub answer_mass: f64,
    /// The response is the reference's text (the reference itself, or the same words):
    /// 1/2 by construction, the judge not asked.
    pub identical: bool,
    /// Characters of the reference response (for length control).
    pub reference_chars: usize,
}

/// One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub task: String,
    pub method: String,
    pub seed: u64,
    pub prompt_id: String,
    pub prompt: String,
    pub response: String,
    pub finish: Finish,
    /// Guide value beta * (tuned - untuned) of the response.
    pub guide: f64,
    /// NaN (written as null) when a custom guide replaced the pair.
    #[serde(deserialize_with = "nan_if_null")]
    pub tuned_logprob: f64,
    /// NaN (written as null) when a custom guide replaced the pair.
    #[serde(deserialize_with = "nan_if_null")]
    pub untuned_logprob: f64,
    /// Gold rewards, the run's primary one first.
    pub gold: Vec<GoldScore>,
    /// The pairwise verdict, when `pairwise` is one of the gold rewards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<PairScore>,
    /// Strong-model tokens sampled over all rows (the method's cost).
    pub strong_tokens: usize,
    /// Strong-model tokens of the returned response.
    pub response_tokens: usize,
    pub tuned_tokens: u64,
    pub untuned_tokens: u64,
    /// HTTP requests sent to remote engines for this line (0 with local models).
    #[serde(default)]
    pub http_requests: u64,
    pub timings: Timings,
}

/// JSON has no NaN: serde_json writes it as null, read back here as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// What identifies a line.
pub type Key = (String, u64, String);

impl Record {
    pub fn key(&self) -> Key {
        (self.method.clone(), self.seed, self.prompt_id.clone())
    }
}

/// The open result file.
pub struct Store {
    path: PathBuf,
    file: File,
    /// Where each key's record is in `records`.
    at: HashMap<Key, usize>,
    records: Vec<Record>,
    /// Bytes of a torn last line that were cut on opening.
    pub torn_bytes: usize,
}

/// Keeps the last record of each key, at the place of its first.
fn last_of_each(records: Vec<Record>) -> (Vec<Record>, HashMap<Key, usize>) {
    let mut at: HashMap<Key, usize> = HashMap::new();
    let mut out: Vec<Record> = Vec::new();
    for r in records {
        match at.get(&r.key()) {
            Some(&i) => out[i] = r,
            None => {
                at.insert(r.key(), out.len());
                out.push(r);
            }
        }
    }
    (out, at)
}

/// Parses the text of a result file: the complete records, the byte length they cover,
/// and whether a torn last line follows. A bad line before the last is an error
/// (line number, reason): the file was not written by an interrupted run.
pub fn parse(text: &[u8]) -> Result<(Vec<Record>, usize, bool), (usize, String)> {
    let mut records = Vec::new();
    let mut good = 0;
    let mut line_no = 0;
    let mut rest = text;
    while !rest.is_empty() {
        line_no += 1;
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Ok((records, good, true)); // no newline: torn
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.iter().all(u8::is_ascii_whitespace) {
            good += nl + 1;
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => records.push(r),
            // The last line, newline and all, may still be garbage after a power loss.
            Err(_) if rest.is_empty() => return Ok((records, good, true)),
            Err(e) => return Err((line_no, e.to_string())),
        }
        good += nl + 1;
    }
    Ok((records, good, false))
}

impl Store {
    /// Opens (creating) `path`, cutting a torn last line.
    pub fn open(path: &Path) -> Result<Store, EvalError> {
        let unwritable = |e: std::io::Error| {
            usage(format!(
                "cannot write the results file {}: {e}",
                path.display()
            ))
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(unwritable(e)),
        };
        let (records, good, torn) = parse(&text).map_err(|(line, e)| {
            usage(format!(
                "{} line {line} is not a result record ({e}); it was edited by hand? move the file away or fix the line",
                path.display()
            ))
        })?;
        let (records, at) = last_of_each(records);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(unwritable)?;
        let torn_bytes = if torn { text.len() - good } else { 0 };
        if torn {
            file.set_len(good as u64).map_err(unwritable)?;
            file.sync_data().map_err(unwritable)?;
        }
        Ok(Store {
            path: path.to_path_buf(),
            file,
            at,
            records,
            torn_bytes,
        })
    }

    /// The record of this line, if it is in the file.
    pub fn get(&self, key: &Key) -> Option<&Record> {
        self.at.get(key).map(|&i| &self.records[i])
    }

    /// Every record, in file order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Appends one record and flushes it to disk; it replaces an earlier record of its key.
    pub fn append(&mut self, record: Record) -> Result<(), EvalError> {
        let mut line = serde_json::to_vec(&record)
            .map_err(|e| EvalError::Internal(format!("cannot encode a result: {e}")))?;
        line.push(b'\n');
        let io = |e: std::io::Error| {
            EvalError::Internal(format!("cannot write {}: {e}", self.path.display()))
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.flush().map_err(io)?;
        self.file.sync_data().map_err(io)?;
        match self.at.get(&record.key()) {
            Some(&i) => self.records[i] = record,
            None => {
                self.at.insert(record.key(), self.records.len());
                self.records.push(record);
            }
        }
        Ok(())
    }
}

/// Reads the records of a result file without changing it (a torn last line is skipped).
pub fn read_records(path: &Path) -> Result<Vec<Record>, EvalError> {
    let text =
        std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let (records, _, _) = parse(&text).map_err(|(line, e)| {
        usage(format!(
            "{} line {line} is not a result record ({e})",
            path.display()
        ))
    })?;
    Ok(last_of_each(records).0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(method: &str, seed: u64, id: &str, gold: f64) -> Record {
        Record {
            task: "sentiment".into(),
            method: method.into(),
            seed,
            prompt_id: id.into(),
            prompt: format!("prompt {id}"),
            response: " was great".into(),
            finish: Finish::Length,
            guide: gold * 2.0,
            tuned_logprob: -10.0,
            untuned_logprob: -12.0,
            gold: vec![GoldScore {
                name: "vader".into(),
                value: gold,
            }],
            pair: None,
            strong_tokens: 16 * 50,
            response_tokens: 50,
            tuned_tokens: 100,
            untuned_tokens: 100,
            http_requests: 0,
            timings: Timings {
                method_s: 1.5,
                ..Timings::default()
            },
        }
    }

    fn line(r: &Record) -> Vec<u8> {
        let mut l = serde_json::to_vec(r).unwrap();
        l.push(b'\n');
        l
    }

    #[test]
    fn keeps_complete_lines_and_cuts_a_torn_one() {
        let (a, b) = (
            record("sample", 1, "p1", 0.1),
            record("sample", 1, "p2", 0.2),
        );
        let mut text = line(&a);
        text.extend(line(&b));
        let full = text.len();
        assert_eq!(
            parse(&text).unwrap(),
            (vec![a.clone(), b.clone()], full, false)
        );
        let torn = &line(&record("sample", 1, "p3", 0.3))[..40];
        text.extend_from_slice(torn);
        assert_eq!(parse(&text).unwrap(), (vec![a.clone(), b], full, true));
        // A garbage last line with its newline (zero-filled blocks after power loss).
        let mut zeroed = line(&a);
        let good = zeroed.len();
        zeroed.extend_from_slice(b"\0\0\0\0\n");
        assert_eq!(parse(&zeroed).unwrap(), (vec![a], good, true));
    }

    #[test]
    fn a_custom_guide_line_without_log_probabilities_reads_back() {
        let mut r = record("cbs:2x2x5", 1, "p1", 0.4);
        (r.tuned_logprob, r.untuned_logprob) = (f64::NAN, f64::NAN);
        let text = line(&r);
        assert!(String::from_utf8_lossy(&text).contains("\"tuned_logprob\":null"));
        let (back, _, torn) = parse(&text).unwrap();
        assert!(!torn && back[0].tuned_logprob.is_nan() && back[0].untuned_logprob.is_nan());
        assert_eq!(back[0].guide, r.guide);
    }

    #[test]
    fn every_number_reads_back_bit_for_bit() {
        // A resumed run summarizes the lines it reads back; the first run summarized the
        // values it wrote. The two must agree to the last bit, so parsing must round-trip.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut r = record("sample", 1, "p1", 0.1);
            r.timings.method_s = (x >> 11) as f64 / (1u64 << 53) as f64 * 3.0;
            r.guide = -((x >> 20) as f64) / 1e9;
            let (back, _, _) = parse(&line(&r)).unwrap();
            assert_eq!(
                back[0].timings.method_s.to_bits(),
                r.timings.method_s.to_bits()
            );
            assert_eq!(back[0].guide.to_bits(), r.guide.to_bits());
        }
    }

    #[test]
    fn a_line_scored_again_replaces_the_first_in_its_place() {
        let dir = std::env::temp_dir().join(format!("w2s-rescore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut s = Store::open(&path).unwrap();
        s.append(record("sample", 1, "a", 0.1)).unwrap();
        s.append(record("sample", 1, "b", 0.2)).unwrap();
        s.append(record("sample", 1, "a", 0.7)).unwrap();
        assert_eq!(s.records().len(), 2);
        assert_eq!(s.records()[0].gold[0].value, 0.7);
        drop(s);
        for records in [
            Store::open(&path).unwrap().records().to_vec(),
            read_records(&path).unwrap(),
        ] {
            let got: Vec<(String, f64)> = records
                .iter()
                .map(|r| (r.prompt_id.clone(), r.gold[0].value))
                .collect();
            assert_eq!(got, [("a".to_string(), 0.7), ("b".to_string(), 0.2)]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pairwise_verdict_reads_back_with_its_missing_mass() {
        let mut r = record("sample", 1, "p1", 0.5);
        r.pair = Some(PairScore {
            reference: "sample".into(),
            judge: "judge.gguf".into(),
            first: 0.5,
            second: 0.5,
            answer_mass: f64::NAN,
            identical: true,
            reference_chars: 10,
        });
        let (back, _, _) = parse(&line(&r)).unwrap();
        let p = back[0].pair.as_ref().unwrap();
        assert!(p.answer_mass.is_nan() && p.identical && p.reference_chars == 10);
        // A line written before verdicts existed reads back with none.
        let old = String::from_utf8(line(&record("sample", 1, "p1", 0.5))).unwrap();
        assert!(!old.contains("pair"));
        assert!(parse(old.as_bytes()).unwrap().0[0].pair.is_none());
    }

    #[test]
    fn a_bad_line_before_the_last_is_an_error_with_its_number() {
        let mut text = line(&record("sample", 1, "p1", 0.1));
        text.extend_from_slice(b"{\"not\": \"a record\"}\n");
        text.extend(line(&record("sample", 1, "p2", 0.1)));
        assert_eq!(parse(&text).unwrap_err().0, 2);
    }

    #[test]
    fn reopening_truncates_the_torn_line_and_appends_after_it() {
        let dir = std::env::temp_dir().join(format!("w2s-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut s = Store::open(&path).unwrap();
        s.append(record("bon:16", 2, "a", 0.5)).unwrap();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"task\":\"sent").unwrap();
        drop(f);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.torn_bytes, 13);
        assert!(s.get(&("bon:16".into(), 2, "a".into())).is_some());
        assert!(s.get(&("bon:16".into(), 2, "b".into())).is_none());
        s.append(record("bon:16", 2, "b", 0.5)).unwrap();
        drop(s);
        let back = read_records(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].prompt_id, "b");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
