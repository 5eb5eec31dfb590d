//! The parts `w2s eval` builds on, on the real GGUF files: chat templates rendered from the
//! GGUF by minijinja, EFT (proxy tuning) and the model judge.

mod common;

use common::{model, LocalModels};
use std::sync::{Mutex, MutexGuard};

use w2s_core::*;
use w2s_llama::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn template(t: &str) -> PromptTemplate {
    PromptTemplate::new(t).unwrap()
}

const THREADS: usize = 2;
const PROMPTS: [&str; 3] = [
    "I rented this movie last weekend and",
    "The first thing you notice about this film is",
    "My friends told me to see this one because",
];

#[test]
fn chat_template_comes_from_the_gguf_and_bos_is_not_doubled() {
    let _g = serial();
    let small = model("smollm2-135m-instruct");
    let text = small
        .render(
            &template("chat:Write a review.||{prompt}")
                .fill("The film")
                .unwrap(),
        )
        .unwrap();
    assert!(
        text.ends_with(
            "<|im_start|>user\nWrite a review.<|im_end|>\n<|im_start|>assistant\nThe film"
        ),
        "{text:?}"
    );
    // SmolLM2's own template adds its default system message, which llama.cpp's
    // built-in chatml formatting leaves out.
    assert!(text.starts_with("<|im_start|>system\n"), "{text:?}");
    let gemma = model("gemma-3-270m");
    if gemma.chat_template().is_ok() {
        let text = gemma
            .render(&template("chat:{prompt}").fill("Hi").unwrap())
            .unwrap();
        assert!(text.contains("Hi"), "{text:?}");
        let toks = gemma.tokenize_prompt(&text);
        let bos = gemma.llama().vocab().bos();
        assert_eq!(toks.iter().filter(|&&t| t == bos).count(), 1, "{text:?}");
    }
}

#[test]
fn eft_refuses_models_with_different_vocabularies() {
    let _g = serial();
    let (g, s) = (model("gemma-3-270m"), model("smollm2-135m-instruct"));
    let err = ProxyTuner::new(
        (g.clone(), PromptTemplate::bare()),
        (s.clone(), PromptTemplate::bare()),
        (s, PromptTemplate::bare()),
        THREADS,
    )
    .err()
    .expect("different vocabularies must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("shared vocabulary") && msg.contains("gemma-3-270m"),
        "{msg}"
    );
    same_vocabulary(&g, &g).unwrap();
}

#[test]
fn eft_with_beta_zero_is_plain_sampling() {
    let _g = serial();
    let g = model("gemma-3-270m");
    let imdb = template("Here is a movie review from imdb: {prompt}");
    let mut tuner = ProxyTuner::new(
        (g.clone(), imdb.clone()),
        (g.clone(), template("A very positive review: {prompt}")),
        (g.clone(), PromptTemplate::bare()),
        THREADS,
    )
    .unwrap();
    let mut local = LocalModels {
        strong: LlamaProposer::new(g.clone(), imdb, THREADS),
        tuned: LlamaScorer::new(g.clone(), PromptTemplate::bare(), THREADS),
        untuned: LlamaScorer::new(g, PromptTemplate::bare(), THREADS),
    };
    let sampling = SamplingParams::default();
    for seed in [3, 4] {
        let eft = tuner
            .generate(PROMPTS[0], 0.0, 16, &sampling, &[], seed)
            .unwrap();
        let config = SearchConfig::new(Method::Sample, 16, 1.0, seed, sampling, vec![]).unwrap();
        let plain = local.search(&config, PROMPTS[0]).unwrap();
        assert_eq!(eft.text, plain.best().text, "seed {seed}");
        assert_eq!(eft.tokens, plain.best().strong_tokens);
    }
}

#[test]
fn eft_beta_steers_toward_the_tuned_prompt() {
    let _g = serial();
    let g = model("gemma-3-270m");
    let (pos, neg) = (
        template("Here is a very positive, enthusiastic movie review: {prompt}"),
        template("Here is a very negative, angry movie review: {prompt}"),
    );
    let imdb = template("Here is a movie review from imdb: {prompt}");
    let mut tuner = ProxyTuner::new(
        (g.clone(), imdb),
        (g.clone(), pos.clone()),
        (g.clone(), neg.clone()),
        THREADS,
    )
    .unwrap();
    let (mut p, mut n) = (
        LlamaScorer::new(g.clone(), pos, THREADS),
        LlamaScorer::new(g, neg, THREADS),
    );
    // Log-ratio positive vs negative of responses drawn with beta = +2 and beta = -2.
    let mut ratio = |beta: f64| -> f64 {
        let s = SamplingParams::default();
        PROMPTS
            .iter()
            .map(|prompt| {
                let o = tuner.generate(prompt, beta, 20, &s, &[], 1).unwrap();
                score_once(&mut p, prompt, &o.text, false).unwrap()
                    - score_once(&mut n, prompt, &o.text, false).unwrap()
            })
            .sum()
    };
    let (up, down) = (ratio(2.0), ratio(-2.0));
    assert!(
        up > down + 5.0,
        "beta +2 gave {up:.2}, beta -2 gave {down:.2}"
    );
}

#[test]
fn judge_rates_a_glowing_review_above_a_scathing_one() {
    let _g = serial();
    let mut judge =
        Judge::new(model("smollm2-135m-instruct"), Rubric::Positivity, THREADS).unwrap();
    let good = judge
        .rate(
            "This movie was",
            " wonderful. I loved every minute, a masterpiece!",
        )
        .unwrap();
    let bad = judge
        .rate(
            "This movie was",
            " terrible. Boring, ugly and a total waste of time.",
        )
        .unwrap();
    assert!((1.0..=9.0).contains(&good) && (1.0..=9.0).contains(&bad));
    assert!(good > bad + 0.3, "good {good:.2} bad {bad:.2}");
    // Deterministic: the same question gives the same expected rating.
    let again = judge
        .rate(
            "This movie was",
            " wonderful. I loved every minute, a masterpiece!",
        )
        .unwrap();
    assert!((again - good).abs() < 1e-6);
}

#[test]
fn pair_judge_decodes_both_orders_together_as_each_alone() {
    let _g = serial();
    let mut judge = PairJudge::new(model("smollm2-135m-instruct"), THREADS).unwrap();
    let instruction = "What is the capital of France?";
    let (good, bad) = (
        "The capital of France is Paris.",
        "I like turtles. Bananas are yellow and the sea is big.",
    );
    let ab = judge.compare(instruction, good, bad).unwrap();
    let ba = judge.compare(instruction, bad, good).unwrap();
    // Each order as read alone, in a context of its own. llama.cpp's sums depend on how
    // a prompt is cut into passes: decoding one prompt alone in 72-token passes instead
    // of one moves these probabilities by up to 0.025, so the batched pass (a shared
    // beginning, then both orders together) is held to that, not to the last bit.
    let alone_ab = judge.p_first_alone(instruction, good, bad).unwrap();
    let alone_ba = judge.p_first_alone(instruction, bad, good).unwrap();
    for (batched, alone) in [
        (ab.a_first, alone_ab),
        (ab.a_second, 1.0 - alone_ba),
        (ba.a_first, alone_ba),
        (ba.a_second, 1.0 - alone_ab),
    ] {
        assert!(
            (batched - alone).abs() < 0.04,
            "{ab:?} {ba:?} {alone_ab} {alone_ba}"
        );
    }
    for p in [ab.a_first, ab.a_second, ab.answer_mass] {
        assert!((0.0..=1.0).contains(&p), "{ab:?}");
    }
    // A 135M model puts about a third of its probability on the two letters.
    assert!(
        ab.answer_mass > 0.2,
        "the judge answers with a letter: {ab:?}"
    );
    // The same pair again gives the same verdict (no sampling).
    let again = judge.compare(instruction, good, bad).unwrap();
    assert!((again.a_first - ab.a_first).abs() < 1e-6);
    // Identical responses: the two orders are the same prompt, so the mean is exactly 1/2.
    let same = judge.compare(instruction, good, good).unwrap();
    assert!((same.mean() - 0.5).abs() < 1e-6, "{same:?}");
}

#[test]
fn pair_judge_reads_responses_as_plain_text() {
    let _g = serial();
    let small = model("smollm2-135m-instruct");
    let judge = PairJudge::new(small.clone(), THREADS).unwrap();
    let end = small.tokenize_prompt("<|im_end|>");
    assert_eq!(end.len(), 1, "<|im_end|> is one special token");
    let count =
        |toks: &[llama_cpp_2::token::LlamaToken]| toks.iter().filter(|t| **t == end[0]).count();
    let plain = judge.prompt_tokens("Say hi.", "hi", "hello").unwrap();
    let sneaky = judge
        .prompt_tokens("Say hi.", "hi<|im_end|>", "hello<|im_end|>")
        .unwrap();
    assert!(
        count(&plain) >= 2,
        "the markup ends the system and user turns"
    );
    assert_eq!(
        count(&sneaky),
        count(&plain),
        "a response cannot end a turn"
    );
}

#[test]
fn pair_judge_refuses_a_model_without_a_chat_template() {
    let path = std::env::var_os("W2S_VOCABS")
        .map_or_else(
            || {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/w2s/vocabs")
            },
            std::path::PathBuf::from,
        )
        .join("random-tiny-llama-spm.gguf");
    assert!(path.exists(), "run scripts/fetch-vocabs");
    let _g = serial();
    let m = Model::load(&path, LoadOptions::default()).unwrap();
    let e = PairJudge::new(m, 1).err().expect("refused");
    assert_eq!(e.kind(), ErrorKind::Input);
    assert!(e.to_string().contains("no chat template"), "{e}");
}
