//! What an engine's completion reply becomes for one row of the search: its choices
//! parsed and checked, each sample appended to the row's text (stop strings looked for
//! across samples, a character cut at `max_tokens` dropped for re-sampling), and the `n`
//! bound read from an engine's refusal.

use serde_json::Value;
use w2s_core::text::{find_stop, stop_prefix_len, stop_search_start};
use w2s_core::{Chunk, Finish};

use crate::client::snippet;
use crate::error::RemoteError;
use crate::tokens::parse_steps;
pub(crate) use crate::tokens::Raw;

/// One row as the engine knows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowText {
    /// Everything the engine returned for the row (cut at a stop string): the beam text of
    /// the next request's prompt, possible stop-string start included.
    pub(crate) text: String,
    /// Bytes of `text` handed to the search; the rest is a held-back possible stop start.
    pub(crate) emitted: usize,
    /// Strong tokens sampled for the row.
    pub(crate) tokens: usize,
    /// The row has ended.
    pub(crate) done: bool,
}

/// Adds the engine's sample to the row and returns what the search gets of it.
///
/// - A sample cut at `max_tokens` inside a multi-byte character ends in U+FFFD (the
///   engine could not encode the partial character in JSON). Kept, it would stand in the
///   next prompt for good; so trailing U+FFFD of a sample that ended by length are dropped
///   (their tokens still count) and the next request re-samples from the clean text.
/// - Stop strings are looked for in the row's whole text, not just the new sample: one may
///   straddle two samples (the engine matches only inside its own completion). A possible
///   stop start at the end is held back from the search until the next sample decides it,
///   but stays in the next request's prompt.
pub(crate) fn advance(row: &mut RowText, raw: Raw, stop: &[String], max_new: usize) -> Chunk {
    let Raw {
        mut text,
        tokens,
        mut finish,
        ..
    } = raw;
    if finish.is_none() {
        let clean = text.trim_end_matches('\u{FFFD}').len();
        if clean < text.len() {
            tracing::debug!(
                dropped = text[clean..].chars().count(),
                "sample cut inside a character at max_tokens; dropping its U+FFFD"
            );
            text.truncate(clean);
        }
    }
    row.tokens += tokens;
    row.text.push_str(&text);
    if !stop.is_empty() {
        let from = stop_search_start(row.text.len(), text.len(), stop).max(row.emitted);
        if let Some(at) = find_stop(&row.text, stop, from) {
            row.text.truncate(at.max(row.emitted));
            finish = Some(Finish::Stop);
        }
    }
    let ended = finish.is_some() || row.tokens >= max_new;
    let end = if ended {
        row.done = true;
        row.text.len()
    } else {
        (row.text.len() - stop_prefix_len(&row.text, stop)).max(row.emitted)
    };
    let chunk = Chunk {
        text: row.text[row.emitted..end].to_string(),
        tokens,
        finish,
        logprob: None,
    };
    row.emitted = end;
    chunk
}

/// The most `n` an engine's 400 message allows, if the message is about `n` and names a
/// bound below `asked`; e.g. llama-server's "Field 'n': Value must be between 1 <= value
/// <= 4, but got 16" gives 4.
pub(crate) fn n_bound(message: &str, asked: usize) -> Option<usize> {
    let lower = message.to_lowercase();
    let about_n = [
        "'n'",
        "\"n\"",
        "`n`",
        "n_cmpl",
        "field n ",
        " n must",
        " n should",
    ]
    .iter()
    .any(|k| lower.contains(k))
        || lower.starts_with("n must")
        || lower.starts_with("n should");
    if !about_n {
        return None;
    }
    lower
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse::<usize>().ok())
        .filter(|&b| b >= 1 && b < asked)
        .max()
}

/// The samples of one reply, in choice order.
pub(crate) fn parse_choices(
    reply: &Value,
    url: &str,
    max_tokens: usize,
    has_stops: bool,
) -> Result<Vec<Raw>, RemoteError> {
    let bad = |what: &str| RemoteError::Malformed {
        url: url.to_string(),
        what: what.to_string(),
        body: snippet(&reply.to_string()),
    };
    let mut choices: Vec<&Value> = reply
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no choices"))?
        .iter()
        .collect();
    choices.sort_by_key(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0));
    let single = choices.len() == 1;
    let usage = reply
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_u64);
    choices
        .into_iter()
        .map(|c| {
            let text = c
                .get("text")
                .or_else(|| c.pointer("/message/content"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a choice without text"))?;
            let reason = c.get("finish_reason").and_then(Value::as_str);
            let per_choice = c
                .pointer("/logprobs/tokens")
                .or_else(|| c.pointer("/logprobs/content"))
                .and_then(Value::as_array)
                .map(Vec::len);
            let finish = match reason {
                Some("length") | None => None,
                Some("stop") => Some(match c.get("stop_reason") {
                    Some(Value::String(_)) => Finish::Stop,
                    Some(Value::Number(_)) => Finish::Eos,
                    _ if has_stops => Finish::Stop,
                    _ => Finish::Eos,
                }),
                Some(_) => Some(Finish::Stop),
            };
            // The request's count when it had one choice (exact); else the budget for a
            // sample that ran out of it ("length": exact); else the per-choice count if
            // the engine gave one (llama-server lists a character split over several
            // tokens once: a lower bound), else the budget (an upper bound). A row that
            // stopped early has ended, so only the statistics see the difference.
            let tokens = match usage.filter(|_| single) {
                Some(u) => u as usize,
                None if finish.is_none() => max_tokens,
                None => per_choice.unwrap_or(max_tokens),
            };
            // llama-cpp-python samples past max_tokens until a multi-byte character is
            // complete (up to 3 more byte tokens) and counts them: the text is whole, the
            // count is taken as the budget.
            let tokens = if tokens > max_tokens && tokens <= max_tokens + 3 {
                tracing::debug!(
                    tokens,
                    max_tokens,
                    "the engine completed a character past max_tokens"
                );
                max_tokens
            } else {
                tokens
            };
            if tokens > max_tokens {
                return Err(bad(&format!(
                    "{tokens} tokens for max_tokens = {max_tokens}"
                )));
            }
            if tokens == 0 && finish.is_none() {
                return Err(bad("0 tokens and finish_reason \"length\""));
            }
            Ok(Raw {
                text: text.to_string(),
                tokens,
                finish,
                steps: parse_steps(c),
            })
        })
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn raw(text: &str, tokens: usize, finish: Option<Finish>) -> Raw {
        Raw {
            text: text.into(),
            tokens,
            finish,
            steps: None,
        }
    }

    #[test]
    fn a_stop_straddling_two_samples_ends_the_row_and_is_cut() {
        let stop = stops(&["\n\n"]);
        let mut row = RowText::default();
        let c = advance(&mut row, raw("A: fine.\n", 5, None), &stop, 20);
        assert_eq!(c.text, "A: fine.");
        assert_eq!(c.finish, None);
        assert_eq!(
            row.text, "A: fine.\n",
            "the held-back newline is in the next prompt"
        );
        let c = advance(&mut row, raw("\nQ: and", 5, None), &stop, 20);
        assert_eq!(c.text, "");
        assert_eq!((c.finish, c.tokens), (Some(Finish::Stop), 5));
        assert!(row.done);
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop() {
        let stop = stops(&["\n\n", "THE END"]);
        let mut row = RowText::default();
        let c = advance(&mut row, raw("so THE", 3, None), &stop, 20);
        assert_eq!(c.text, "so ");
        let c = advance(&mut row, raw("RE it was", 3, None), &stop, 20);
        assert_eq!(c.text, "THERE it was");
        // An ended row releases what it held back.
        let c = advance(&mut row, raw(" THE E", 3, Some(Finish::Eos)), &stop, 20);
        assert_eq!((c.text.as_str(), c.finish), (" THE E", Some(Finish::Eos)));
        let mut row = RowText::default();
        let c = advance(&mut row, raw("x\n", 4, None), &stop, 4);
        assert_eq!(
            (c.text.as_str(), c.finish),
            ("x\n", None),
            "max_new reached"
        );
        assert!(row.done);
    }

    #[test]
    fn a_character_cut_at_max_tokens_is_dropped_not_kept_as_replacement() {
        let mut row = RowText::default();
        let c = advance(&mut row, raw("smile \u{FFFD}", 2, None), &[], 20);
        assert_eq!((c.text.as_str(), c.tokens), ("smile ", 2));
        assert_eq!(row.text, "smile ");
        // Only at a cut by length: an ended sample, or U+FFFD inside, is kept.
        let c = advance(
            &mut row,
            raw("a\u{FFFD}b\u{FFFD}", 4, Some(Finish::Eos)),
            &[],
            20,
        );
        assert_eq!(c.text, "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn the_n_bound_is_read_from_engine_messages() {
        let m = "Field 'n': Value must be between 1 <= value <= 4, but got 16";
        assert_eq!(n_bound(m, 16), Some(4));
        assert_eq!(n_bound("n must be at most 8", 10), Some(8));
        assert_eq!(n_bound("'n' must be <= 128, got 200", 200), Some(128));
        assert_eq!(n_bound("prompt too long: 4096 tokens", 16), None);
        assert_eq!(
            n_bound("n is not supported here", 4),
            None,
            "no bound named"
        );
    }
}
