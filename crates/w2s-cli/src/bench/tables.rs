//! The markdown tables `w2s bench` prints without `--json`.

use super::BenchReport;

pub(super) fn print_tables(r: &BenchReport) {
    println!(
        "strong model {}; threads {}, {} new tokens, {} prompt(s) x {} repeat(s); local model files {:.0} MB; raw = {}",
        r.strong, r.threads, r.max_new_tokens, r.prompts, r.repeats, r.models_mb, r.raw_baseline
    );
    println!();
    println!("| method | rows | wall s (median, min-max) | raw s | ratio to raw | strong / raw | strong tok/s | strong s | tuned s | untuned s | bookkeeping s | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for m in &r.methods {
        println!(
            "| {} | {} | {:.2} ({:.2}-{:.2}) | {:.2} | {:.2}x | {:.2}x | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.0} |",
            m.method, m.rows, m.wall_s_median, m.wall_s_min, m.wall_s_max, m.raw_s_median,
            m.ratio_to_raw, m.strong_ratio_to_raw, m.strong_tokens_per_s, m.strong_s, m.tuned_s,
            m.untuned_s, m.bookkeeping_s, m.peak_rss_mb
        );
    }
    println!();
    println!("| method | strong tokens | tuned tokens evaluated | untuned tokens evaluated | per strong token | re-encoding every chunk would evaluate | KV needed MB |");
    println!("|---|---|---|---|---|---|---|");
    for m in &r.methods {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
            m.method,
            m.strong_tokens,
            m.tuned_tokens_evaluated,
            m.untuned_tokens_evaluated,
            m.tuned_tokens_evaluated / m.strong_tokens.max(1.0),
            m.reencode_tokens_estimate,
            r.kv_budget_mb.get(&m.method).copied().unwrap_or(0.0)
        );
    }
    if r.methods.iter().any(|m| !m.small_split.is_empty()) {
        println!();
        println!("| method | small model | setup s | tokenize s | decode s | log-softmax s | copies s | cache s | decodes | tokens per decode |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for m in &r.methods {
            for s in &m.small_split {
                println!(
                    "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.1} |",
                    m.method,
                    s.role,
                    s.setup_s,
                    s.tokenize_s,
                    s.decode_s,
                    s.log_softmax_s,
                    s.copies_s,
                    s.cache_s,
                    s.decodes,
                    s.tokens_per_decode
                );
            }
        }
    }
    if r.methods.iter().any(|m| m.http_requests > 0.0) {
        println!();
        println!("| method | HTTP requests per search | raw HTTP requests | strong s | tuned s | untuned s | wall s |");
        println!("|---|---|---|---|---|---|---|");
        for m in &r.methods {
            println!(
                "| {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                m.method,
                m.http_requests,
                m.raw_http_requests,
                m.strong_s,
                m.tuned_s,
                m.untuned_s,
                m.wall_s_median
            );
        }
    }
    if !r.scales.is_empty() {
        println!();
        println!("| method | rows | new tokens | wall s | strong tokens | ms per strong token | strong s | guide s | peak RSS MB |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for s in &r.scales {
            println!(
                "| {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.0} |",
                s.method,
                s.rows,
                s.max_new_tokens,
                s.wall_s,
                s.strong_tokens,
                s.ms_per_strong_token,
                s.strong_s,
                s.guide_s,
                s.peak_rss_mb
            );
        }
    }
}
