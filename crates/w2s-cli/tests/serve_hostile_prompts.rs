//! `w2s serve` against prompts that cost too much, SmolLM2 in every role on loopback: a
//! long prompt whose client leaves, prompts over the token cap and their admission cost,
//! memory after a long request, server paths in errors, a long prompt past the watchdog.
//! Each attack at the suite's size or, with `W2S_ATTACKS=full` (`scripts/bench-attacks`),
//! at full size: see `support/hostile.rs`. Hostile connections: `serve_hostile.rs`.

#![allow(clippy::await_holding_lock)]

#[allow(dead_code)] // shared with the other server tests
mod support;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::hostile::{figure, full, health_polls, long_prompt, normal, poll_health, size, smol};
use support::server::{client, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_cancelled_when_its_client_leaves_and_health_stays_ok() {
    let _g = serial();
    // About 3,000 (8,100) tokens in each of the three models: tens of seconds of prompt
    // work (minutes), left by its client after 2 (5) s.
    let (words, cap, patience) = size((3000, "4096", 2), (8100, "9000", 5));
    let s = smol(&["--watchdog-secs", "10", "--max-prompt-tokens", cap]);
    let c = client(Duration::from_secs(120));
    let t = Instant::now();
    assert_eq!(s.complete(&c, &normal()).await, 200);
    let alone = t.elapsed();
    let long = json!({"model": "w2s", "prompt": long_prompt(words), "max_tokens": 4, "search": {"method": "sample"}});
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_health(&s, stop.clone());
    let gone = client(Duration::from_secs(patience))
        .post(s.url("/v1/completions"))
        .json(&long)
        .send()
        .await;
    assert!(
        gone.is_err(),
        "the long prompt finished within {patience} s"
    );
    let left = Instant::now();
    // The client's socket closes as its request is dropped; the server frees the queue
    // share when it reads the close, which it counts.
    let noticed = loop {
        let m = c.get(s.url("/metrics")).send().await.unwrap();
        assert_eq!(m.status(), 200);
        if m.text().await.unwrap().contains("w2s_disconnects_total 1") {
            break left.elapsed();
        }
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "the server did not notice the client leave within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let health = c.get(s.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "{:?}", health.text().await);
    assert_eq!(s.complete(&c, &normal()).await, 200);
    let next = left.elapsed();
    assert!(
        next < alone + Duration::from_secs(4),
        "the next request took {next:?} after the long prompt's client left ({alone:?} alone)"
    );
    let (polls, worst) = health_polls(stop, poller);
    figure(format!(
        "long prompt: {words} tokens (--max-prompt-tokens {cap}), client timeout {patience} s: the leave noticed after {:.3} s; the next request ({:.2} s alone) answered 200 {:.2} s after the client left; /health polled {polls} times meanwhile, all 200, worst {worst:.2} s",
        noticed.as_secs_f64(),
        alone.as_secs_f64(),
        next.as_secs_f64(),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_over_the_token_cap_are_refused_and_cost_admission() {
    let _g = serial();
    // The cap (100 in the suite, the default 4096 at full size), and admission that
    // charges prompt tokens: in a queue of 200, a 4-token sample with a 250-token prompt
    // (in three models) runs only alone.
    let (cap, words) = size((Some("100"), 150), (None, 8100));
    let mut flags = vec!["--queue-capacity", "200"];
    if let Some(cap) = cap {
        flags.extend(["--max-prompt-tokens", cap]);
    }
    let s = smol(&flags);
    let c = client(Duration::from_secs(120));
    let body = |p: String| json!({"model": "w2s", "prompt": p, "max_tokens": 4, "search": {"method": "sample"}});
    let t = Instant::now();
    let r = c
        .post(s.url("/v1/completions"))
        .json(&body(long_prompt(words)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let took = t.elapsed().as_secs_f64();
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&format!("at most {} tokens", cap.unwrap_or("4096"))),
        "{m}"
    );
    figure(format!(
        "long prompt: {words} tokens over the cap of {}: 400 in {took:.2} s",
        cap.unwrap_or("4096 (the default)")
    ));
    let r = c
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "tuned", "prompt": long_prompt(words), "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let ok = c
        .post(s.url("/v1/completions"))
        .json(&body("The film".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    drop(s);
    let s = smol(&["--max-prompt-tokens", "1000", "--queue-capacity", "200"]);
    // A slow short request holds part of the queue; meanwhile the long prompt gets 429.
    let slow = json!({"model": "w2s", "prompt": "The film", "max_tokens": 40, "search": {"method": "bon", "n": 4}});
    let (c2, url) = (c.clone(), s.url("/v1/completions"));
    let running =
        tokio::spawn(async move { c2.post(url).json(&slow).send().await.unwrap().status() });
    let t = Instant::now();
    while s.metric(&c, "w2s_in_flight_searches").await < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.complete(&c, &body(long_prompt(80))).await,
        429,
        "a prompt of 3 x 80 tokens + 4 must wait for an empty queue of 200"
    );
    assert_eq!(running.await.unwrap(), 200);
    assert_eq!(
        s.complete(&c, &body(long_prompt(80))).await,
        200,
        "alone, it runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_its_level_after_a_long_prompt() {
    let _g = serial();
    // A CBS request with a 2,000-token prompt (4,000 at full size, then a 7,000-token
    // echo of the prompt's log-probabilities).
    let words = size(2000, 4000);
    let s = smol(size(
        &["--keep-context-tokens", "512"][..],
        &[
            "--keep-context-tokens",
            "512",
            "--max-prompt-tokens",
            "9000",
        ],
    ));
    let c = client(Duration::from_secs(600));
    let normal = json!({"model": "w2s", "prompt": "The film", "max_tokens": 8});
    for _ in 0..2 {
        assert_eq!(s.complete(&c, &normal).await, 200);
    }
    let (before, _) = s.memory_kb();
    let long = json!({"model": "w2s", "prompt": long_prompt(words), "max_tokens": 4, "search": {"method": "cbs", "w": 2, "k": 2, "l": 2}});
    let t = Instant::now();
    assert_eq!(s.complete(&c, &long).await, 200);
    let took = t.elapsed().as_secs_f64();
    assert_eq!(s.complete(&c, &normal).await, 200);
    let (after, peak) = s.memory_kb();
    assert!(
        peak > before + 40_000,
        "the long prompt did not grow memory (peak {peak} kB, before {before} kB)"
    );
    assert!(
        (after as f64) < before as f64 * 1.2,
        "RSS {after} kB after the long prompt, {before} kB before"
    );
    let mb = |kb: u64| kb as f64 / 1024.0;
    let mut line = format!(
        "memory: RSS {:.0} MB before a {words}-token CBS request (200, {took:.1} s), peak {:.0} MB, {:.0} MB after ({:.2}x)",
        mb(before),
        mb(peak),
        mb(after),
        after as f64 / before as f64
    );
    if full() {
        let echo = json!({"model": "tuned", "prompt": long_prompt(7000), "max_tokens": 0, "echo": true, "logprobs": 0});
        let t = Instant::now();
        assert_eq!(s.complete(&c, &echo).await, 200);
        let took = t.elapsed().as_secs_f64();
        let (after, peak) = s.memory_kb();
        assert!(
            (after as f64) < before as f64 * 1.2,
            "RSS {after} kB after the echo, {before} kB before"
        );
        line += &format!(
            "; a 7,000-token echo (200, {took:.1} s): peak {:.0} MB, {:.0} MB after ({:.2}x)",
            mb(peak),
            mb(after),
            after as f64 / before as f64
        );
    }
    figure(line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_to_clients_name_no_server_paths_or_flags() {
    let _g = serial();
    let s = smol(&["--max-prompt-tokens", "20000"]);
    let c = client(Duration::from_secs(120));
    for body in [
        json!({"model": "tuned", "prompt": long_prompt(9000), "max_tokens": 4}),
        json!({"model": "w2s", "prompt": long_prompt(9000), "max_tokens": 4}),
    ] {
        let (status, v) = s.post(&c, "/v1/completions", &body).await;
        assert_eq!(status, 400);
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("max_tokens 4"), "{m}");
        assert!(m.contains("model"), "{m}");
        assert!(
            !m.contains(".gguf") && !m.contains('/') && !m.contains("--"),
            "{m}"
        );
        figure(format!(
            "errors: a 9,000-token request to model {} answers 400: {m}",
            body["model"]
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_ok_while_a_long_prompt_runs_past_the_watchdog() {
    let _g = serial();
    // Each prompt micro-batch is progress: a job longer than the watchdog that keeps
    // working is busy, not stalled.
    let s = smol(&["--watchdog-secs", "3"]);
    let c = client(Duration::from_secs(300));
    let long = json!({"model": "w2s", "prompt": long_prompt(2500), "max_tokens": 4, "search": {"method": "sample"}});
    let (c2, url) = (c.clone(), s.url("/v1/completions"));
    let started = Instant::now();
    let job = tokio::spawn(async move { c2.post(url).json(&long).send().await.unwrap().status() });
    let mut polls = 0;
    while !job.is_finished() {
        let h = c.get(s.url("/health")).send().await.unwrap();
        let status = h.status();
        assert_eq!(
            status,
            200,
            "{:?} after {:?}",
            h.text().await,
            started.elapsed()
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(job.await.unwrap(), 200);
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(4),
        "the prompt took only {took:?}: not past the watchdog"
    );
    figure(format!(
        "watchdog: a 2,500-token prompt past --watchdog-secs 3: {polls} /health polls, all 200, over {:.1} s",
        took.as_secs_f64()
    ));
}
