//! OpenAI compatibility of `w2s serve` with real models and real clients: conversations
//! through each model's chat template, unknown fields ignored and named, prompt lists,
//! `best_of`, log-probabilities, streamed usage, and the `openai` SDK and LangChain's
//! OpenAI integration as clients.

// Each test holds a process-wide lock for its whole run so that two model servers never
// share the 2 cores.
#![allow(clippy::await_holding_lock)]

#[allow(dead_code)] // shared with the other server tests
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::server::{config, run_python, serial, Server};

fn client() -> reqwest::Client {
    support::server::client(Duration::from_secs(1200))
}

/// `configs/chat.toml` with SmolLM2 as the strong model too (every role a chat model).
fn chat_server() -> Server {
    Server::start_with(
        &config("chat.toml"),
        &["--strong", "smollm2-135m-instruct", "--parallel", "2"],
        &[],
    )
}

async fn post(c: &reqwest::Client, s: &Server, path: &str, body: &Value) -> (u16, Value) {
    s.post(c, path, body).await
}

fn texts(v: &Value) -> Vec<String> {
    v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["text"]
                .as_str()
                .or(c["message"]["content"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_reach_every_model_through_its_chat_template() {
    let _g = serial();
    let s = chat_server();
    let c = client();
    let chat = |messages: Value| {
        json!({"model": "w2s", "messages": messages, "max_completion_tokens": 6, "seed": 4,
               "search": {"method": "cbs", "w": 2, "k": 2, "l": 3}})
    };
    let (st, one) = post(
        &c,
        &s,
        "/v1/chat/completions",
        &chat(json!([{"role": "user", "content": "Name a colour."}])),
    )
    .await;
    assert_eq!(st, 200, "{one}");
    let turns = three_turns();
    let (st, many) = post(&c, &s, "/v1/chat/completions", &chat(turns)).await;
    assert_eq!(st, 200, "{many}");
    let system = json!([
        {"role": "system", "content": "You are a painter of large landscapes who answers every question in one single word, never more, and never explains the answer."},
        {"role": "user", "content": "Name a colour."},
    ]);
    let (st, sys) = post(&c, &s, "/v1/chat/completions", &chat(system)).await;
    assert_eq!(st, 200, "{sys}");
    let tokens = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    let (p1, p2, p3) = (tokens(&one), tokens(&many), tokens(&sys));
    // The earlier turns are in the strong model's prompt (16+ tokens of text and turn
    // markup); the system message replaces the template's default one (SmolLM2's is
    // about 15 tokens; this one about 25).
    assert!(
        p2 >= p1 + 16,
        "prompt tokens {p1} alone, {p2} with two earlier turns"
    );
    assert!(
        p3 >= p1 + 6,
        "prompt tokens {p1} alone, {p3} with a system message"
    );
    // Text parts are joined with a newline, exactly as the same string.
    let (_, parts) = post(
        &c,
        &s,
        "/v1/chat/completions",
        &chat(json!([{"role": "user", "content": [
        {"type": "text", "text": "Name a"}, {"type": "text", "text": "colour."}]}])),
    )
    .await;
    let (_, joined) = post(
        &c,
        &s,
        "/v1/chat/completions",
        &chat(json!([{"role": "user", "content": "Name a\ncolour."}])),
    )
    .await;
    assert_eq!(texts(&parts), texts(&joined));
    assert_eq!(
        parts["usage"]["prompt_tokens"],
        joined["usage"]["prompt_tokens"]
    );
    drop(s);

    // A template that takes one user message refuses earlier turns, naming the template.
    let s = Server::start(&[], &[]);
    let (st, e) = post(
        &c,
        &s,
        "/v1/chat/completions",
        &chat(json!([
        {"role": "system", "content": "Be nice."}, {"role": "user", "content": "The film"}])),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("takes a single user message"), "{msg}");
    assert!(!msg.contains(".gguf") && !msg.contains("/root"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_ignored_named_in_a_header_and_logged_once() {
    let _g = serial();
    let s = Server::start(&[], &[]);
    let c = client();
    let base = json!({"model": "w2s", "prompt": "The film", "max_tokens": 5, "seed": 9,
                      "search": {"method": "cbs", "w": 1, "k": 2, "l": 3}});
    let mut extra = base.clone();
    extra["store"] = json!(true);
    extra["metadata"] = json!({"run": "x"});
    extra["a_field_nobody_knows"] = json!([1, 2]);
    extra["stream_options"] = json!({"include_usage": false, "continuous_usage_stats": true});
    let plain = c
        .post(s.url("/v1/completions"))
        .json(&base)
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("x-w2s-ignored-fields").is_none());
    let plain: Value = plain.json().await.unwrap();
    for _ in 0..2 {
        let r = c
            .post(s.url("/v1/completions"))
            .json(&extra)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers()["x-w2s-ignored-fields"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            h,
            "a_field_nobody_knows, metadata, store, stream_options.continuous_usage_stats"
        );
        let v: Value = r.json().await.unwrap();
        // Ignored means ignored: the same text as without the fields.
        assert_eq!(texts(&v), texts(&plain));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logged = s.log_lines("ignoring an unknown request field");
    assert_eq!(logged.len(), 4, "{logged:#?}");
    assert!(
        logged.iter().any(|l| l.contains("a_field_nobody_knows")),
        "{logged:#?}"
    );
    // Fields the search cannot honour are still refused, by name.
    for (k, v) in [
        ("logit_bias", json!({"42": 10})),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("response_format", json!({"type": "json_schema"})),
    ] {
        let mut b = base.clone();
        b[k] = v;
        let (st, e) = post(&c, &s, "/v1/completions", &b).await;
        assert_eq!((st, e["error"]["param"].as_str()), (400, Some(k)), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_lists_best_of_logprobs_and_streamed_usage() {
    let _g = serial();
    let s = chat_server();
    let c = client();
    let one = |prompt: Value, extra: Value| {
        let mut b = json!({"model": "w2s", "prompt": prompt, "max_tokens": 6, "seed": 5, "n": 2,
                           "search": {"method": "cbs", "w": 2, "k": 2, "l": 3}});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // A list: one search per prompt, choices in prompt order, n each, indexed as OpenAI.
    let (st, list) = post(
        &c,
        &s,
        "/v1/completions",
        &one(json!(["Name a colour.", "Name a fruit."]), json!({})),
    )
    .await;
    assert_eq!(st, 200, "{list}");
    let idx: Vec<u64> = list["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![0, 1, 2, 3]);
    let (_, a) = post(
        &c,
        &s,
        "/v1/completions",
        &one(json!("Name a colour."), json!({})),
    )
    .await;
    let (_, b) = post(
        &c,
        &s,
        "/v1/completions",
        &one(json!("Name a fruit."), json!({})),
    )
    .await;
    assert_eq!(texts(&list), [texts(&a), texts(&b)].concat());
    assert_eq!(
        list["usage"]["completion_tokens"].as_u64().unwrap(),
        a["usage"]["completion_tokens"].as_u64().unwrap()
            + b["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(list["w2s"]["results"].as_array().unwrap().len(), 2);

    // best_of: Best-of-N, best n returned.
    let (st, bo) = post(
        &c,
        &s,
        "/v1/completions",
        &json!({"model": "w2s", "prompt": "Name a colour.",
        "max_tokens": 6, "seed": 5, "best_of": 4, "n": 2}),
    )
    .await;
    assert_eq!(st, 200, "{bo}");
    assert_eq!(bo["w2s"]["method"], "bon:4");
    assert_eq!(bo["choices"].as_array().unwrap().len(), 2);

    // logprobs: the strong model's tokens spell the text; the guide's values ride along;
    // the text is the one the same request gets without them.
    let (st, lp) = post(
        &c,
        &s,
        "/v1/completions",
        &one(json!("Name a colour."), json!({"logprobs": 0})),
    )
    .await;
    assert_eq!(st, 200, "{lp}");
    assert_eq!(texts(&lp), texts(&a));
    for (i, ch) in lp["choices"].as_array().unwrap().iter().enumerate() {
        let l = &ch["logprobs"];
        let toks: Vec<&str> = l["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(toks.concat(), ch["text"].as_str().unwrap(), "{l}");
        let lps = l["token_logprobs"].as_array().unwrap();
        assert_eq!(lps.len(), toks.len());
        assert!(lps.iter().all(|x| x.as_f64().unwrap() <= 0.0), "{l}");
        let offs: Vec<u64> = l["text_offset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(offs[0], 0);
        let g = &lp["w2s"]["logprobs"][i];
        let score = g["tuned_logprob"].as_f64().unwrap() - g["untuned_logprob"].as_f64().unwrap();
        assert!((score - g["score"].as_f64().unwrap()).abs() < 1e-9, "{g}");
    }
    let (st, clp) = post(&c, &s, "/v1/chat/completions", &json!({"model": "w2s", "max_tokens": 6, "seed": 5,
        "logprobs": true, "top_logprobs": 0, "messages": [{"role": "user", "content": "Name a colour."}]})).await;
    assert_eq!(st, 200, "{clp}");
    let content: String = clp["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        content,
        clp["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // stream_options.include_usage: the usage comes last, alone, with no choices.
    let body = json!({"model": "w2s", "prompt": "Name a colour.", "max_tokens": 6, "seed": 5, "stream": true,
                      "stream_options": {"include_usage": true}, "search": {"method": "cbs", "w": 2, "k": 2, "l": 3}});
    let r = c
        .post(s.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut sse = String::new();
    let mut bytes = r.bytes_stream();
    while let Some(b) = bytes.next().await {
        sse.push_str(&String::from_utf8_lossy(&b.unwrap()));
    }
    let events: Vec<Value> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    assert!(
        last["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{last}"
    );
    assert_eq!(
        events.iter().filter(|e| e.get("usage").is_some()).count(),
        1,
        "{sse}"
    );
    let streamed: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, texts(&a)[0]);
}

#[test]
fn langchain_openai_clients_work_against_the_server() {
    let _g = serial();
    let server = chat_server();
    run_python(
        "langchain_client.py",
        &server,
        "langchain: all checks passed",
    );
}

#[test]
fn the_openai_sdk_sends_conversations_lists_and_usage_requests() {
    let _g = serial();
    let server = chat_server();
    run_python(
        "openai_chat_client.py",
        &server,
        "openai sdk chat: all checks passed",
    );
}

/// A config file naming the three models and nothing else (no templates).
fn bare_config(name: &str, strong: &str) -> String {
    let path = std::env::temp_dir().join(format!("w2s-bare-{}-{name}.toml", std::process::id()));
    let small = "smollm2-135m-instruct";
    std::fs::write(
        &path,
        format!(
            "strong = {strong:?}\ntuned = {small:?}\nuntuned = {small:?}\nmax_new_tokens = 6\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_template_chat_requests_use_each_models_own_chat_template() {
    let _g = serial();
    let c = client();
    let s = Server::start_with(&bare_config("chat", "smollm2-135m-instruct"), &[], &[]);
    let body = |messages: Value| {
        json!({"model": "w2s", "messages": messages, "max_completion_tokens": 6, "seed": 4,
               "search": {"method": "cbs", "w": 2, "k": 2, "l": 3}})
    };
    let system = json!([
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "Name a"}, {"type": "text", "text": "colour."}]},
    ]);
    let (st, sys) = post(&c, &s, "/v1/chat/completions", &body(system)).await;
    assert_eq!(st, 200, "{sys}");
    let turns = three_turns();
    let (st, many) = post(&c, &s, "/v1/chat/completions", &body(turns)).await;
    assert_eq!(st, 200, "{many}");
    // One user message goes through the chat template too: more prompt tokens than the
    // same text sent to /v1/completions, which stays plain text.
    let (st, one) = post(
        &c,
        &s,
        "/v1/chat/completions",
        &body(json!([{"role": "user", "content": "Name a colour."}])),
    )
    .await;
    assert_eq!(st, 200, "{one}");
    let (st, plain) = post(
        &c,
        &s,
        "/v1/completions",
        &json!({"model": "w2s", "prompt": "Name a colour.",
        "max_tokens": 6, "seed": 4, "search": {"method": "cbs", "w": 2, "k": 2, "l": 3}}),
    )
    .await;
    assert_eq!(st, 200, "{plain}");
    let tokens = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        tokens(&one) >= tokens(&plain) + 8,
        "chat {} plain {}",
        tokens(&one),
        tokens(&plain)
    );
    assert!(tokens(&many) >= tokens(&one) + 16);
    drop(s);

    // A model with no chat template of its own (gemma-3-270m, a base model) cannot take
    // earlier turns: a 400 that names it.
    let s = Server::start_with(&bare_config("base", "gemma-3-270m"), &[], &[]);
    let turns = json!([
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a colour."},
    ]);
    let (st, err) = post(&c, &s, "/v1/chat/completions", &body(turns)).await;
    assert_eq!(st, 400, "{err}");
    let m = err["error"]["message"].as_str().unwrap();
    assert!(m.contains("strong model"), "{m}");
    // One user message still works: the base model reads it as plain text.
    let (st, one) = post(
        &c,
        &s,
        "/v1/chat/completions",
        &body(json!([{"role": "user", "content": "Name a colour."}])),
    )
    .await;
    assert_eq!(st, 200, "{one}");
}

/// A three-turn conversation: a greeting, its answer, a question.
fn three_turns() -> Value {
    json!([
        {"role": "user", "content": "Hi there, how are you today?"},
        {"role": "assistant", "content": "Hello. I am fine, thank you."},
        {"role": "user", "content": "Name a colour."},
    ])
}
