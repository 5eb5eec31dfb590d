//! Generated bad request bodies for the server's 4xx harness.

use serde_json::{json, Value};
use w2s_core::RowRng;

/// Deterministic bad bodies: every one must be rejected before any model work.
pub fn bad_body(i: usize, rng: &mut RowRng) -> Vec<u8> {
    let good = json!({"model": "w2s", "prompt": "Ünïcödé prompt 😀 text", "max_tokens": 5});
    let good_text = good.to_string();
    let pick = |rng: &mut RowRng, n: usize| (rng.next_u64() % n as u64) as usize;
    match i % 14 {
        // Truncated JSON, cut anywhere (including inside multi-byte characters).
        0 => {
            let cut = 1 + pick(rng, good_text.len() - 1);
            good_text.as_bytes()[..cut].to_vec()
        }
        // Wrong types on every field.
        1 => {
            let fields = [
                "model",
                "prompt",
                "max_tokens",
                "temperature",
                "top_p",
                "top_k",
                "stop",
                "seed",
                "stream",
                "n",
                "search",
            ];
            let wrong = [
                json!([]),
                json!({}),
                json!("x"),
                json!(true),
                json!(-1),
                json!(1.5),
            ];
            let mut v = good.clone();
            let f = fields[pick(rng, fields.len())];
            let w = wrong[pick(rng, wrong.len())].clone();
            // Skip combinations that are valid (e.g. "x" for model is just unknown -> 404 is fine too).
            v[f] = if f == "model" || f == "prompt" {
                json!(5)
            } else if f == "search" {
                json!("cbs")
            } else if w == json!(true) && f == "stream" {
                json!("yes")
            } else if f == "stop" {
                json!(3)
            } else if w == json!(1.5) && (f == "temperature" || f == "top_p") {
                json!("x")
            } else {
                w
            };
            v.to_string().into_bytes()
        }
        // Huge and out-of-range numbers.
        2 => {
            let nums = ["1e400", "-1e400", "99999999999999999999999", "-5", "1e308"];
            let field = ["max_tokens", "temperature", "top_p", "seed", "n"][pick(rng, 5)];
            format!(
                r#"{{"model": "w2s", "prompt": "x", "{field}": {}}}"#,
                nums[pick(rng, nums.len())]
            )
            .into_bytes()
        }
        // Deep nesting.
        3 => {
            let depth = 200 + pick(rng, 5000);
            format!(
                r#"{{"model": "w2s", "prompt": "x", "search": {}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into_bytes()
        }
        // Not an object.
        4 => [&b"[]"[..], b"null", b"42", b"\"text\"", b"", b"   "][pick(rng, 6)].to_vec(),
        // Unknown fields: ignored at the top level (so paired with a fault here), refused
        // inside `search`, where a typo would silently change the search.
        5 => {
            let mut v = good.clone();
            if pick(rng, 2) == 0 {
                v[format!("field_{}", rng.next_u64() % 1000)] = json!(1);
                v["max_tokens"] = json!(0);
            } else {
                v["search"] = json!({"method": "cbs", "wdith": 4});
            }
            v.to_string().into_bytes()
        }
        // Bad search settings.
        6 => {
            let bad = [
                json!({"method": "beam"}),
                json!({"method": "cbs:4x4"}),
                json!({"w": 0}),
                json!({"k": 100}),
                json!({"w": 16, "k": 16}),
                json!({"l": 0}),
                json!({"method": "bon", "n": 0}),
                json!({"beta": "high"}),
            ];
            let mut v = good.clone();
            v["search"] = bad[pick(rng, bad.len())].clone();
            v.to_string().into_bytes()
        }
        // Invalid UTF-8 inside a string, at random positions.
        7 => {
            let mut b = good_text.clone().into_bytes();
            let at = b.iter().position(|&c| c == 0xC3).unwrap_or(20) + 1;
            b.insert(at, [0xFF, 0xC0, 0x80][pick(rng, 3)]);
            b
        }
        // Empty prompts and messages.
        8 => [
            &br#"{"model": "w2s", "prompt": ""}"#[..],
            br#"{"model": "w2s", "prompt": []}"#,
            br#"{"model": "w2s", "prompt": ["a", ""]}"#,
            br#"{"model": "w2s"}"#,
            br#"{"model": "", "prompt": "x"}"#,
        ][pick(rng, 5)]
        .to_vec(),
        // Unsupported standard options.
        9 => {
            let opts = [
                json!({"echo": true}),
                json!({"logprobs": 3}),
                json!({"best_of": 4, "n": 8}),
                json!({"best_of": 4, "search": {"method": "cbs"}}),
                json!({"logit_bias": {"1": 5}}),
                json!({"tools": [{"type": "function"}]}),
                json!({"response_format": {"type": "json_object"}}),
                json!({"presence_penalty": 1.0}),
                json!({"n": 0}),
                json!({"n": 1000}),
            ];
            let mut v = good.clone();
            if let Value::Object(m) = opts[pick(rng, opts.len())].clone() {
                for (k, x) in m {
                    v[k] = x;
                }
            }
            v.to_string().into_bytes()
        }
        // Over-long prompts and bad stop lists.
        10 => {
            if pick(rng, 2) == 0 {
                json!({"model": "w2s", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]})
                    .to_string()
                    .into_bytes()
            } else {
                json!({"model": "w2s", "prompt": "x", "stop": [""]})
                    .to_string()
                    .into_bytes()
            }
        }
        // Bad chat messages (sent to the chat endpoint).
        11 => {
            let bad = [
                json!([{"role": "wizard", "content": "x"}]),
                json!([{"role": "user", "content": []}]),
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]),
                json!([{"role": "user", "content": [{"type": "text"}]}]),
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]),
                json!([{"role": "tool", "content": "x", "tool_call_id": "1"}]),
                json!([{"role": "system", "content": "x"}]),
                json!([{"content": "x"}]),
                json!([{"role": "user", "content": null}]),
                json!([]),
            ];
            json!({"model": "w2s", "messages": bad[pick(rng, bad.len())], "max_tokens": 5})
                .to_string()
                .into_bytes()
        }
        // Prompt lists: too many, an empty entry, token ids.
        12 => {
            let prompt = match pick(rng, 4) {
                0 => json!(vec!["p"; 10_000]),
                1 => json!(["fine", ""]),
                2 => json!([[1, 2, 3]]),
                _ => json!([""]),
            };
            json!({"model": "w2s", "prompt": prompt, "max_tokens": 5})
                .to_string()
                .into_bytes()
        }
        // Random bytes.
        _ => (0..pick(rng, 64) + 1)
            .map(|_| rng.next_u64() as u8)
            .collect(),
    }
}
