//! The remote backend against a real OpenAI-compatible engine: llama-cpp-python's server
//! (installed by scripts/install-llama-server) serving the real SmolLM2-135M-Instruct and
//! gemma-3-270m GGUF files on 127.0.0.1.
//!
//! Tolerance for "remote score equals local score": both sides run the same GGUF through
//! llama.cpp, but llama-cpp-python vendors another llama.cpp version than the local
//! backend, and evaluates prompt + response in one batch where the local scorer evaluates
//! the prompt and then the response. Quantized kernels are deterministic but not
//! bit-exact across versions and batch shapes, so a token's log-prob may move by a few
//! tenths of a nat (measured: up to 0.06 per token, 0.21 on a lone EOS term); we allow
//! 0.1 nats per token plus 0.3. A real bug (an off-by-one pairing of tokens and
//! log-probs, a prompt token counted, a response token dropped, a missing EOS term) moves
//! the sum by whole nats: shifted pairs score these tokens at -7 to -12 nats each.
//!
//! llama-cpp-python's Python code sorts the whole vocabulary for every echoed token, so
//! scoring with gemma-3-270m (262k tokens) costs about 0.1 s per token: prompts and
//! responses here are short.

mod common;

use common::server::{model_path, Server};
use w2s_core::*;
use w2s_llama::{score_once, LlamaScorer, LoadOptions, Model};
use w2s_remote::*;

const PROMPT: &str = "I rented this movie last weekend and";
const TEXTS: &[&str] = &[
    " it was a delight from start to finish.",
    " honestly, I regret every minute of it. The plot was thin",
    "",
];
const POSITIVE_CHATML: &str =
    "<|im_start|>user\nWrite a very positive movie review.<|im_end|>\n<|im_start|>assistant\n{prompt}";
const POSITIVE_CHAT: &str = "chat:Write a very positive movie review.||{prompt}";
const IMDB: &str = "Here is a movie review from imdb: {prompt}";

fn tolerance(tokens: usize) -> f64 {
    0.1 * tokens as f64 + 0.3
}

fn local(name: &str, template: &str) -> LlamaScorer {
    let model = Model::load(&model_path(name), LoadOptions::default()).unwrap();
    LlamaScorer::new(model, PromptTemplate::new(template).unwrap(), 1)
}

fn endpoint(url: &str, model: &str, eos: Option<&str>) -> Endpoint {
    let mut spec = RemoteSpec::new(url, model);
    spec.eos_text = eos.map(str::to_string);
    spec.request_timeout_s = 120.0;
    spec.check().unwrap()
}

fn remote_score(scorer: &mut RemoteScorer, text: &str, ended: bool) -> Result<f64, BackendError> {
    scorer.begin(PROMPT, 1, 64)?;
    Ok(scorer.score(&[ScoreRequest {
        row: 0,
        text,
        ended,
    }])?[0])
}

fn check_equal(name: &str, template: &str, eos: &str) {
    let server = Server::start(name, name, true);
    let mut remote = RemoteScorer::new(
        endpoint(&server.url, name, Some(eos)),
        PromptTemplate::new(template).unwrap(),
    )
    .unwrap();
    let mut loc = local(name, template);
    for text in TEXTS {
        for ended in [false, true] {
            if text.is_empty() && !ended {
                continue;
            }
            let r = remote_score(&mut remote, text, ended).unwrap();
            let l = score_once(&mut loc, PROMPT, text, ended).unwrap();
            let n = loc.model().tokenize_response(text).len() + usize::from(ended);
            eprintln!("{name} ended={ended} {text:?}: remote {r:.4} local {l:.4}");
            assert!(r.is_finite() && r < 0.0, "{r}");
            assert!(
                (r - l).abs() <= tolerance(n),
                "{name} {text:?} ended={ended}: remote {r} local {l}"
            );
        }
    }
    assert_eq!(remote.engine(), Some(EngineKind::LlamaCppPython));
}

#[test]
fn remote_scoring_equals_local_scoring() {
    check_equal("gemma-3-270m", IMDB, "<eos>");
}

#[test]
fn engine_quirks_give_errors_not_wrong_numbers() {
    // SmolLM2 adds no BOS: llama-cpp-python's echo log-probs would be shifted by one.
    let small = Server::start("smollm2-135m-instruct", "smollm2", true);
    let mut s = RemoteScorer::new(
        endpoint(&small.url, "smollm2", Some("<|im_end|>")),
        PromptTemplate::new(POSITIVE_CHATML).unwrap(),
    )
    .unwrap();
    let e = remote_score(&mut s, TEXTS[0], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("shifted by one"), "{e}");
    drop(small);

    let server = Server::start("gemma-3-270m", "gemma", true);
    let scorer = |eos: Option<&str>, template: &str| {
        RemoteScorer::new(
            endpoint(&server.url, "gemma", eos),
            PromptTemplate::new(template).unwrap(),
        )
        .unwrap()
    };
    // No eos_text: an ended row is an error that says what to set.
    let mut no_eos = scorer(None, IMDB);
    assert!(remote_score(&mut no_eos, " fine.", false).is_ok());
    let e = remote_score(&mut no_eos, " fine.", true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("eos_text"), "{e}");
    // An end token the engine does not read as one special token.
    let e = remote_score(&mut scorer(Some("<|the_end|>"), IMDB), " fine.", true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("special token"), "{e}");
    // A chat: template cannot be rendered through /v1/completions.
    let e = remote_score(&mut scorer(None, POSITIVE_CHAT), " fine.", false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("chat markup"), "{e}");
    // A request longer than the server's context: the engine's message and the fix.
    let text = " and then".repeat(1500);
    let e = remote_score(&mut scorer(None, IMDB), &text, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 400") && e.contains("n_ctx"), "{e}");
}

fn config(max_new: usize) -> SearchConfig {
    SearchConfig::new(
        Method::Cbs { w: 2, k: 2, l: 5 },
        max_new,
        1.0,
        7,
        SamplingParams::default(),
        vec![],
    )
    .unwrap()
}

/// Checks a search result and that its best beam's log-probs are what local scoring says.
fn check_result(
    out: &SearchOutput,
    max_new: usize,
    tuned: &mut LlamaScorer,
    untuned: &mut LlamaScorer,
) {
    assert!(!out.beams.is_empty());
    for w in out.beams.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    let best = out.best();
    assert!(!best.text.trim().is_empty(), "{best:?}");
    assert!(
        best.strong_tokens >= 1 && best.strong_tokens <= max_new,
        "{best:?}"
    );
    assert!(out.stats.strong_tokens_sampled >= best.strong_tokens);
    let n = tuned.model().tokenize_response(&best.text).len() + 1;
    let t = score_once(tuned, PROMPT, &best.text, true).unwrap();
    let u = score_once(untuned, PROMPT, &best.text, true).unwrap();
    assert!(
        (t - best.tuned_logprob).abs() <= tolerance(n),
        "tuned {t} vs {}",
        best.tuned_logprob
    );
    assert!(
        (u - best.untuned_logprob).abs() <= tolerance(n),
        "untuned {u} vs {}",
        best.untuned_logprob
    );
    assert!((best.score - (best.tuned_logprob - best.untuned_logprob)).abs() < 1e-9);
}

#[test]
fn cbs_with_remote_strong_and_local_guides() {
    let server = Server::start("gemma-3-270m", "gemma", false);
    let mut strong = RemoteProposer::new(
        endpoint(&server.url, "gemma", None),
        PromptTemplate::new(IMDB).unwrap(),
    )
    .unwrap();
    let mut tuned = local("smollm2-135m-instruct", POSITIVE_CHAT);
    let mut untuned = local("smollm2-135m-instruct", "{prompt}");
    let max_new = 20;
    let out = search(
        &config(max_new),
        PROMPT,
        Models {
            strong: &mut strong,
            tuned: &mut tuned,
            untuned: &mut untuned,
        },
    )
    .unwrap();
    eprintln!(
        "best: {:?}; {} requests",
        out.best(),
        strong.requests_sent()
    );
    // Engine check + 4 rows per step for max_new / L steps, one request per row (it
    // ignores `n`); a retry or two over a closed pooled connection is tolerated.
    let expected = 1 + 4 * (max_new as u64 / 5);
    assert!(
        strong.requests_sent() >= expected && strong.requests_sent() <= expected + 2,
        "{}",
        strong.requests_sent()
    );
    check_result(&out, max_new, &mut tuned, &mut untuned);
}

#[test]
fn cbs_with_every_model_remote() {
    // Strong: SmolLM2; guide pair: gemma-3-270m steered by its prompt (it adds a BOS, so
    // llama-cpp-python's echo log-probs are right for any template).
    let strong_srv = Server::start("smollm2-135m-instruct", "smollm2", false);
    let guide_srv = Server::start("gemma-3-270m", "gemma", true);
    let positive = "A very positive review: {prompt}";
    let mut strong = RemoteProposer::new(
        endpoint(&strong_srv.url, "smollm2", None),
        PromptTemplate::new(POSITIVE_CHATML).unwrap(),
    )
    .unwrap();
    let mut tuned = RemoteScorer::new(
        endpoint(&guide_srv.url, "gemma", Some("<eos>")),
        PromptTemplate::new(positive).unwrap(),
    )
    .unwrap();
    let mut untuned = RemoteScorer::new(
        endpoint(&guide_srv.url, "gemma", Some("<eos>")),
        PromptTemplate::bare(),
    )
    .unwrap();
    let max_new = 10;
    let out = search(
        &config(max_new),
        PROMPT,
        Models {
            strong: &mut strong,
            tuned: &mut tuned,
            untuned: &mut untuned,
        },
    )
    .unwrap();
    eprintln!(
        "best: {:?}; requests {} / {} / {}",
        out.best(),
        strong.requests_sent(),
        tuned.requests_sent(),
        untuned.requests_sent()
    );
    // Each scorer: GET /v1/models, the BOS check, then one request per row and step (4
    // rows, 2 steps); a retry or two (e.g. over a pooled connection the server just
    // closed) is tolerated.
    for n in [tuned.requests_sent(), untuned.requests_sent()] {
        assert!((10..=12).contains(&n), "{n} requests");
    }
    check_result(
        &out,
        max_new,
        &mut local("gemma-3-270m", positive),
        &mut local("gemma-3-270m", "{prompt}"),
    );
}

#[test]
fn character_completed_past_max_tokens_on_llama_cpp_python() {
    // Gemma writes these hieroglyphs as 4 byte tokens each. llama-cpp-python never cuts
    // one: asked for 2 tokens it samples 4 and says so in `usage`; the backend takes the
    // whole character and counts the chunk as its budget instead of failing.
    let server = Server::start("gemma-3-270m", "gemma", false);
    let mut strong = RemoteProposer::new(
        endpoint(&server.url, "gemma", None),
        PromptTemplate::new("Egyptian hieroglyphs: {prompt}").unwrap(),
    )
    .unwrap();
    let mut tuned = local("smollm2-135m-instruct", POSITIVE_CHAT);
    let mut untuned = local("smollm2-135m-instruct", "{prompt}");
    let greedy = SamplingParams::new(0.0, 0, 1.0).unwrap();
    let config =
        SearchConfig::new(Method::Cbs { w: 1, k: 1, l: 2 }, 6, 1.0, 7, greedy, vec![]).unwrap();
    let out = search(
        &config,
        "𓀀𓀁𓀂𓀃𓀄𓀅 𓀀𓀁𓀂𓀃𓀄𓀅 𓀀𓀁𓀂",
        Models {
            strong: &mut strong,
            tuned: &mut tuned,
            untuned: &mut untuned,
        },
    )
    .unwrap();
    let best = out.best();
    eprintln!("{best:?}");
    assert_eq!(best.text, "\u{13003}\u{13004}\u{13005}");
    assert_eq!(best.strong_tokens, 6);
}
