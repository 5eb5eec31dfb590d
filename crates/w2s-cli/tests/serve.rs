//! `w2s serve` as a real process on loopback, with real clients: the official openai
//! Python SDK, bad bodies, load, disconnects, shutdown, determinism, keys.

// Each test holds a process-wide lock for its whole run (its own runtime, its own server)
// so that two model servers never share the 2 cores; the lock is never contended inside
// one runtime.
#![allow(clippy::await_holding_lock)]

#[allow(dead_code)] // shared with the other server tests
mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::bad_bodies::bad_body;
use support::server::{run_python, serial, Server};
use w2s_core::RowRng;

fn client() -> reqwest::Client {
    support::server::client(Duration::from_secs(1200))
}

#[test]
fn the_official_openai_python_sdk_works_against_the_server() {
    let _g = serial();
    let server = Server::start(&[], &[]);
    run_python("openai_client.py", &server, "all checks passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_bad_bodies_all_get_4xx_with_small_openai_errors() {
    let _g = serial();
    let server = Server::start(&[], &[]);
    let c = client();
    let mut rng = RowRng::new(2024, 0);
    let mut statuses = std::collections::BTreeMap::new();
    let mut bodies: Vec<(Vec<u8>, &str)> = Vec::new();
    for i in 0..4990 {
        bodies.push((
            bad_body(i, &mut rng),
            if i % 3 == 0 || i % 14 == 11 {
                "/v1/chat/completions"
            } else {
                "/v1/completions"
            },
        ));
    }
    // Bodies over the 2 MB limit, and a 3 MB one.
    for size in [
        2 * 1024 * 1024 + 1,
        3 * 1024 * 1024,
        2_500_000,
        4_000_000,
        3 * 1024 * 1024 + 7,
    ] {
        let mut b = br#"{"model": "w2s", "prompt": ""#.to_vec();
        b.extend(std::iter::repeat_n(b'a', size));
        b.extend(br#""}"#);
        bodies.push((b, "/v1/completions"));
    }
    // Multi-byte text cut at every byte of a 4-byte character near the size limit.
    for cut in 0..5 {
        let mut b = br#"{"model": "w2s", "prompt": ""#.to_vec();
        b.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024 - 40));
        b.extend(&"😀".as_bytes()[..cut.min(4)]);
        bodies.push((b, "/v1/completions"));
    }
    assert_eq!(bodies.len(), 5000);
    let started = Instant::now();
    for (body, path) in bodies {
        let resp = c
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.bytes().await.unwrap();
        assert!(
            (400..500).contains(&status),
            "status {status} for {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        assert!(text.len() < 4096, "error body of {} bytes", text.len());
        let v: Value = serde_json::from_slice(&text).unwrap();
        let e = &v["error"];
        assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
        assert!(
            !e["message"].as_str().unwrap().contains("/root")
                && !e["message"].as_str().unwrap().contains(".gguf"),
            "{v}"
        );
        *statuses.entry(status).or_insert(0) += 1;
    }
    eprintln!(
        "5000 bad bodies in {:.1} s: {statuses:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(statuses.get(&413).copied().unwrap_or(0) >= 5);
    assert_eq!(
        server.metric(&c, "w2s_strong_tokens_total").await,
        0.0,
        "no bad body reached the models"
    );
    // Still healthy and serving.
    let ok = c.post(server.url("/v1/completions")).json(&json!({"model": "w2s", "prompt": "This movie", "max_tokens": 3, "search": {"method": "sample"}})).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_beyond_the_queue_cap_gets_only_200_and_429_and_the_queue_drains() {
    let _g = serial();
    // Each request costs 1 row x 4 tokens; the cap admits 3 at a time.
    let server = Server::start(&["--queue-capacity", "12"], &[]);
    let c = client();
    let body = json!({"model": "w2s", "prompt": "The film", "max_tokens": 4, "search": {"method": "sample"}});
    let mut tasks = Vec::new();
    for client_id in 0..64 {
        let (c, url, body) = (c.clone(), server.url("/v1/completions"), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let r = c.post(&url).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                if status == 429 {
                    assert!(
                        r.headers().get("retry-after").is_some(),
                        "429 without Retry-After"
                    );
                }
                let _ = r.bytes().await;
                out.push((status, t.elapsed().as_secs_f64()));
            }
            let _ = client_id;
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let ok: Vec<f64> = all
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, t)| *t)
        .collect();
    let rejected = all.iter().filter(|(s, _)| *s == 429).count();
    assert!(
        all.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{:?}",
        all.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    assert!(
        !ok.is_empty() && rejected > 0,
        "{} ok, {rejected} rejected",
        ok.len()
    );
    let mut lat: Vec<f64> = all.iter().map(|(_, t)| *t).collect();
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    eprintln!(
        "load: {} ok, {rejected} rejected (429); latency p50 {:.3} s, p99 {:.3} s",
        ok.len(),
        p(0.5),
        p(0.99)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q = server.metric(&c, "w2s_queue_depth").await;
        let f = server.metric(&c, "w2s_in_flight_searches").await;
        if q == 0.0 && f == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue did not drain: depth {q}, in flight {f}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_cancel_their_searches_and_later_requests_are_served() {
    let _g = serial();
    let server = Server::start(&[], &[]);
    let c = client();
    let body = json!({"model": "w2s", "prompt": "I rented this movie last weekend and", "max_tokens": 200,
                      "stream": true, "search": {"method": "cbs", "w": 1, "k": 2, "l": 3}});
    for _ in 0..20 {
        let resp = c
            .post(server.url("/v1/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut events = resp.bytes_stream();
        // Skip keep-alive comments (a loaded machine may be slow to the first chunk).
        loop {
            let piece = events.next().await.unwrap().unwrap();
            let text = String::from_utf8_lossy(&piece).to_string();
            if text.contains("data: ") {
                break;
            }
            assert!(text.trim_start().starts_with(':'), "{text:?}");
        }
        drop(events); // the client goes away after its first event
    }
    // Each cancelled search stops at its next chunk (3 tokens, ~0.1 s here); the bound
    // leaves room for a loaded machine.
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(10);
    loop {
        let f = server.metric(&c, "w2s_in_flight_searches").await;
        let r = server.metric(&c, "w2s_in_flight_requests").await;
        if f == 0.0 && r == 0.0 {
            eprintln!(
                "in-flight gauges back to 0 {:.3} s after the last drop",
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in flight: {f} searches, {r} requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.metric(&c, "w2s_disconnects_total").await >= 20.0);
    // 20 searches of up to 200 tokens were cancelled early: far fewer strong tokens ran.
    assert!(server.metric(&c, "w2s_strong_tokens_total").await < 20.0 * 2.0 * 200.0 / 4.0);
    let ok = c
        .post(server.url("/v1/completions"))
        .json(&json!({"model": "w2s", "prompt": "This movie", "max_tokens": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_seeded_requests_return_identical_text() {
    let _g = serial();
    let server = Server::start(&[], &[]);
    let c = client();
    let body = json!({"model": "w2s", "prompt": "My wife dragged me to see this and", "max_tokens": 10, "seed": 42,
                      "search": {"method": "cbs", "w": 2, "k": 2, "l": 5}});
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, url, body) = (c.clone(), server.url("/v1/completions"), body.clone());
            tokio::spawn(async move {
                c.post(&url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut texts = Vec::new();
    for t in tasks {
        let v = t.await.unwrap();
        assert!(
            v["w2s"].get("trace").is_none(),
            "a trace only when asked for"
        );
        texts.push(v["choices"][0]["text"].as_str().unwrap().to_string());
    }
    assert!(
        texts.iter().all(|t| t == &texts[0]) && !texts[0].is_empty(),
        "{texts:?}"
    );
    // The same search traced (opt-in): the same text, and every step of it.
    let mut traced = body.clone();
    traced["search"]["trace"] = json!(true);
    let (status, v) = post_json(&c, server.url("/v1/completions"), &traced).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], texts[0].as_str());
    let steps = v["w2s"]["trace"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "10 tokens in chunks of 5: {v}");
    for step in steps {
        let rows = step["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows.iter().filter(|r| r["kept"] == true).count(), 2);
    }
    let bad = json!({"model": "w2s", "prompt": "Hi", "max_tokens": 4, "search": {"trace": "yes"}});
    assert_eq!(
        post_json(&c, server.url("/v1/completions"), &bad).await.0,
        400
    );
    let streamed = json!({"model": "w2s", "prompt": "Hi", "max_tokens": 4, "stream": true,
                          "search": {"trace": true}});
    let (status, v) = post_json(&c, server.url("/v1/completions"), &streamed).await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not streamed"),
        "{v}"
    );
}

/// POSTs `body` as JSON: (status, JSON reply).
async fn post_json(c: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits() {
    let _g = serial();
    // A generous drain timeout: on a loaded machine the two searches may take a while.
    let mut server = Server::start(&["--shutdown-timeout-secs", "300"], &[]);
    let c = client();
    let body = json!({"model": "w2s", "prompt": "The first thing you notice about this film is", "max_tokens": 10,
                      "search": {"method": "cbs", "w": 2, "k": 2, "l": 5}});
    let inflight: Vec<_> = (0..2)
        .map(|_| {
            let (c, url, body) = (c.clone(), server.url("/v1/completions"), body.clone());
            tokio::spawn(async move {
                c.post(&url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    // Wait until both are admitted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric(&c, "w2s_in_flight_requests").await < 2.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = server.child.id();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = c
        .post(server.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 503);
    assert!(late.headers().get("retry-after").is_some());
    for t in inflight {
        assert_eq!(t.await.unwrap(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_route_but_health() {
    let _g = serial();
    let server = Server::start(
        &["--api-key-env", "W2S_TEST_KEY"],
        &[("W2S_TEST_KEY", "s3cret-key")],
    );
    let c = client();
    assert_eq!(
        c.get(server.url("/health")).send().await.unwrap().status(),
        200
    );
    for key in [None, Some("wrong"), Some("s3cret-ke"), Some("s3cret-key-")] {
        let mut r = c.get(server.url("/v1/models"));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{key:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
    let ok = c
        .get(server.url("/v1/models"))
        .bearer_auth("s3cret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let metrics = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_loaded_model_is_served_plainly_for_remote_sampling_and_scoring() {
    let _g = serial();
    let server = Server::start(&[], &[]);
    let c = client();
    let models: Value = c
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["w2s", "strong", "tuned", "untuned"]);

    // Echo with log-probabilities (what a remote scorer asks for).
    let (prompt, response) = ("Hello there,", " how are you today?");
    let v: Value = c
        .post(server.url("/v1/completions"))
        .json(&json!({"model": "untuned", "prompt": format!("{prompt}{response}"), "echo": true, "logprobs": 0, "max_tokens": 1, "temperature": 0}))
        .send().await.unwrap().json().await.unwrap();
    let lp = &v["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let offsets: Vec<usize> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap() as usize)
        .collect();
    let lps = lp["token_logprobs"].as_array().unwrap();
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(tokens.concat(), text);
    assert!(text.starts_with(&format!("{prompt}{response}")));
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(&text[offsets[i]..offsets[i] + t.len()], *t);
    }
    assert!(lps[0].is_null() && lps[1..].iter().all(|x| x.as_f64().unwrap() <= 0.0));
    // The response's tokens (by offset; the last echoed token is the one sampled) sum to
    // what the local scorer gives the same text: tolerance as in the real-model tests.
    let end = prompt.len() + response.len();
    let remote: f64 = (0..tokens.len())
        .filter(|&i| offsets[i] >= prompt.len() && offsets[i] < end)
        .map(|i| lps[i].as_f64().unwrap())
        .sum();
    let small = w2s_llama::Model::load(
        &w2s_llama::resolve_model("smollm2-135m-instruct"),
        Default::default(),
    )
    .unwrap();
    let mut scorer = w2s_llama::LlamaScorer::new(small, w2s_core::PromptTemplate::bare(), 2);
    let local = w2s_llama::score_once(&mut scorer, prompt, response, false).unwrap();
    assert!(
        (remote - local).abs() < 0.05 * 6.0 + 0.1,
        "remote {remote} vs local {local}"
    );

    // Plain sampling of n continuations, reproducible by seed.
    let body = json!({"model": "strong", "prompt": "The movie was", "n": 3, "max_tokens": 6, "logprobs": 0, "seed": 4});
    let a: Value = c
        .post(server.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: Value = c
        .post(server.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["choices"], b["choices"]);
    let choices = a["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for ch in choices {
        let n = ch["logprobs"]["tokens"].as_array().unwrap().len();
        assert!((1..=6).contains(&n));
        assert!(ch["finish_reason"] == "length" || ch["finish_reason"] == "stop");
    }
    let bad = c
        .post(server.url("/v1/completions"))
        .json(&json!({"model": "strong", "prompt": "x", "echo": true, "n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
