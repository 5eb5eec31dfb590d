//! The strong-model backend's own logic against a scripted stand-in engine (no model):
//! stop strings across chunk edges, characters cut at `max_tokens`, engines that cap `n`.
//! The same behaviour on the real llama-server is in `llama_server.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::stub::{completion, Stub};
use serde_json::{json, Value};
use w2s_core::*;
use w2s_remote::*;

const TEMPLATE: &str = "Q: {prompt}\nA:";

/// A guide that likes longer text a little: enough to rank rows deterministically.
struct LengthScorer;

impl Scorer for LengthScorer {
    fn begin(&mut self, _: &str, _: usize, _: usize) -> Result<(), BackendError> {
        Ok(())
    }
    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        Ok(requests.iter().map(|r| r.text.len() as f64).collect())
    }
    fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> {
        Ok(())
    }
    fn tokens_evaluated(&self) -> u64 {
        0
    }
}

struct Zero;

impl Scorer for Zero {
    fn begin(&mut self, _: &str, _: usize, _: usize) -> Result<(), BackendError> {
        Ok(())
    }
    fn score(&mut self, requests: &[ScoreRequest<'_>]) -> Result<Vec<f64>, BackendError> {
        Ok(vec![0.0; requests.len()])
    }
    fn reorder(&mut self, _: &[usize]) -> Result<(), BackendError> {
        Ok(())
    }
    fn tokens_evaluated(&self) -> u64 {
        0
    }
}

fn proposer(url: &str) -> RemoteProposer {
    let mut spec = RemoteSpec::new(url, "m");
    spec.max_retries = 0;
    RemoteProposer::new(
        spec.check().unwrap(),
        PromptTemplate::new(TEMPLATE).unwrap(),
    )
    .unwrap()
}

fn prompt_of(body: &Value) -> String {
    body["prompt"].as_str().unwrap_or_default().to_string()
}

fn n_of(body: &Value) -> usize {
    body["n"].as_u64().unwrap_or(1) as usize
}

/// A search of "how was it?" on `strong`, guided by the length of the text.
fn guided(strong: &mut RemoteProposer, config: &SearchConfig) -> Result<SearchOutput, SearchError> {
    let models = Models {
        strong,
        tuned: &mut LengthScorer,
        untuned: &mut Zero,
    };
    search(config, "how was it?", models)
}

fn run(strong: &mut RemoteProposer, method: Method, max_new: usize, stop: &[&str]) -> SearchOutput {
    let config = SearchConfig::new(
        method,
        max_new,
        1.0,
        3,
        SamplingParams::default(),
        stop.iter().map(|s| s.to_string()).collect(),
    )
    .unwrap();
    guided(strong, &config).unwrap()
}

#[test]
fn stop_string_straddling_two_chunks_ends_the_row() {
    // Chunk 1 ends in "\n", chunk 2 starts with "\nQ:": the engine, matching only inside
    // its new completion, never sees "\n\n".
    let stub = Stub::start("vllm", None, |body| {
        let n = n_of(body);
        let prompt = prompt_of(body);
        let text = if prompt.ends_with("\nA:") {
            " Fine.\n"
        } else if prompt.ends_with("Fine.\n") {
            "\nQ: and"
        } else {
            " more"
        };
        (200, completion(&vec![(text, "length"); n], 5))
    });
    let mut strong = proposer(&stub.url);
    let out = run(&mut strong, Method::Cbs { w: 2, k: 2, l: 5 }, 20, &["\n\n"]);
    for beam in &out.beams {
        assert_eq!(beam.text, " Fine.", "{beam:?}");
        assert_eq!(beam.finish, Finish::Stop, "{beam:?}");
        assert_eq!(beam.strong_tokens, 10, "both chunks' tokens count");
    }
    // The held-back "\n" was not given to the guides, but was in the next prompt.
    let second: Vec<String> = stub.bodies().iter().skip(1).map(prompt_of).collect();
    assert!(!second.is_empty());
    assert!(
        second.iter().all(|p| p.ends_with("A: Fine.\n")),
        "{second:?}"
    );
    assert_eq!(
        stub.bodies().len(),
        2,
        "one request per beam and step, n = 4 then n = 4"
    );
}

#[test]
fn held_back_stop_prefix_is_returned_when_no_stop_follows() {
    let stub = Stub::start("vllm", None, |body| {
        let prompt = prompt_of(body);
        let text = if prompt.ends_with("\nA:") {
            " one\n"
        } else {
            "two"
        };
        (200, completion(&vec![(text, "length"); n_of(body)], 2))
    });
    let mut strong = proposer(&stub.url);
    let out = run(&mut strong, Method::Cbs { w: 1, k: 1, l: 2 }, 4, &["\n\n"]);
    assert_eq!(out.best().text, " one\ntwo");
    assert_eq!(out.best().finish, Finish::Length);
}

#[test]
fn multibyte_character_cut_at_max_tokens_is_not_kept_as_replacement() {
    // The engine cut a 4-byte emoji after its first token and sent U+FFFD for it.
    let stub = Stub::start("vllm", None, |body| {
        let prompt = prompt_of(body);
        let (text, finish) = if prompt.ends_with("\nA:") {
            (" smile \u{FFFD}", "length")
        } else if prompt.ends_with("A: smile ") {
            ("\u{1F600} yes", "stop")
        } else {
            ("(prompt kept the replacement character)", "stop")
        };
        (200, completion(&[(text, finish)], 2))
    });
    let mut strong = proposer(&stub.url);
    let out = run(&mut strong, Method::Cbs { w: 1, k: 1, l: 2 }, 10, &[]);
    assert_eq!(out.best().text, " smile \u{1F600} yes");
    assert_eq!(
        out.best().strong_tokens,
        4,
        "the dropped character's tokens count"
    );
    assert!(stub
        .bodies()
        .iter()
        .all(|b| !prompt_of(b).contains('\u{FFFD}')));
}

/// An engine that takes at most `cap` samples per request and rejects more the way
/// llama-server does.
fn capped(cap: usize, calls: Arc<AtomicUsize>) -> impl Fn(&Value) -> (u16, Value) {
    move |body| {
        calls.fetch_add(1, Ordering::SeqCst);
        let n = n_of(body);
        if n > cap {
            let msg = format!("Field 'n': Value must be between 1 <= value <= {cap}, but got {n}");
            return (
                400,
                json!({"error": {"code": 400, "message": msg, "type": "invalid_request_error"}}),
            );
        }
        let seed = body["seed"].as_u64().unwrap();
        let texts: Vec<String> = (0..n).map(|i| format!(" s{}", seed + i as u64)).collect();
        let choices: Vec<(&str, &str)> = texts.iter().map(|t| (t.as_str(), "length")).collect();
        (200, completion(&choices, 5))
    }
}

#[test]
fn n_above_the_engine_cap_is_split_after_its_400() {
    let calls = Arc::new(AtomicUsize::new(0));
    let stub = Stub::start("some-engine", None, capped(2, calls.clone()));
    let mut strong = proposer(&stub.url);
    let out = run(&mut strong, Method::Cbs { w: 1, k: 4, l: 5 }, 10, &[]);
    assert_eq!(strong.n_cap(), Some(2));
    let ns: Vec<usize> = stub.bodies().iter().map(n_of).collect();
    // Step 1: n = 4 refused once, then 2 + 2; step 2: 2 + 2 at once.
    assert_eq!(ns, vec![4, 2, 2, 2, 2], "{ns:?}");
    assert_eq!(out.beams.len(), 4);
    // Each split request has its own seed, and the samples are distinct.
    let seeds: Vec<u64> = stub.bodies()[1..3]
        .iter()
        .map(|b| b["seed"].as_u64().unwrap())
        .collect();
    assert_ne!(seeds[0], seeds[1]);
    let texts: std::collections::HashSet<&str> =
        out.beams.iter().map(|b| b.text.as_str()).collect();
    assert_eq!(texts.len(), 4, "{texts:?}");

    // The cap read from llama-server's GET /props gives the same requests and samples,
    // without the refused one: the split does not depend on how the cap was learnt.
    let calls2 = Arc::new(AtomicUsize::new(0));
    let props = json!({"total_slots": 2, "model_alias": "m"});
    let stub2 = Stub::start("llamacpp", Some(props), capped(2, calls2.clone()));
    let mut strong2 = proposer(&stub2.url);
    let out2 = run(&mut strong2, Method::Cbs { w: 1, k: 4, l: 5 }, 10, &[]);
    assert_eq!(strong2.engine(), Some(EngineKind::LlamaServer));
    assert_eq!(strong2.n_cap(), Some(2));
    assert_eq!(stub2.gets(), vec!["/v1/models", "/props"]);
    let ns2: Vec<usize> = stub2.bodies().iter().map(n_of).collect();
    assert_eq!(ns2, vec![2, 2, 2, 2]);
    assert_eq!(out2.beams, out.beams);
    // llama-server gets its sampler chain and an explicit top_k.
    let b = &stub2.bodies()[0];
    assert_eq!(b["samplers"], json!(["temperature", "top_k", "top_p"]));
    assert!(b["top_k"].is_u64(), "{b}");
}

#[test]
fn a_cap_it_cannot_learn_is_a_clear_error() {
    // A 400 about `n` that names no usable bound fails with the engine's message.
    let stub = Stub::start("some-engine", None, |_| {
        (400, json!({"error": {"message": "n is not supported"}}))
    });
    let mut strong = proposer(&stub.url);
    let config = SearchConfig::new(
        Method::Cbs { w: 1, k: 2, l: 5 },
        10,
        1.0,
        3,
        SamplingParams::default(),
        vec![],
    )
    .unwrap();
    let e = guided(&mut strong, &config).unwrap_err();
    assert!(e.to_string().contains("n is not supported"), "{e}");
    assert_eq!(stub.bodies().len(), 1);
}

#[test]
fn llama_server_cannot_be_a_scorer_and_says_so() {
    let stub = Stub::start("llamacpp", Some(json!({"total_slots": 1})), |_| {
        (
            400,
            json!({"error": {"message": "Only no echo is supported"}}),
        )
    });
    let mut scorer = RemoteScorer::new(
        RemoteSpec::new(&stub.url, "m").check().unwrap(),
        PromptTemplate::bare(),
    )
    .unwrap();
    let e = scorer.begin("hi", 1, 4).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Input);
    assert!(e.to_string().contains("llama-server"), "{e}");
    assert!(stub.bodies().is_empty());
}

#[test]
fn character_completed_past_max_tokens_is_accepted() {
    // llama-cpp-python samples past max_tokens to finish a character and counts it.
    let stub = Stub::start("me", None, |body| {
        let prompt = prompt_of(body);
        let text = if prompt.ends_with("\nA:") {
            "\u{13003}"
        } else {
            "\u{13004}"
        };
        (200, completion(&[(text, "length")], 4))
    });
    let mut strong = proposer(&stub.url);
    let out = run(&mut strong, Method::Cbs { w: 1, k: 1, l: 2 }, 4, &[]);
    assert_eq!(out.best().text, "\u{13003}\u{13004}");
    assert_eq!(
        out.best().strong_tokens,
        4,
        "counted as the budget, 2 per chunk"
    );
    // More than a character's worth past the budget is still a malformed reply.
    let stub = Stub::start("me", None, |_| {
        (200, completion(&[(" far too much", "length")], 6))
    });
    let mut strong = proposer(&stub.url);
    let config = SearchConfig::new(
        Method::Cbs { w: 1, k: 1, l: 2 },
        4,
        1.0,
        3,
        SamplingParams::default(),
        vec![],
    )
    .unwrap();
    let e = guided(&mut strong, &config).unwrap_err();
    assert!(e.to_string().contains("6 tokens for max_tokens = 2"), "{e}");
}

/// A legacy-shape completion with per-token log-probs: each token with its log-prob and
/// either a sure next-token distribution (one outcome at 0.99) or an unsure one (five
/// equal outcomes: entropy ln 5 = 1.61 nats).
fn with_logprobs(tokens: &[(&str, bool)], finish: &str) -> Value {
    let text: String = tokens.iter().map(|(t, _)| *t).collect();
    let tops: Vec<Value> = tokens
        .iter()
        .map(|(t, unsure)| {
            if *unsure {
                json!({*t: -1.609, "a": -1.609, "b": -1.609, "c": -1.609, "d": -1.609})
            } else {
                json!({*t: -0.01})
            }
        })
        .collect();
    let lps: Vec<f64> = tokens
        .iter()
        .map(|(_, u)| if *u { -1.609 } else { -0.01 })
        .collect();
    let names: Vec<&str> = tokens.iter().map(|(t, _)| *t).collect();
    json!({"object": "text_completion", "choices": [{"index": 0, "text": text,
        "finish_reason": finish, "logprobs": {"tokens": names, "token_logprobs": lps,
        "top_logprobs": tops}}], "usage": {"completion_tokens": tokens.len()}})
}

fn adaptive(max_new: usize, min: usize) -> SearchConfig {
    SearchConfig::new(
        Method::Cbs { w: 1, k: 1, l: 5 },
        max_new,
        1.0,
        3,
        SamplingParams::default(),
        vec![],
    )
    .unwrap()
    .with_chunk_end(Some(EntropyEnd::new(min, 1.0).unwrap()))
    .unwrap()
    .with_trace(true)
}

#[test]
fn adaptive_chunk_ends_cut_a_remote_sample_at_its_first_unsure_token() {
    let stub = Stub::start("vllm", None, |body| {
        let prompt = prompt_of(body);
        if prompt.ends_with("\nA:") {
            let t = [
                (" The", true),
                (" film", false),
                (" was", false),
                (" great", true),
                ("!", false),
            ];
            (200, with_logprobs(&t, "length"))
        } else if prompt.ends_with("A: The film was") {
            (
                200,
                with_logprobs(&[(" great", false), (" fun", false)], "stop"),
            )
        } else {
            (
                200,
                completion(&[("(the cut text was not continued)", "stop")], 3),
            )
        }
    });
    let mut strong = proposer(&stub.url);
    let out = guided(&mut strong, &adaptive(20, 2)).unwrap();
    // " The" is unsure but under the minimum; " great" ends the first chunk.
    assert_eq!(out.best().text, " The film was great fun");
    assert_eq!(out.best().strong_tokens, 5);
    let trace = out.trace.expect("traced");
    let chunks: Vec<(&str, usize)> = trace
        .steps
        .iter()
        .map(|s| (s.rows[0].chunk.as_str(), s.rows[0].tokens))
        .collect();
    assert_eq!(chunks, [(" The film was", 3), (" great fun", 2)]);
    // The chunk's log-probability is the sum over the tokens it kept.
    let lp = trace.steps[0].rows[0].strong_logprob.unwrap();
    assert!((lp - (-1.609 - 0.02)).abs() < 1e-9, "{lp}");
    let bodies = stub.bodies();
    assert!(
        bodies.iter().all(|b| b["logprobs"] == json!(20)),
        "{bodies:?}"
    );
}

#[test]
fn adaptive_chunk_ends_on_an_engine_without_top_logprobs_are_refused() {
    let stub = Stub::start("openai", None, |_| {
        (200, completion(&[(" fine", "length")], 5))
    });
    let mut strong = proposer(&stub.url);
    let err = guided(&mut strong, &adaptive(20, 2)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("need the engine's top log-probabilities"),
        "{msg}"
    );
    assert_eq!(err.kind(), ErrorKind::Input, "{msg}");
}
