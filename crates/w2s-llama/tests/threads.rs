//! [`release_cpu_threads`]: a thread that ran a forward pass with 2 CPU threads keeps a
//! helper thread (llama.cpp's OpenMP team) until it releases it, and computes as before
//! after releasing it.

#[allow(dead_code)] // shared with the tests that run whole searches
mod common;

use common::model;
use w2s_core::PromptTemplate;
use w2s_llama::{release_cpu_threads, score_once, LlamaScorer};

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn a_thread_releases_its_cpu_helpers_and_computes_the_same_after() {
    let small = model("smollm2-135m-instruct");
    // A thread of its own, as a server worker is: its team is its own.
    let (before, kept, after, values) = std::thread::spawn(move || {
        let mut scorer = LlamaScorer::new(small, PromptTemplate::bare(), 2);
        let before = threads_of_this_process();
        let first = score_once(&mut scorer, "The film was", " a delight.", true).unwrap();
        let kept = threads_of_this_process();
        release_cpu_threads();
        // The helpers leave on their own after the release: give them a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut after = threads_of_this_process();
        while after >= kept && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            after = threads_of_this_process();
        }
        let again = score_once(&mut scorer, "The film was", " a delight.", true).unwrap();
        release_cpu_threads();
        (before, kept, after, (first, again))
    })
    .join()
    .unwrap();
    assert!(
        kept > before,
        "a 2-thread pass starts a helper ({before} -> {kept})"
    );
    assert!(after < kept, "released: {kept} -> {after} threads");
    assert_eq!(values.0, values.1, "the same value with a new team");
}
