//! A sample as an engine returned it, with the per-token log-probabilities it may carry,
//! and what w2s reads from them: the chunk's log-probability under the strong model (for a trace) and
//! adaptive chunk ends (the sample cut before the first token, after the minimum, whose
//! next-token distribution has a high entropy).
//!
//! Two reply shapes carry them:
//! - the legacy completions shape (vLLM, SGLang, llama-cpp-python): `logprobs.tokens`,
//!   `logprobs.token_logprobs`, `logprobs.top_logprobs` (one `{token: logprob}` object per
//!   position, keyed by the token's text);
//! - the chat shape, which llama-server also uses for `/v1/completions`:
//!   `logprobs.content[i] = {token, bytes, logprob, top_logprobs: [{token, bytes, logprob}]}`.
//!
//! An engine lists only its top log-probs, so the entropy is bounded from below
//! ([`w2s_core::sampling::entropy_lower_bound`]): a chunk ends where what the engine
//! listed proves the strong model unsure. Engines report the model's own distribution
//! (temperature 1, before top-k/top-p), the distribution a local strong model's entropy is
//! taken of.

use serde_json::Value;
use w2s_core::sampling::entropy_lower_bound;
use w2s_core::EntropyEnd;

use w2s_core::Finish;

/// Top log-probs asked per position for adaptive chunk ends (vLLM's default cap).
pub(crate) const TOP_LOGPROBS: usize = 20;

/// What the engine returned for one sample, before the row's own bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub(crate) text: String,
    pub(crate) tokens: usize,
    pub(crate) finish: Option<Finish>,
    /// Its tokens with their log-probabilities, when the engine returned them.
    pub(crate) steps: Option<Vec<Step>>,
}

/// One sampled token as the engine reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// Its text: the UTF-8 bytes where the engine gives them, else its token string.
    pub(crate) piece: Vec<u8>,
    /// Its log-probability, when given.
    pub(crate) logprob: Option<f64>,
    /// The entropy bound of the distribution it was drawn from; `None` without top
    /// log-probs.
    pub(crate) entropy: Option<f64>,
}

/// The tokens of one choice, in either shape; `None` when the choice has no per-token
/// log-probabilities.
pub(crate) fn parse_steps(choice: &Value) -> Option<Vec<Step>> {
    let lp = choice.get("logprobs")?;
    if let Some(content) = lp.get("content").and_then(Value::as_array) {
        return Some(content.iter().map(content_step).collect());
    }
    let tokens = lp.get("tokens").and_then(Value::as_array)?;
    let logprobs = lp.get("token_logprobs").and_then(Value::as_array);
    let tops = lp.get("top_logprobs").and_then(Value::as_array);
    Some(
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| Step {
                piece: t.as_str().unwrap_or_default().as_bytes().to_vec(),
                logprob: logprobs.and_then(|l| l.get(i)).and_then(Value::as_f64),
                entropy: tops
                    .and_then(|t| t.get(i))
                    .and_then(Value::as_object)
                    .filter(|o| !o.is_empty())
                    .map(|o| top_bound(o.values().filter_map(Value::as_f64).collect())),
            })
            .collect(),
    )
}

fn content_step(c: &Value) -> Step {
    let piece = match c.get("bytes").and_then(Value::as_array) {
        Some(bytes) => bytes
            .iter()
            .filter_map(Value::as_u64)
            .map(|b| b as u8)
            .collect(),
        None => c
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
    };
    let entropy = c
        .get("top_logprobs")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
        .map(|t| entropy_lower_bound(t.iter().filter_map(|e| e.get("logprob")?.as_f64())));
    Step {
        piece,
        logprob: c.get("logprob").and_then(Value::as_f64),
        entropy,
    }
}

/// The entropy bound of one position's `{token: logprob}` object. vLLM lists the sampled
/// token beside the top ones even when it is not among them: only the largest
/// [`TOP_LOGPROBS`] count as the top, the rest as unlisted mass.
fn top_bound(mut logprobs: Vec<f64>) -> f64 {
    logprobs.sort_by(|a, b| b.total_cmp(a));
    logprobs.truncate(TOP_LOGPROBS);
    entropy_lower_bound(logprobs)
}

/// Cuts `raw` before its first token, after `end.min_tokens()`, whose distribution's
/// entropy bound exceeds `end.entropy()`: the text up to that token, the tokens before
/// it, no finish (the row goes on). Where the tokens before the cut do not spell a
/// prefix of the text that ends on a character boundary (a character split over tokens,
/// an engine's own token spelling), the cut moves to the next token where they do; when
/// they run past the text (tokens of a stop string the engine removed) the sample is kept
/// whole. Returns whether it cut.
pub(crate) fn cut_at_entropy(raw: &mut Raw, end: EntropyEnd) -> bool {
    let Some(steps) = raw.steps.as_ref() else {
        return false;
    };
    let first = steps
        .iter()
        .enumerate()
        .skip(end.min_tokens())
        .find(|(_, s)| s.entropy.is_some_and(|h| h > end.entropy()))
        .map(|(i, _)| i);
    let Some(first) = first else {
        return false;
    };
    let mut spelled: Vec<u8> = steps[..first]
        .iter()
        .flat_map(|s| s.piece.clone())
        .collect();
    let mut cut = None;
    for (at, step) in steps.iter().enumerate().skip(first) {
        let text = raw.text.as_bytes();
        if spelled.len() > text.len() {
            break;
        }
        if text.starts_with(&spelled) && raw.text.is_char_boundary(spelled.len()) {
            cut = Some((at, spelled.len()));
            break;
        }
        spelled.extend_from_slice(&step.piece);
    }
    let Some((at, len)) = cut else {
        return false;
    };
    tracing::trace!(
        at,
        of = steps.len(),
        "adaptive chunk end in a remote sample"
    );
    raw.text.truncate(len);
    raw.tokens = at;
    raw.finish = None;
    if let Some(steps) = raw.steps.as_mut() {
        steps.truncate(at);
    }
    true
}

/// The sum of the sample's token log-probabilities, when the engine gave every one.
pub(crate) fn chunk_logprob(raw: &Raw) -> Option<f64> {
    raw.steps
        .as_ref()?
        .iter()
        .map(|s| s.logprob)
        .sum::<Option<f64>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(text: &str, finish: Option<Finish>, steps: Vec<Step>) -> Raw {
        Raw {
            text: text.into(),
            tokens: steps.len(),
            finish,
            steps: Some(steps),
        }
    }

    fn step(piece: &str, entropy: f64) -> Step {
        Step {
            piece: piece.as_bytes().to_vec(),
            logprob: Some(-0.5),
            entropy: Some(entropy),
        }
    }

    #[test]
    fn both_reply_shapes_give_the_tokens_their_logprobs_and_entropy_bounds() {
        let legacy = json!({"text": " a b", "logprobs": {
            "tokens": [" a", " b"], "token_logprobs": [-0.1, -2.0],
            "text_offset": [0, 2],
            "top_logprobs": [{" a": -0.1, " c": -2.5}, {" b": -2.0, " d": -0.2}]}});
        let steps = parse_steps(&legacy).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            (steps[1].piece.as_slice(), steps[1].logprob),
            (&b" b"[..], Some(-2.0))
        );
        let h = entropy_lower_bound([-0.1, -2.5]);
        assert!((steps[0].entropy.unwrap() - h).abs() < 1e-12);
        // llama-server's content shape, bytes preferred to the token string.
        let content = json!({"text": "é", "logprobs": {"content": [
            {"token": "", "bytes": [195, 169], "logprob": -0.3,
             "top_logprobs": [{"token": "é", "logprob": -0.3}, {"token": "e", "logprob": -1.5}]}]}});
        let steps = parse_steps(&content).unwrap();
        assert_eq!(steps[0].piece, "é".as_bytes());
        assert!((steps[0].entropy.unwrap() - entropy_lower_bound([-0.3, -1.5])).abs() < 1e-12);
        // No top log-probs: no entropy; no log-probs at all: nothing.
        let bare =
            json!({"logprobs": {"content": [{"token": "x", "logprob": -1.0, "top_logprobs": []}]}});
        assert_eq!(parse_steps(&bare).unwrap()[0].entropy, None);
        assert_eq!(parse_steps(&json!({"text": "x", "logprobs": null})), None);
    }

    #[test]
    fn a_sample_is_cut_before_the_first_unsure_token_after_the_minimum() {
        let end = EntropyEnd::new(2, 1.0).unwrap();
        let steps = vec![
            step(" The", 3.0),
            step(" film", 0.2),
            step(" was", 0.5),
            step(" great", 2.0),
            step("!", 0.1),
        ];
        let mut r = raw(" The film was great!", Some(Finish::Eos), steps);
        assert!(cut_at_entropy(&mut r, end));
        // Position 0 is unsure but under the minimum; position 3 ends the chunk.
        assert_eq!(
            (r.text.as_str(), r.tokens, r.finish),
            (" The film was", 3, None)
        );
        assert_eq!(chunk_logprob(&r), Some(-1.5));
        // A calm sample is kept whole.
        let mut calm = raw(" ok", None, vec![step(" ok", 0.1)]);
        assert!(!cut_at_entropy(&mut calm, end));
        assert_eq!(calm.text, " ok");
    }

    #[test]
    fn a_cut_moves_past_a_split_character_and_keeps_a_sample_whose_tokens_run_past_its_text() {
        let end = EntropyEnd::new(1, 1.0).unwrap();
        // "é" as two byte tokens: a cut between them moves to after the character.
        let half = |b: u8, h: f64| Step {
            piece: vec![b],
            logprob: Some(-1.0),
            entropy: Some(h),
        };
        let steps = vec![
            step("caf", 0.1),
            half(0xC3, 0.1),
            half(0xA9, 5.0),
            step(" au", 0.1),
            step(" lait", 0.1),
        ];
        let mut r = raw("café au lait", None, steps);
        assert!(cut_at_entropy(&mut r, end));
        assert_eq!((r.text.as_str(), r.tokens), ("café", 3));
        // A stop string the engine cut from the text: the tokens past it keep the sample.
        let steps = vec![step("Yes", 0.1), step("\n\n", 0.1), step("Q", 4.0)];
        let mut r = raw("Yes", Some(Finish::Stop), steps);
        assert!(!cut_at_entropy(&mut r, end));
        assert_eq!((r.text.as_str(), r.finish), ("Yes", Some(Finish::Stop)));
        // An unsure end-of-sequence token: the text is whole, the row goes on.
        let steps = vec![step("Yes", 0.1), step("", 4.0)];
        let mut r = raw("Yes", Some(Finish::Eos), steps);
        assert!(cut_at_entropy(&mut r, end));
        assert_eq!((r.text.as_str(), r.tokens, r.finish), ("Yes", 1, None));
        // Without a missing log-prob there is no chunk log-prob.
        r.steps.as_mut().unwrap()[0].logprob = None;
        assert_eq!(chunk_logprob(&r), None);
    }
}
