//! The remote backend against another w2s: `w2s serve` (configs/sentiment.toml: strong
//! gemma-3-270m, tuned and untuned SmolLM2-135M-Instruct) as the OpenAI-compatible engine
//! for all three roles, through its per-model endpoints `strong`, `tuned` and `untuned`.
//! SmolLM2 adds no BOS token, which llama-cpp-python's echo log-probs get wrong; w2s's
//! are right, so a w2s can score for another w2s.
//!
//! Both sides run the same llama.cpp build on the same GGUF; the server evaluates prompt
//! and text in one batch where the local scorer evaluates the prompt, then the response,
//! so sums may differ by batch-shape rounding (0.05 nat per token + 0.1 allowed). A
//! pairing bug (a token shifted, a prompt token counted, the EOS term missing) moves the
//! sum by whole nats.

#[allow(dead_code)] // shared with the other server tests
mod support;

use support::server::{serial, Server};
use w2s_core::{
    search, BackendError, Method, Models, PromptTemplate, SamplingParams, ScoreRequest, Scorer,
    SearchConfig,
};
use w2s_llama::{guide_file, resolve_model, score_once, LlamaScorer, LoadOptions, Model};
use w2s_remote::{EngineKind, RemoteProposer, RemoteScorer, RemoteSpec};

const PROMPT: &str = "I rented this movie last weekend and";
const POSITIVE_CHATML: &str =
    "<|im_start|>user\nWrite a very positive movie review.<|im_end|>\n<|im_start|>assistant\n{prompt}";
const IMDB: &str = "Here is a movie review from imdb: {prompt}";
const EOS: &str = "<|im_end|>";

fn tolerance(tokens: usize) -> f64 {
    0.05 * tokens as f64 + 0.1
}

/// The file a local guide role scores with (SmolLM2's Q4_1 file through its Q8_0 copy),
/// as the server's tuned and untuned roles do.
fn local(template: &str) -> LlamaScorer {
    let options = LoadOptions::default();
    let file = guide_file(&resolve_model("smollm2-135m-instruct"), options, 2);
    let model = Model::load(&file, options).unwrap();
    LlamaScorer::new(model, PromptTemplate::new(template).unwrap(), 2)
}

fn spec(server: &Server, model: &str, eos: Option<&str>) -> w2s_remote::Endpoint {
    let mut s = RemoteSpec::new(&server.url("/v1"), model);
    s.eos_text = eos.map(str::to_string);
    s.request_timeout_s = 120.0;
    s.check().unwrap()
}

fn remote_score(s: &mut RemoteScorer, text: &str, ended: bool) -> Result<f64, BackendError> {
    s.begin(PROMPT, 1, 64)?;
    Ok(s.score(&[ScoreRequest {
        row: 0,
        text,
        ended,
    }])?[0])
}

#[test]
fn a_w2s_server_scores_a_model_without_bos_as_local_scoring_does() {
    let _serial = serial();
    let server = Server::start(&[], &[]);
    for (role, template) in [("tuned", POSITIVE_CHATML), ("untuned", "{prompt}")] {
        let mut remote = RemoteScorer::new(
            spec(&server, role, Some(EOS)),
            PromptTemplate::new(template).unwrap(),
        )
        .unwrap();
        let mut loc = local(template);
        for text in [
            " it was a delight from start to finish.",
            " honestly, I regret every minute of it. The plot was thin",
            "",
        ] {
            for ended in [false, true] {
                if text.is_empty() && !ended {
                    continue;
                }
                let r = remote_score(&mut remote, text, ended).unwrap();
                let l = score_once(&mut loc, PROMPT, text, ended).unwrap();
                let n = loc.model().tokenize_response(text).len() + usize::from(ended);
                eprintln!("{role} ended={ended} {text:?}: remote {r:.4} local {l:.4}");
                assert!(
                    r.is_finite() && (r - l).abs() <= tolerance(n),
                    "{role} {text:?} ended={ended}: remote {r} local {l}"
                );
            }
        }
        assert_eq!(remote.engine(), Some(EngineKind::W2s));
    }
}

#[test]
fn cbs_with_every_model_on_a_w2s_server() {
    let _serial = serial();
    let server = Server::start(&[], &[]);
    let mut strong = RemoteProposer::new(
        spec(&server, "strong", None),
        PromptTemplate::new(IMDB).unwrap(),
    )
    .unwrap();
    let mut tuned = RemoteScorer::new(
        spec(&server, "tuned", Some(EOS)),
        PromptTemplate::new(POSITIVE_CHATML).unwrap(),
    )
    .unwrap();
    let mut untuned =
        RemoteScorer::new(spec(&server, "untuned", Some(EOS)), PromptTemplate::bare()).unwrap();
    let max_new = 10;
    let config = SearchConfig::new(
        Method::Cbs { w: 2, k: 2, l: 5 },
        max_new,
        1.0,
        7,
        SamplingParams::default(),
        vec![],
    )
    .unwrap();
    let out = search(
        &config,
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
    // w2s honours `n`: one request per beam and step (1 then 2 beams), plus the engine
    // check; a retry over a pooled connection the server closed is tolerated.
    assert!(
        (1 + 1 + 2..=1 + 1 + 2 + 2).contains(&strong.requests_sent()),
        "{}",
        strong.requests_sent()
    );
    for w in out.beams.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    let best = out.best();
    assert!(!best.text.trim().is_empty() && best.strong_tokens <= max_new);
    assert!((best.score - (best.tuned_logprob - best.untuned_logprob)).abs() < 1e-9);
    // Final beams are scored as ended (the EOS term included), whatever ended them.
    let ended = true;
    let n = local("{prompt}")
        .model()
        .tokenize_response(&best.text)
        .len()
        + 1;
    let t = score_once(&mut local(POSITIVE_CHATML), PROMPT, &best.text, ended).unwrap();
    let u = score_once(&mut local("{prompt}"), PROMPT, &best.text, ended).unwrap();
    assert!(
        (t - best.tuned_logprob).abs() <= tolerance(n),
        "{t} {best:?}"
    );
    assert!(
        (u - best.untuned_logprob).abs() <= tolerance(n),
        "{u} {best:?}"
    );
}
