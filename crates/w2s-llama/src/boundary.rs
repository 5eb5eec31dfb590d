//! Where a response's tokens start: the joint tokenisation of prompt + response.
//!
//! A response tokenised on its own is not always the response part of the joint text: a
//! SentencePiece vocabulary (Llama-2, Mistral, Phi-3) adds a dummy-prefix space to the
//! start of any text it tokenises, which a response continuing its prompt does not have,
//! and any vocabulary may merge the prompt's last characters with the response's first
//! ones into one token. So the response is tokenised together with the prompt's last
//! plain-text stretch (its *anchor*: the rendered prompt after its last control token,
//! where llama.cpp's tokeniser starts a fresh piece of text), and its tokens are those
//! after the anchor's. A token that merges across the boundary belongs to the response
//! (as with the remote scorer): the scorer drops the prompt tokens it replaced from that
//! row's sequence, so every token is conditioned as in the joint text.

use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;

use crate::model::Model;

/// The prompt's last plain-text stretch and its tokens (the prompt's last tokens).
#[derive(Clone)]
pub(crate) struct Anchor {
    text: String,
    tokens: Vec<LlamaToken>,
    /// Leading tokens of `tokens` that the prompt does not share (the stretch was cut
    /// for length, so its first tokens may differ); a merge never reaches into them.
    skip: usize,
}

/// Anchors longer than this are cut (at a space) to about this many bytes.
const ANCHOR_BYTES: usize = 2048;

impl Anchor {
    /// The response's tokens as the joint tokenisation of prompt + `text` has them, and
    /// how many of the prompt's last tokens the first of them merged.
    pub(crate) fn split(&self, model: &Model, text: &str) -> (usize, Vec<LlamaToken>) {
        let mut joint = String::with_capacity(self.text.len() + text.len());
        joint.push_str(&self.text);
        joint.push_str(text);
        let mut tokens = model.tokenize_response(&joint);
        let same = self
            .tokens
            .iter()
            .zip(&tokens)
            .take_while(|(x, y)| x == y)
            .count();
        if same < self.skip {
            // The response changed the cut stretch's own tokens: score it on its own.
            return (0, model.tokenize_response(text));
        }
        tokens.drain(..same);
        (self.tokens.len() - same, tokens)
    }
}

/// Splits `response` after the rendered prompt `prompt_text` as the scorer does: the
/// prompt's tokens, how many of its last ones the response's first token merged, and the
/// response's tokens. `prompt[..prompt.len() - merged]` followed by the response's tokens
/// is the tokenisation of `prompt_text + response` (for a response without special-token
/// text).
pub fn split_response(
    model: &Model,
    prompt_text: &str,
    response: &str,
) -> (Vec<LlamaToken>, usize, Vec<LlamaToken>) {
    let prompt = model.tokenize_prompt(prompt_text);
    let anchor = anchor_of(model, prompt_text, &prompt);
    let (merged, tokens) = response_tokens(model, anchor.as_ref(), response);
    (prompt, merged, tokens)
}

/// The response's tokens after a prompt with `anchor` (see [`Anchor::split`]); without
/// one (a prompt whose end does not tokenise as a plain stretch), tokenised on its own.
pub(crate) fn response_tokens(
    model: &Model,
    anchor: Option<&Anchor>,
    text: &str,
) -> (usize, Vec<LlamaToken>) {
    match anchor {
        Some(a) => a.split(model, text),
        None => (0, model.tokenize_response(text)),
    }
}

/// The prompt's anchor (see the module): the rendered text after its last control token,
/// cut to about [`ANCHOR_BYTES`] at a space, with its tokens; `None` when its tokens are
/// not the prompt's last ones (a template whose text does not tokenise as a plain
/// stretch), and then responses are tokenised on their own.
pub(crate) fn anchor_of(model: &Model, text: &str, prompt: &[LlamaToken]) -> Option<Anchor> {
    let vocab = model.llama().vocab();
    // Control tokens start a fresh stretch of text that the response cannot change.
    // User-defined tokens do not: llama.cpp cuts them out of plain text too, and a
    // response can re-split them (GPT-NeoX's runs of spaces), so they stay in the anchor.
    let special = |t: LlamaToken| vocab.attr(t).contains(LlamaTokenAttr::Control);
    let from = match prompt.iter().rposition(|&t| special(t)) {
        // A BOS that tokenisation added is not in the text.
        Some(0) if vocab.should_add_bos() && prompt[0] == vocab.bos() => 0,
        Some(i) => {
            let piece = vocab.token_to_piece(prompt[i], true, None);
            let piece = std::str::from_utf8(&piece).ok()?;
            text.rfind(piece)? + piece.len()
        }
        None => 0,
    };
    let mut from = from;
    let mut cut = false;
    if text.len() - from > ANCHOR_BYTES {
        let mut at = text.len() - ANCHOR_BYTES;
        while !text.is_char_boundary(at) {
            at += 1;
        }
        from = text[at..].find(' ').map_or(at, |k| at + k);
        cut = true;
    }
    let anchor = &text[from..];
    let tokens = model.tokenize_response(anchor);
    // A cut stretch's first tokens may differ from the prompt's; the rest must agree.
    let skip = if cut { 4.min(tokens.len()) } else { 0 };
    let tail = &tokens[skip..];
    if tail.len() > prompt.len() || !prompt.ends_with(tail) {
        tracing::debug!("the prompt's last stretch does not tokenise alone as in the prompt");
        return None;
    }
    Some(Anchor {
        text: anchor.to_string(),
        tokens,
        skip,
    })
}
