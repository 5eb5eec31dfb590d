//! The response's tokens are the response part of the joint tokenisation of prompt +
//! response, on every vocabulary-only GGUF file llama.cpp ships for its tokenizer tests
//! (`scripts/fetch-vocabs`): SentencePiece ones (Llama-2, Phi-3, Baichuan, Aquila), which
//! add a dummy-prefix space to a text tokenised alone, and BPE ones.

use std::path::PathBuf;

use w2s_core::{PromptTemplate, SamplingParams, ScoreRequest, Scorer};
use w2s_llama::{split_response, LlamaScorer, LoadOptions, Model, PlainModel};

fn vocab_dir() -> PathBuf {
    std::env::var_os("W2S_VOCABS").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/w2s/vocabs"),
        PathBuf::from,
    )
}

fn vocab_files() -> Vec<PathBuf> {
    let dir = vocab_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/fetch-vocabs", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("ggml-vocab-") && name.ends_with(".gguf")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "only {} files in {}",
        files.len(),
        dir.display()
    );
    files
}

const PROMPTS: &[&str] = &[
    "Here is a movie review from imdb: I rented this movie last weekend and",
    "Question: what is 12 + 30?\nAnswer:",
    "<|im_start|>user\nWrite a haiku.<|im_end|>\n<|im_start|>assistant\n",
    "The caf",
    "def add(a, b):\n   ",
    "Le film était",
    "日本語で",
];

const RESPONSES: &[&str] = &[
    " was great",
    "was great",
    " it",
    "\n\nThe end.",
    "'s the best",
    "é was nice",
    "   spaced out",
    " return a + b",
    "ing",
    " ☕ ok!",
    "",
];

#[test]
fn response_tokens_are_the_joint_tokenisations_on_every_vocabulary() {
    let mut checked = Vec::new();
    let mut naive_wrong = 0;
    let mut merged_cases = 0;
    for file in vocab_files() {
        let model = Model::load_vocab_only(&file).unwrap();
        let vocab = model.llama().vocab();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        // Encoder vocabularies (BERT's WordPiece, T5's Unigram) frame every text with
        // their own special tokens and are no guide model's; every other one is checked.
        let kind = model
            .llama()
            .meta_val_str("tokenizer.ggml.model")
            .unwrap_or_default();
        if kind == "bert" || kind == "t5" {
            continue;
        }
        let eos = vocab.should_add_eos().then(|| vocab.eos());
        for p in PROMPTS {
            for r in RESPONSES {
                let (prompt, merged, response) = split_response(&model, p, r);
                let mut joint = model.tokenize_prompt(&format!("{p}{r}"));
                let mut prompt = prompt;
                if let Some(eos) = eos {
                    // A vocabulary that appends EOS to every text: compare without it.
                    assert_eq!(joint.pop(), Some(eos));
                    assert_eq!(prompt.pop(), Some(eos));
                }
                let mut got = prompt[..prompt.len() - merged].to_vec();
                got.extend_from_slice(&response);
                assert_eq!(got, joint, "{name}: {p:?} + {r:?} (merged {merged})");
                merged_cases += usize::from(merged > 0);
                let mut naive = prompt.clone();
                naive.extend(model.tokenize_response(r));
                naive_wrong += usize::from(naive != joint);
            }
        }
        checked.push(name);
    }
    eprintln!(
        "checked {} vocabularies: {}; the response tokenised alone was wrong in {naive_wrong} \
         cases, a token merged across the boundary in {merged_cases}",
        checked.len(),
        checked.join(", ")
    );
    assert!(checked.len() >= 17, "{checked:?}");
    for must in [
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-phi-3.gguf",
        "ggml-vocab-qwen2.gguf",
        "ggml-vocab-gemma-4.gguf",
    ] {
        assert!(checked.iter().any(|c| c == must), "{must} not checked");
    }
    // The cases are hard enough to tell: tokenising the response alone fails some.
    assert!(naive_wrong > 0 && merged_cases > 0);
}

/// A tiny random-weight llama model around the Llama-2 SentencePiece vocabulary
/// (`scripts/fetch-vocabs` writes it): responses growing chunk by chunk, as a search hands
/// them over, are scored token for token as llama.cpp's own one-pass echo of prompt +
/// response scores them, the dummy-prefix space and a merge across the boundary included.
#[test]
fn a_sentencepiece_model_scores_the_joint_tokens_chunk_by_chunk() {
    let path = vocab_dir().join("random-tiny-llama-spm.gguf");
    assert!(
        path.exists(),
        "{}: run scripts/fetch-vocabs",
        path.display()
    );
    let model = Model::load(&path, LoadOptions::default()).unwrap();
    let prompt = "Here is a movie review from imdb: I rented this movie last weekend with my bro";
    let mut scorer = LlamaScorer::new(model.clone(), PromptTemplate::bare(), 2);
    // Row 0 starts with a space; row 1 continues the prompt's last word ("bro" + "ther").
    // Row 2's merge changes between chunks ("bro" + "a" merges other pieces than "bro" +
    // "ad"), so the row's sequence is rebuilt from the prompt token before the merge.
    let chunks: [&[&str]; 3] = [
        &[" and", " it was", " a treat", " for", " us!"],
        &["ther", " and", " his friends", "; the film", " was long."],
        &["a", "d", "way", " shows", " are fun."],
    ];
    scorer.begin(prompt, 3, 64).unwrap();
    let mut texts = [String::new(), String::new(), String::new()];
    for step in 0..5 {
        let ended = step == 4;
        for (row, c) in chunks.iter().enumerate() {
            texts[row].push_str(c[step]);
        }
        let requests: Vec<ScoreRequest<'_>> = texts
            .iter()
            .enumerate()
            .map(|(row, text)| ScoreRequest {
                row,
                text,
                ended: ended && row == 0,
            })
            .collect();
        scorer.score(&requests).unwrap();
    }
    let mut plain = PlainModel::new(model.clone(), 2);
    let greedy = SamplingParams::new(0.0, 0, 1.0).unwrap();
    let merges: Vec<usize> = ["a", "ad", "adway"]
        .iter()
        .map(|t| split_response(&model, prompt, t).1)
        .collect();
    assert!(
        merges.windows(2).any(|w| w[0] != w[1]),
        "row 2's merge never changes: {merges:?}"
    );
    let mut merged_seen = false;
    for (row, text) in texts.iter().enumerate() {
        let ended = row == 0;
        let joint = format!("{prompt}{text}{}", if ended { "</s>" } else { "" });
        let (_, echoed) = plain.echo(&joint, 0, &greedy, 1).unwrap();
        let got = scorer.row_tokens(row);
        // The echoed tokens that spell the response (a token that also holds the prompt's
        // last characters included), and the end token.
        let need = text.chars().count();
        let mut have = 0;
        let mut n = usize::from(ended);
        while have < need {
            have += echoed[echoed.len() - 1 - n].text.chars().count();
            n += 1;
        }
        merged_seen |= have > need;
        let want = &echoed[echoed.len() - n..];
        assert_eq!(got.len(), want.len(), "row {row}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            let lp = w.logprob.unwrap();
            assert!((g.1 - lp).abs() < 1e-3, "row {row}: {g:?} vs {w:?}");
        }
    }
    assert!(merged_seen, "no case merged a token across the boundary");
    // Tokenised alone, row 0's response would start with a dummy-prefix piece.
    let alone = model.tokenize_response(&texts[0]);
    let (_, merged, joint) = split_response(&model, prompt, &texts[0]);
    assert_eq!(merged, 0);
    assert_ne!(alone, joint);
}
