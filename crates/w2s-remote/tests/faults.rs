//! Failure handling, with faults injected by a small proxy of our own on loopback in
//! front of the real llama-cpp-python server. Every case must end (success or a clear
//! error) within a bound, never hang.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Fault, Proxy};
use common::server::Server;
use w2s_core::*;
use w2s_remote::*;

const PROMPT: &str = "I saw it and";
const TEXT: &str = " it was fine.";
const TEMPLATE: &str = "Review: {prompt}";

fn scorer(url: &str, timeout_s: f64) -> RemoteScorer {
    let mut spec = RemoteSpec::new(url, "gemma");
    spec.max_retries = 2;
    spec.max_backoff_s = 2.0;
    spec.request_timeout_s = timeout_s;
    spec.engine = EngineKind::LlamaCppPython;
    RemoteScorer::new(
        spec.check().unwrap(),
        PromptTemplate::new(TEMPLATE).unwrap(),
    )
    .unwrap()
}

fn score(s: &mut RemoteScorer) -> Result<f64, BackendError> {
    s.begin(PROMPT, 1, 32)?;
    Ok(s.score(&[ScoreRequest {
        row: 0,
        text: TEXT,
        ended: false,
    }])?[0])
}

fn remote_error(e: BackendError) -> RemoteError {
    *e.into_inner()
        .downcast::<RemoteError>()
        .expect("a RemoteError")
}

#[test]
fn faults_give_the_documented_behaviour_and_never_hang() {
    let server = Server::start("gemma-3-270m", "gemma", true);
    let direct = score(&mut scorer(&server.url, 60.0)).unwrap();

    // 500 once, then success: retried, same number as without the proxy.
    let proxy = Proxy::start(server.port, Fault::Status(500), Some(1));
    let got = score(&mut scorer(&proxy.url, 60.0)).unwrap();
    assert!((got - direct).abs() < 1e-6, "{got} vs {direct}");
    assert_eq!(proxy.posts(), 2);

    // Permanent 503: fails after 1 + 2 attempts, within the backoff bound.
    let proxy = Proxy::start(server.port, Fault::Status(503), None);
    let t = Instant::now();
    let e = remote_error(score(&mut scorer(&proxy.url, 60.0)).unwrap_err());
    assert!(matches!(e, RemoteError::GaveUp { attempts: 3, .. }), "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    assert_eq!(proxy.posts(), 3);
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());

    // 429 with Retry-After: 1 s: waited for, then success.
    let proxy = Proxy::start(server.port, Fault::RetryAfter(1), Some(1));
    let t = Instant::now();
    assert!((score(&mut scorer(&proxy.url, 60.0)).unwrap() - direct).abs() < 1e-6);
    assert!(t.elapsed() >= Duration::from_secs(1));
    // ... but a Retry-After beyond max_backoff_s fails at once, saying so.
    let proxy = Proxy::start(server.port, Fault::RetryAfter(3600), None);
    let e = remote_error(score(&mut scorer(&proxy.url, 60.0)).unwrap_err());
    assert!(matches!(e, RemoteError::RetryTooLate { .. }), "{e}");

    // A stalled server: each attempt times out after 1 s; 3 attempts, then an error.
    let proxy = Proxy::start(server.port, Fault::Stall, None);
    let t = Instant::now();
    let e = remote_error(score(&mut scorer(&proxy.url, 1.0)).unwrap_err());
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // A connection cut mid-response: retried; if it keeps happening, a clear error.
    let proxy = Proxy::start(server.port, Fault::Cut, Some(1));
    assert!((score(&mut scorer(&proxy.url, 60.0)).unwrap() - direct).abs() < 1e-6);
    let proxy = Proxy::start(server.port, Fault::Cut, None);
    let e = remote_error(score(&mut scorer(&proxy.url, 60.0)).unwrap_err());
    assert!(
        matches!(e, RemoteError::GaveUp { .. }) && e.to_string().contains("connection"),
        "{e}"
    );

    // Invalid JSON: not retried, says what it got.
    let proxy = Proxy::start(server.port, Fault::InvalidJson, None);
    let e = remote_error(score(&mut scorer(&proxy.url, 60.0)).unwrap_err());
    assert!(
        matches!(e, RemoteError::Malformed { .. }) && e.to_string().contains("<html>"),
        "{e}"
    );
    assert_eq!(proxy.posts(), 1);

    // Log-probs missing (an engine started without them): names the server flag.
    let proxy = Proxy::start(server.port, Fault::StripLogprobs, None);
    let e = remote_error(score(&mut scorer(&proxy.url, 60.0)).unwrap_err());
    assert!(
        matches!(e, RemoteError::NoLogprobs { .. }) && e.to_string().contains("--logits_all true"),
        "{e}"
    );
}

#[test]
fn strong_model_retries_a_500_and_a_real_server_without_logprobs_is_named() {
    let server = Server::start("gemma-3-270m", "gemma", false);
    let proxy = Proxy::start(server.port, Fault::Status(500), Some(2));
    let mut spec = RemoteSpec::new(&proxy.url, "gemma");
    spec.max_backoff_s = 1.0;
    let mut strong = RemoteProposer::new(
        spec.check().unwrap(),
        PromptTemplate::new(TEMPLATE).unwrap(),
    )
    .unwrap();
    let sampling = SamplingParams::default();
    strong
        .begin(&ProposalSetup {
            prompt: PROMPT,
            rows: 2,
            max_new_tokens: 8,
            sampling: &sampling,
            stop: &[],
            chunk_end: None,
            logprobs: false,
        })
        .unwrap();
    let (mut a, mut b) = (RowRng::new(1, 0), RowRng::new(1, 1));
    let mut reqs = [
        ExtendRequest {
            row: 0,
            max_tokens: 4,
            rng: &mut a,
        },
        ExtendRequest {
            row: 1,
            max_tokens: 4,
            rng: &mut b,
        },
    ];
    let chunks = strong.extend(&mut reqs).unwrap();
    assert_eq!(chunks.len(), 2);
    for c in &chunks {
        assert!(c.tokens >= 1 && c.tokens <= 4, "{c:?}");
    }
    assert_eq!(strong.requests_sent(), 5); // GET /v1/models, 2 rows, 2 retried 500s

    // The real server started without logits_all refuses echo log-probs.
    let e = remote_error(score(&mut scorer(&server.url, 60.0)).unwrap_err());
    eprintln!("{e}");
    assert!(e.to_string().contains("logits_all"), "{e}");
}
