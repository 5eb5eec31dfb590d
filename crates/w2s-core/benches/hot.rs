//! The pure-Rust hot paths of a search step: sampling from a large vocabulary, top-W
//! selection, text hand-over at chunk edges, template filling.
//! Run: `cargo bench -p w2s-core` (figures printed; no timed assertions).

use divan::{black_box, Bencher};
use w2s_core::sampling::{log_sum_exp, sample_token};
use w2s_core::text::{find_stop, stop_prefix_len, stop_search_start, Utf8Accumulator};
use w2s_core::{rank, PromptTemplate, RowRng, SamplingParams};

fn main() {
    divan::main();
}

fn logits(n: usize) -> Vec<f32> {
    let mut rng = RowRng::new(1, 0);
    (0..n)
        .map(|_| (rng.next_f64() * 20.0 - 10.0) as f32)
        .collect()
}

/// One token from a gemma-sized (262,144) or SmolLM2-sized (49,152) vocabulary with the
/// paper's sampler (temperature 0.7, top-k 50, top-p 1.0).
#[divan::bench(args = [49_152, 262_144])]
fn sample_top_k(bencher: Bencher, vocab: usize) {
    let l = logits(vocab);
    let p = SamplingParams::default();
    let mut rng = RowRng::new(2, 0);
    bencher.bench_local(|| sample_token(black_box(&l), &p, &mut rng));
}

/// The normaliser of one scored token's log-probability (vectorised), against the plain
/// f64 loop it replaced.
#[divan::bench(args = [49_152, 151_936])]
fn normaliser(bencher: Bencher, vocab: usize) {
    let l = logits(vocab);
    bencher.bench_local(|| log_sum_exp(black_box(&l)));
}

#[divan::bench(args = [49_152, 151_936])]
fn normaliser_f64_loop(bencher: Bencher, vocab: usize) {
    let l = logits(vocab);
    bencher.bench_local(|| {
        let l = black_box(&l);
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        max + l.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
    });
}

/// Nucleus sampling over the whole vocabulary (top-k off, top-p 0.9): the slow path.
#[divan::bench(args = [49_152])]
fn sample_top_p_full_vocab(bencher: Bencher, vocab: usize) {
    let l = logits(vocab);
    let p = SamplingParams::new(0.7, 0, 0.9).unwrap();
    let mut rng = RowRng::new(3, 0);
    bencher.bench_local(|| sample_token(black_box(&l), &p, &mut rng));
}

/// Ranking the pool (W*K rows) for top-W selection.
#[divan::bench(args = [16, 64, 1024])]
fn rank_pool(bencher: Bencher, rows: usize) {
    let scores: Vec<f64> = logits(rows).into_iter().map(f64::from).collect();
    bencher.bench_local(|| rank(black_box(&scores)));
}

/// Releasing 5 tokens' bytes of mixed ASCII and multi-byte text, one token at a time,
/// and checking two stop strings, as a chunk edge does.
#[divan::bench]
fn chunk_edge_text(bencher: Bencher) {
    let pieces: Vec<&[u8]> = vec![
        b" the",
        b" caf",
        "\u{e9}".as_bytes(),
        &[0xF0, 0x9F],
        &[0x8D, 0xA3],
    ];
    let stops = vec!["\n\n".to_string(), "THE END".to_string()];
    bencher.bench_local(|| {
        let mut acc = Utf8Accumulator::new();
        let mut text = String::with_capacity(64);
        for p in &pieces {
            let s = acc.push(black_box(p));
            text.push_str(&s);
            let from = stop_search_start(text.len(), s.len(), &stops);
            black_box(find_stop(&text, &stops, from));
        }
        black_box(stop_prefix_len(&text, &stops))
    });
}

/// Filling a chat template with a prompt.
#[divan::bench]
fn template_fill(bencher: Bencher) {
    let t = PromptTemplate::new("chat:Write a very positive movie review.||{prompt}").unwrap();
    bencher.bench_local(|| t.fill(black_box("I rented this movie last weekend and")));
}
