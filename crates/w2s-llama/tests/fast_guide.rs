//! A guide file whose weight type has no fast CPU kernel is scored through a Q8_0 copy made
//! once: the copy is reused, other types are left alone, a cache that cannot be written
//! falls back to the file, and the copy's log-probabilities stay close to the file's.

use std::path::PathBuf;

use w2s_core::PromptTemplate;
use w2s_llama::{
    fast_guide, requantize, resolve_model, score_once, slow_weight_type, LlamaScorer, LoadOptions,
    Model, WeightType,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2s-fast-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const POSITIVE: &str = "chat:Write a very positive movie review.||{prompt}";
const PROMPT: &str = "I rented this movie last weekend and";
const TEXTS: [&str; 6] = [
    " it was a delight from start to finish.",
    " I regret every minute of it.",
    " the acting was fine but the plot dragged.",
    " my kids loved the songs",
    " honestly, I fell asleep halfway through. The ending made no sense at all.",
    " what a wonderful surprise!",
];

#[test]
fn a_q4_1_guide_is_scored_through_one_q8_0_copy_close_to_the_file() {
    let smol = resolve_model("smollm2-135m-instruct");
    let gemma = resolve_model("gemma-3-270m");
    assert!(
        smol.is_file() && gemma.is_file(),
        "run scripts/fetch-models"
    );
    assert_eq!(slow_weight_type(&smol), Some("Q4_1"));
    assert_eq!(slow_weight_type(&gemma), None);

    let cache = scratch("copy");
    let copy = fast_guide(&smol, &cache, 2);
    assert!(
        copy.starts_with(&cache) && copy.is_file(),
        "{}",
        copy.display()
    );
    assert_eq!(slow_weight_type(&copy), None, "the copy has a fast type");
    let made = std::fs::metadata(&copy).unwrap().modified().unwrap();
    // Made once: the second call finds it.
    assert_eq!(fast_guide(&smol, &cache, 2), copy);
    assert_eq!(std::fs::metadata(&copy).unwrap().modified().unwrap(), made);
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "no partial file left"
    );
    // Other types are used as they are, and nothing is written for them.
    assert_eq!(fast_guide(&gemma, &cache, 2), gemma);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    // The copy's log-probabilities and guide values (a positive-review prompt against the
    // bare one) next to an F16 copy's, whose weights equal the file's to 1 part in 2,000:
    // llama.cpp's arithmetic differs by weight type, the weights barely do.
    let f16 = cache.join("f16.gguf");
    requantize(&smol, &f16, WeightType::F16, 2).unwrap();
    let score = |path: &PathBuf, template: &str| -> Vec<f64> {
        let model = Model::load(path, LoadOptions::default()).unwrap();
        let mut s = LlamaScorer::new(model, PromptTemplate::new(template).unwrap(), 2);
        TEXTS
            .iter()
            .map(|t| score_once(&mut s, PROMPT, t, true).unwrap())
            .collect()
    };
    let guide = |path: &PathBuf| -> (Vec<f64>, Vec<f64>) {
        let (t, u) = (score(path, POSITIVE), score(path, "{prompt}"));
        let value = t.iter().zip(&u).map(|(a, b)| a - b).collect();
        (u, value)
    };
    let tokens: usize = {
        let m = Model::load(&smol, LoadOptions::default()).unwrap();
        TEXTS.iter().map(|t| m.tokenize_response(t).len() + 1).sum()
    };
    let mean_gap = |a: &[f64], b: &[f64]| -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
    };
    let (file, q8, f16) = (guide(&smol), guide(&copy), guide(&f16));
    let per_token = |other: &(Vec<f64>, Vec<f64>)| {
        mean_gap(&file.0, &other.0) * TEXTS.len() as f64 / tokens as f64
    };
    eprintln!(
        "against the Q4_1 file, {} responses ({tokens} tokens): log-probability per token: \
         Q8_0 copy {:.4}, F16 copy {:.4} nats; guide value per response: Q8_0 {:.3}, F16 \
         {:.3} nats (file's values {:.2?})",
        TEXTS.len(),
        per_token(&q8),
        per_token(&f16),
        mean_gap(&file.1, &q8.1),
        mean_gap(&file.1, &f16.1),
        file.1
    );
    assert!(per_token(&q8) < 0.15, "{:?} vs {:?}", file.0, q8.0);
    assert!(mean_gap(&file.1, &q8.1) < 1.0, "{:?} vs {:?}", file.1, q8.1);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_cache_that_cannot_be_written_leaves_the_guide_file_as_it_is() {
    let smol = resolve_model("smollm2-135m-instruct");
    assert!(
        smol.is_file(),
        "run scripts/fetch-models smollm2-135m-instruct"
    );
    let dir = scratch("blocked");
    std::fs::create_dir_all(&dir).unwrap();
    // A file where the cache folder would be: the folder cannot be made.
    let blocked = dir.join("not-a-folder");
    std::fs::write(&blocked, b"x").unwrap();
    assert_eq!(fast_guide(&smol, &blocked.join("fast"), 2), smol);
    let _ = std::fs::remove_dir_all(&dir);
}
