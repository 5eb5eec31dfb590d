//! Text helpers for handing strong-model output over as text.

/// Collects token bytes and releases only complete UTF-8 characters, so that a chunk
/// boundary never splits a multi-byte character.
#[derive(Debug, Clone, Default)]
pub struct Utf8Accumulator {
    pending: Vec<u8>,
}

impl Utf8Accumulator {
    /// A new, empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns the text that is now complete. Bytes that can never be
    /// valid UTF-8 become U+FFFD; an incomplete character at the end is held back.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // SAFETY of the slice: `valid_up_to` is a char boundary of valid UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Releases whatever is held back (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Whether bytes are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// The byte offset in `text` of the earliest stop string that starts at or after
/// `from` (any offset; it is moved back to a char boundary). `None` if none occurs.
pub fn find_stop(text: &str, stops: &[String], from: usize) -> Option<usize> {
    let mut from = from.min(text.len());
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops
        .iter()
        .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
        .min()
}

/// Where to start looking for stop strings after `added` bytes were appended to a text
/// of `len` bytes: a stop may straddle the old end.
pub fn stop_search_start(len: usize, added: usize, stops: &[String]) -> usize {
    let longest = stops.iter().map(String::len).max().unwrap_or(0);
    (len - added).saturating_sub(longest.saturating_sub(1))
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string: text
/// that must be held back until the next chunk shows whether the stop string completes.
pub fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (k, _) in s.char_indices().skip(1) {
            if k > best && text.ends_with(&s[..k]) {
                best = k;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_splits_a_multibyte_character() {
        let text = "é€😀";
        let bytes = text.as_bytes();
        let mut acc = Utf8Accumulator::new();
        let mut out = String::new();
        for b in bytes {
            let piece = acc.push(&[*b]);
            assert!(piece.is_empty() || text.contains(&piece));
            out.push_str(&piece);
        }
        assert!(!acc.has_pending());
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_and_tail_is_flushed() {
        let mut acc = Utf8Accumulator::new();
        assert_eq!(acc.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(acc.push(b"\xe2\x82"), "");
        assert!(acc.has_pending());
        assert_eq!(acc.finish(), "\u{FFFD}");
    }

    #[test]
    fn holds_back_a_possible_stop_start() {
        let stops = vec!["\n\n".to_string(), "THE END".to_string()];
        assert_eq!(stop_prefix_len("abc\n", &stops), 1);
        assert_eq!(stop_prefix_len("abc THE E", &stops), 5);
        assert_eq!(stop_prefix_len("abc", &stops), 0);
        assert_eq!(stop_prefix_len("é", &["éa".to_string()]), 2);
    }

    #[test]
    fn finds_stop_straddling_the_old_end() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        let text = "hello\n\nworld";
        let start = stop_search_start(text.len(), 6, &stops); // appended "\nworld"
        assert_eq!(find_stop(text, &stops, start), Some(5));
        assert_eq!(find_stop("abc", &stops, 0), None);
        assert_eq!(find_stop("xENDy\n\n", &stops, 0), Some(1));
        // from inside a multibyte char is moved back, not a panic
        assert_eq!(find_stop("éEND", &stops, 1), Some(2));
    }
}
