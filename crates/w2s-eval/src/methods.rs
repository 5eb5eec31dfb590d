//! The methods an evaluation compares: the core search's methods and EFT.

use w2s_core::{ConfigError, Method};

use crate::error::{usage, EvalError};

/// One method of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalMethod {
    /// A search method (`sample`, `bon:N`, `cbs:WxKxL`) with the run's guide.
    Search(Method),
    /// Emulated fine-tuning / proxy tuning with weight `beta`.
    Eft { beta: f64 },
    /// The small tuned model alone: plain sampling from it, with its own template (the
    /// weak baseline of weak-to-strong search).
    Guide,
}

impl std::fmt::Display for EvalMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalMethod::Search(m) => write!(f, "{m}"),
            EvalMethod::Eft { beta } => write!(f, "eft:{beta}"),
            EvalMethod::Guide => write!(f, "guide"),
        }
    }
}

/// Parses `sample,guide,bon:16,cbs:4x4x5,eft:0.25,0.5,1`: comma-separated methods; bare
/// numbers after an `eft:` entry are more EFT betas. Duplicates are refused.
pub fn parse_methods(spec: &str) -> Result<Vec<EvalMethod>, EvalError> {
    let mut out: Vec<EvalMethod> = Vec::new();
    let mut in_eft = false;
    for item in spec.split(',').map(str::trim) {
        let beta_of = |t: &str| -> Result<f64, EvalError> {
            match t.parse::<f64>() {
                Ok(b) if b.is_finite() => Ok(b),
                _ => Err(usage(format!(
                    "--methods: '{t}' is not an EFT beta; write eft:BETA[,BETA...] with finite numbers, e.g. eft:0.25,0.5,1,2,4"
                ))),
            }
        };
        let method = if let Some(b) = item.strip_prefix("eft:") {
            in_eft = true;
            EvalMethod::Eft { beta: beta_of(b)? }
        } else if item == "guide" {
            in_eft = false;
            EvalMethod::Guide
        } else if in_eft && item.parse::<f64>().is_ok() {
            EvalMethod::Eft {
                beta: beta_of(item)?,
            }
        } else {
            in_eft = false;
            match Method::parse(item) {
                Ok(m) => EvalMethod::Search(m),
                Err(ConfigError::MethodSyntax(_)) => {
                    return Err(usage(format!(
                        "--methods: unknown method '{item}': use sample, guide, bon:N (e.g. bon:16), cbs:WxKxL (e.g. cbs:4x4x5) or eft:BETA[,BETA...]"
                    )))
                }
                Err(e) => return Err(usage(format!("--methods: {e}"))),
            }
        };
        if out.iter().any(|m| m.to_string() == method.to_string()) {
            return Err(usage(format!("--methods: '{method}' is given twice")));
        }
        out.push(method);
    }
    Ok(out)
}

/// Parses `1,2,3`.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>, EvalError> {
    let mut seeds = Vec::new();
    for s in spec.split(',').map(str::trim) {
        let seed = s.parse::<u64>().map_err(|_| {
            usage(format!(
                "--seeds: '{s}' is not a seed; give non-negative integers like 1,2,3"
            ))
        })?;
        if seeds.contains(&seed) {
            return Err(usage(format!("--seeds: {seed} is given twice")));
        }
        seeds.push(seed);
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_search_methods_and_eft_beta_lists() {
        let got = parse_methods("sample, bon:16,cbs:4x4x5,eft:0.25,0.5,1,cbs:2x8x5,guide").unwrap();
        let names: Vec<String> = got.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            names,
            [
                "sample",
                "bon:16",
                "cbs:4x4x5",
                "eft:0.25",
                "eft:0.5",
                "eft:1",
                "cbs:2x8x5",
                "guide"
            ]
        );
        assert_eq!(got[7], EvalMethod::Guide);
        assert_eq!(got[3], EvalMethod::Eft { beta: 0.25 });
    }

    #[test]
    fn refuses_bad_specs_with_the_culprit_named() {
        for (bad, needle) in [
            ("cbs:4x4", "cbs:4x4"),
            ("sample,beam", "beam"),
            ("eft:x", "'x'"),
            ("eft:inf", "inf"),
            ("sample,3", "'3'"),
            ("bon:4,bon:4", "twice"),
            ("guide,guide", "twice"),
            ("eft:1,1", "twice"),
            ("", "unknown method"),
        ] {
            let e = parse_methods(bad).unwrap_err();
            assert_eq!(e.kind(), w2s_core::ErrorKind::Input);
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_seeds() {
        assert_eq!(parse_seeds("1, 2,3").unwrap(), vec![1, 2, 3]);
        assert!(parse_seeds("1,x").is_err());
        assert!(parse_seeds("1,1").is_err());
        assert!(parse_seeds("-1").is_err());
    }
}
