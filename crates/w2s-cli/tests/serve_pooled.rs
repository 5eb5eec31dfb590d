//! `w2s serve --pooled`: the searches in flight share one context of the local strong
//! model (SmolLM2 here, guided by the SmolLM2 pair of `configs/chat.toml`), their rows
//! sampled in one decode per token. Requests that arrive while others run join them,
//! a request too large for the context waits and the context is made anew, chats keep
//! their history and template, streams and log-probabilities come back, a client that
//! leaves frees its place, plain requests run between steps, and a search alone gives the
//! text a worker gives.

#![allow(clippy::await_holding_lock)]

#[allow(dead_code)] // shared with the other server tests
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::server::{client, config, serial, Server};

fn pooled(parallel: &str) -> Server {
    let args = ["--strong", "smollm2-135m-instruct", "--parallel", parallel];
    let room = ["--pooled", "--queue-capacity", "1000000"];
    let log = [("W2S_LOG", "info")];
    Server::start_with(&config("chat.toml"), &[&args[..], &room].concat(), &log)
}

fn request(seed: u64, max_tokens: usize, (w, k): (usize, usize)) -> Value {
    json!({"model": "w2s", "prompt": "I rented this movie last weekend and", "max_tokens": max_tokens,
           "seed": seed, "search": {"method": "cbs", "w": w, "k": k, "l": 4}})
}

async fn answer(c: &reqwest::Client, s: &Server, path: &str, body: &Value) -> Value {
    let (status, v) = s.post(c, path, body).await;
    assert_eq!(status, 200, "{v}");
    v
}

fn text(v: &Value) -> String {
    let c = &v["choices"][0];
    c["text"]
        .as_str()
        .or(c["message"]["content"].as_str())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_join_the_searches_in_flight_and_each_gets_its_answer() {
    let _g = serial();
    let s = pooled("3");
    let c = client(Duration::from_secs(600));
    let small = request(21, 8, (2, 2));
    let path = "/v1/completions";
    let alone = text(&answer(&c, &s, path, &small).await);
    assert_eq!(
        alone,
        text(&answer(&c, &s, path, &small).await),
        "seeded text alone repeats"
    );
    // The same search on a worker of its own: one search alone is the same search.
    {
        let args = ["--strong", "smollm2-135m-instruct"];
        let workers = Server::start_with(&config("chat.toml"), &args, &[]);
        assert_eq!(alone, text(&answer(&c, &workers, path, &small).await));
    }
    let chat = json!({"model": "w2s", "max_tokens": 8, "seed": 5, "logprobs": true,
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "Name a film."}],
        "search": {"method": "cbs", "w": 2, "k": 2, "l": 4}});
    let chat_alone = answer(&c, &s, "/v1/chat/completions", &chat).await;
    // Seven at once: copies, a chat with history, and a wider, longer search that does
    // not fit the context made so far (it waits, then the context is made anew).
    let started = Instant::now();
    let bodies = [
        (path, small.clone()),
        (path, request(22, 8, (2, 2))),
        ("/v1/chat/completions", chat.clone()),
        (path, small.clone()),
        (path, request(23, 14, (4, 4))),
        (path, request(24, 8, (2, 2))),
        (path, small.clone()),
    ];
    let all = futures_util::future::join_all(bodies.iter().map(|(p, b)| answer(&c, &s, p, b)));
    let watch = async {
        let mut most = 0.0f64;
        while started.elapsed() < Duration::from_secs(300) && most < 3.0 {
            most = most.max(s.metric(&c, "w2s_in_flight_searches").await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    };
    let (replies, most) = tokio::join!(all, watch);
    assert_eq!(most, 3.0, "three searches in flight together");
    for ((_, body), reply) in bodies.iter().zip(&replies) {
        let usage = &reply["usage"];
        let max = body["max_tokens"].as_u64().unwrap();
        let tokens = usage["completion_tokens"].as_u64().unwrap();
        assert!(tokens >= 1 && tokens <= max, "{reply}");
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 5, "{reply}");
        assert!(!text(reply).is_empty(), "{reply}");
    }
    // The chat read its history through the model's template: the prompt tokens are the
    // same as alone, and its log-probabilities came back.
    let chat_reply = &replies[2];
    assert_eq!(
        chat_reply["usage"]["prompt_tokens"],
        chat_alone["usage"]["prompt_tokens"]
    );
    let logprobs = chat_reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert!(!logprobs.is_empty(), "{chat_reply}");
    assert!(
        s.log_lines("share one context").len() >= 2,
        "the context was made anew for the wider search"
    );
    // Afterwards the pool holds no search, and a search alone gives its text again.
    assert_eq!(s.metric(&c, "w2s_in_flight_searches").await, 0.0);
    assert_eq!(alone, text(&answer(&c, &s, path, &small).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_leaves_frees_its_place_and_the_others_finish() {
    let _g = serial();
    let s = pooled("2");
    let c = client(Duration::from_secs(600));
    let path = "/v1/completions";
    // A long search whose client gives up after 2 s, beside two that finish.
    let leaving = client(Duration::from_secs(2));
    let long = json!({"model": "w2s", "prompt": "Write a long story about a dragon, in ten chapters.",
        "max_tokens": 400, "seed": 31, "search": {"method": "cbs", "w": 4, "k": 4, "l": 4}});
    let gone = async {
        let r = leaving.post(s.url(path)).json(&long).send().await;
        assert!(r.is_err(), "the long search should outlast its client");
    };
    let others = [request(32, 8, (2, 2)), request(33, 8, (2, 2))];
    let stay = futures_util::future::join_all(others.iter().map(|b| answer(&c, &s, path, b)));
    let (_, replies) = tokio::join!(gone, stay);
    assert_eq!(replies.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.metric(&c, "w2s_in_flight_searches").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the left search still holds its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A plain request to one model runs between the pool's steps.
    let plain = json!({"model": "tuned", "prompt": "The film was", "max_tokens": 4, "seed": 1});
    let reply = answer(&c, &s, path, &plain).await;
    assert!(!text(&reply).is_empty(), "{reply}");
    // A stream on the pool: its settled text arrives in pieces and adds up to the answer.
    let mut body = request(34, 12, (2, 2));
    body["stream"] = json!(true);
    let r = c.post(s.url(path)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let events = r.text().await.unwrap();
    let pieces: String = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    body["stream"] = json!(false);
    assert_eq!(pieces, text(&answer(&c, &s, path, &body).await));
}

#[test]
fn pooled_refuses_a_remote_strong_model_with_the_reason() {
    let _g = serial();
    let out = Command::new(env!("CARGO_BIN_EXE_w2s"))
        .args([
            "serve",
            "--config",
            &config("sentiment.toml"),
            "--port",
            "0",
        ])
        .args(["--pooled", "--strong", "http://127.0.0.1:9/v1#strong"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--pooled needs a local strong model"), "{err}");
}
