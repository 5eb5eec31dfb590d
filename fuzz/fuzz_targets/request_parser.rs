//! Fuzzes the server's request parsers/validators (`w2s-server/src/api.rs`, `plain_api.rs`) with arbitrary
//! bodies: it must never panic, every rejection must be a 4xx with an error body under
//! 4 KB, and every accepted request must satisfy the caps.
//!
//! Run (not in CI): `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run request_parser`
#![no_main]

// The parser and its error type, compiled here without the model backend.
#[path = "../../crates/w2s-server/src/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../../crates/w2s-server/src/api.rs"]
mod api;
#[path = "../../crates/w2s-server/src/fields.rs"]
mod fields;
#[allow(dead_code)]
#[path = "../../crates/w2s-server/src/plain_api.rs"]
mod plain_api;

use libfuzzer_sys::fuzz_target;
use w2s_core::SearchConfig;

fuzz_target!(|data: &[u8]| {
    let policy = api::Policy {
        defaults: SearchConfig::default(),
        max_width: 16,
        max_successors: 16,
        max_chunk: 256,
        max_rows: 64,
        max_tokens: 2048,
        max_prompt_bytes: 1024 * 1024,
    };
    match api::parse_plain(data, 0, &policy, 1) {
        Ok(r) => assert!(r.n >= 1 && r.n <= api::MAX_PLAIN_N && (r.max_tokens >= 1 || r.echo)),
        Err(e) => assert!(e.status.is_client_error() && e.body().to_string().len() < 4096),
    }
    for endpoint in [api::Endpoint::Completions, api::Endpoint::Chat] {
        match api::parse(data, endpoint, &policy, 1) {
            Ok(r) => {
                let m = r.config.method();
                assert!(m.width() <= 16 && m.successors() <= 16 && m.rows() <= 64);
                assert!(r.config.max_new_tokens() >= 1 && r.config.max_new_tokens() <= 2048);
                assert!(!r.prompt.trim().is_empty() && r.prompt.len() <= 1024 * 1024);
                assert!(r.n >= 1 && r.n <= m.rows());
            }
            Err(e) => {
                assert!(e.status.is_client_error());
                assert!(e.body().to_string().len() < 4096);
            }
        }
    }
});
