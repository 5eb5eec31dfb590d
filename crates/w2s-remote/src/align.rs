//! Finding a response's tokens among the tokens an engine echoes back for
//! "prompt + response (+ end token)", and summing their log-probabilities.
//!
//! The response is matched from the end by the echoed token strings, which must spell it
//! exactly: this works whatever the engine's offsets count (llama-cpp-python's
//! `text_offset` skips special tokens' text, so it does not index the prompt string once
//! the prompt has chat markup). When the prompt's last characters and the response's
//! first ones were merged into one token (the strings then overlap the boundary), that
//! token belongs to the response and is summed, as the local backend does (it tokenises
//! the response jointly with the prompt's end and drops the merged prompt tokens).

/// The echoed prompt tokens (completion tokens already cut off).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Echoed {
    /// Token strings as the engine decoded them.
    pub tokens: Vec<String>,
    /// log p(token | everything before), `None` where the engine gave none.
    pub logprobs: Vec<Option<f64>>,
}

/// The sum over the response and how many tokens it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summed {
    pub logprob: f64,
    pub tokens: usize,
}

/// Sums the log-probs of `text`'s tokens, and of the end token if `eos` is given (then
/// the last echoed token must be it, as its text or as the empty string engines print
/// for special tokens).
pub(crate) fn response_logprob(
    echoed: &Echoed,
    text: &str,
    eos: Option<&str>,
) -> Result<Summed, String> {
    let span = response_span(echoed, text, eos)?;
    let mut sum = 0.0;
    for i in span.clone() {
        sum += echoed.logprobs[i]
            .ok_or_else(|| format!("token {i} ({:?}) has no log-prob", echoed.tokens[i]))?;
    }
    Ok(Summed {
        logprob: sum,
        tokens: span.len(),
    })
}

/// Which echoed tokens are `text`'s (and the end token's, if `eos` is given).
pub(crate) fn response_span(
    echoed: &Echoed,
    text: &str,
    eos: Option<&str>,
) -> Result<std::ops::Range<usize>, String> {
    let Echoed { tokens, logprobs } = echoed;
    if tokens.len() != logprobs.len() {
        return Err(format!(
            "{} tokens but {} log-probs",
            tokens.len(),
            logprobs.len()
        ));
    }
    let mut end = tokens.len();
    let mut span_end = end;
    if let Some(eos) = eos {
        let last = end.checked_sub(1).ok_or("no tokens echoed")?;
        if tokens[last] != eos && !tokens[last].is_empty() {
            let tail = tokens[last.saturating_sub(5)..].join("|");
            return Err(format!(
                "the end token '{eos}' was not read as one special token (the last tokens were {tail}); \
                 set eos_text to the model's exact end-token text, or use an engine that parses \
                 special tokens in completion prompts"
            ));
        }
        end = last;
        span_end = last + 1;
    }
    let need = text.chars().count();
    let mut have = 0;
    let mut start = end;
    while have < need {
        let i = start.checked_sub(1).ok_or_else(|| {
            format!("the echoed tokens spell only {have} of the response's {need} characters")
        })?;
        have += tokens[i].chars().count();
        start = i;
    }
    let spelled: String = tokens[start..end].concat();
    if !spelled.ends_with(text) {
        return Err(format!(
            "the echoed tokens end in {:?}, not in the response {:?}",
            tail_chars(&spelled, 40),
            tail_chars(text, 40)
        ));
    }
    Ok(start..span_end)
}

fn tail_chars(s: &str, n: usize) -> String {
    let len = s.chars().count();
    s.chars().skip(len.saturating_sub(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echoed(parts: &[(&str, Option<f64>)]) -> Echoed {
        Echoed {
            tokens: parts.iter().map(|p| p.0.to_string()).collect(),
            logprobs: parts.iter().map(|p| p.1).collect(),
        }
    }

    #[test]
    fn sums_only_the_response_tokens() {
        let e = echoed(&[
            ("Hi", None),
            (" there", Some(-1.0)),
            (" you", Some(-2.0)),
            ("!", Some(-0.5)),
        ]);
        let s = response_logprob(&e, " you!", None).unwrap();
        assert_eq!(
            s,
            Summed {
                logprob: -2.5,
                tokens: 2
            }
        );
        assert_eq!(response_logprob(&e, "", None).unwrap().tokens, 0);
    }

    #[test]
    fn end_token_as_text_or_empty_special() {
        for eos in ["<|im_end|>", ""] {
            let e = echoed(&[("A", None), (" b", Some(-1.0)), (eos, Some(-3.0))]);
            let s = response_logprob(&e, " b", Some("<|im_end|>")).unwrap();
            assert_eq!(
                s,
                Summed {
                    logprob: -4.0,
                    tokens: 2
                }
            );
        }
    }

    #[test]
    fn split_end_token_is_an_error_not_a_number() {
        let e = echoed(&[
            ("A", None),
            (" b", Some(-1.0)),
            ("<|", Some(-3.0)),
            ("im_end|>", Some(-1.0)),
        ]);
        let err = response_logprob(&e, " b", Some("<|im_end|>")).unwrap_err();
        assert!(err.contains("special token"), "{err}");
    }

    #[test]
    fn token_merged_across_the_boundary_is_the_responses() {
        // prompt "abc", response "de": the engine merged "c"+"d".
        let e = echoed(&[("ab", None), ("cd", Some(-1.0)), ("e", Some(-2.0))]);
        assert_eq!(
            response_logprob(&e, "de", None).unwrap(),
            Summed {
                logprob: -3.0,
                tokens: 2
            }
        );
    }

    #[test]
    fn mismatched_or_missing_values_are_errors() {
        let e = echoed(&[("ab", None), ("xy", Some(-1.0))]);
        assert!(response_logprob(&e, "zy", None).is_err());
        assert!(response_logprob(&e, "abxyz", None).is_err());
        let e = echoed(&[("ab", None), ("xy", None)]);
        assert!(response_logprob(&e, "xy", None)
            .unwrap_err()
            .contains("no log-prob"));
        let e = Echoed {
            tokens: vec!["a".into()],
            logprobs: vec![],
        };
        assert!(response_logprob(&e, "a", None).is_err());
    }

    #[test]
    fn multibyte_text_counts_characters() {
        let e = echoed(&[("Él", None), (" café", Some(-1.0)), (" ☕", Some(-2.0))]);
        assert_eq!(response_logprob(&e, " café ☕", None).unwrap().tokens, 2);
    }
}
