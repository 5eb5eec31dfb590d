//! `w2s serve --parallel N` with the strong model on a remote engine (another `w2s serve`
//! serving gemma-3-270m plainly): searches in flight together, seeded text that does not
//! depend on what else runs, a client that leaves freeing its slot and its engine
//! requests, and bad flags.

#![allow(clippy::await_holding_lock)]

#[allow(dead_code)] // shared with the other server tests
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::server::{client, config_path, serial, Server};

/// The engine (all local, one search or plain request at a time) and a front whose
/// strong model is the engine's `strong`, with `parallel` searches in flight.
fn engine_and_front(parallel: &str) -> (Server, Server) {
    let engine = Server::start(&[], &[]);
    let strong = format!("{}/v1#strong", engine.base);
    let front = Server::start(&["--strong", &strong, "--parallel", parallel], &[]);
    (engine, front)
}

fn request(seed: u64, max_tokens: usize) -> Value {
    json!({"model": "w2s", "prompt": "I rented this movie last weekend and", "max_tokens": max_tokens,
           "seed": seed, "search": {"method": "cbs", "w": 2, "k": 2, "l": 4}})
}

async fn text(c: &reqwest::Client, s: &Server, body: &Value) -> String {
    let r = c
        .post(s.url("/v1/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_overlap_over_a_remote_strong_model_and_seeded_text_repeats() {
    let _g = serial();
    let (_engine, front) = engine_and_front("4");
    let c = client(Duration::from_secs(600));
    let alone = text(&c, &front, &request(7, 12)).await;
    let other = text(&c, &front, &request(8, 12)).await;
    // Four copies of one seeded request and two others, all at once.
    let started = Instant::now();
    let bodies: Vec<Value> = [7, 8, 7, 7, 8, 7].iter().map(|&s| request(s, 12)).collect();
    let (c2, f2) = (c.clone(), &front);
    let all = futures_util::future::join_all(bodies.iter().map(|b| text(&c2, f2, b)));
    let watch = async {
        let mut most = 0.0f64;
        while started.elapsed() < Duration::from_secs(300) {
            most = most.max(front.metric(&c, "w2s_in_flight_searches").await);
            if most >= 4.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most
    };
    let (texts, most) = tokio::join!(all, watch);
    for (i, t) in texts.iter().enumerate() {
        let want = if [1, 4].contains(&i) { &other } else { &alone };
        assert_eq!(
            t, want,
            "request {i} gave other text when run next to others"
        );
    }
    assert!(
        most >= 2.0,
        "at most {most} searches were in flight at once"
    );
    // The strong model's log-probabilities of the returned text, echoed by the engine.
    let mut with_lp = request(7, 12);
    with_lp["logprobs"] = json!(0);
    let r = c
        .post(front.url("/v1/completions"))
        .json(&with_lp)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let lp = &v["choices"][0]["logprobs"];
    let toks: String = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(toks, alone, "{v}");
    assert!(lp["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x.as_f64().unwrap() <= 0.0));
    eprintln!(
        "in flight at most: {most}; 6 requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_leaves_frees_its_slot_and_its_engine_requests_stop() {
    let _g = serial();
    let (engine, front) = engine_and_front("2");
    let c = client(Duration::from_secs(600));
    let impatient = client(Duration::from_millis(2500));
    let long = json!({"model": "w2s", "prompt": "I rented this movie last weekend and", "max_tokens": 400,
                      "seed": 1, "search": {"method": "cbs", "w": 4, "k": 4, "l": 5}});
    let gone = impatient
        .post(front.url("/v1/completions"))
        .json(&long)
        .send()
        .await;
    assert!(gone.is_err(), "the long search finished within 2.5 s");
    let left = Instant::now();
    while front.metric(&c, "w2s_in_flight_searches").await > 0.0 {
        assert!(
            left.elapsed() < Duration::from_secs(10),
            "the search ran on after its client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let freed = left.elapsed();
    let before = engine.metric_total(&c, "w2s_requests_total").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = engine.metric_total(&c, "w2s_requests_total").await;
    assert_eq!(
        before, after,
        "the engine still got requests after the search stopped"
    );
    assert_eq!(front.metric(&c, "w2s_disconnects_total").await, 1.0);
    // The slot is free: the next request is served at once.
    let t = text(&c, &front, &request(3, 8)).await;
    assert!(!t.is_empty());
    eprintln!(
        "slot freed {:.2} s after the client left",
        freed.as_secs_f64()
    );
}

#[test]
fn parallel_flags_out_of_range_exit_2_with_the_reason() {
    for (n, needle) in [
        ("0", "--parallel must be at least 1"),
        ("65", "more than 64"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_w2s"))
            .args([
                "serve",
                "--config",
                &config_path(),
                "--port",
                "0",
                "--parallel",
                n,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_searches_in_flight_together_give_the_text_they_give_alone() {
    let _g = serial();
    // Each worker has contexts of its own, so a search's batches never mix with
    // another's: the numbers, and so the text, are those of the search run alone.
    let s = Server::start(&["--parallel", "3"], &[]);
    let c = client(Duration::from_secs(600));
    let alone = [
        text(&c, &s, &request(21, 8)).await,
        text(&c, &s, &request(22, 8)).await,
    ];
    let bodies: Vec<Value> = [21, 22, 21, 22, 21, 22]
        .iter()
        .map(|&n| request(n, 8))
        .collect();
    let together = futures_util::future::join_all(bodies.iter().map(|b| text(&c, &s, b))).await;
    for (i, t) in together.iter().enumerate() {
        assert_eq!(t, &alone[i % 2], "request {i}");
    }
}
