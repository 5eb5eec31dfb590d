//! Unit tests of the request parsing and reply shaping.
use super::*;
use w2s_core::Method;

fn policy() -> Policy {
    Policy {
        defaults: SearchConfig::default(),
        max_width: 16,
        max_successors: 16,
        max_chunk: 64,
        max_rows_per_request: 64,
        max_tokens: 512,
        max_prompt_bytes: 100_000,
    }
}

fn ok(body: &str) -> CheckedRequest {
    parse(body.as_bytes(), Endpoint::Completions, &policy(), 7).unwrap()
}

fn err(body: &str) -> ApiError {
    parse(body.as_bytes(), Endpoint::Completions, &policy(), 7).unwrap_err()
}

#[test]
fn defaults_and_overrides() {
    let r = ok(r#"{"model": "w2s", "prompt": "hi"}"#);
    assert_eq!(r.config.method(), Method::Cbs { w: 4, k: 4, l: 5 });
    assert_eq!(r.config.seed(), 7);
    assert!(!r.seeded);
    let r = ok(
        r#"{"model": "w2s", "prompt": ["hi"], "seed": 3, "max_tokens": 9,
                  "search": {"method": "cbs", "w": 2, "k": 3, "l": 4, "beta": 0.5}, "n": 2}"#,
    );
    assert_eq!(r.config.method(), Method::Cbs { w: 2, k: 3, l: 4 });
    assert_eq!((r.config.seed(), r.config.max_new_tokens(), r.n), (3, 9, 2));
    assert!(r.seeded);
    assert_eq!(r.cost(), 6 * 9);
}

#[test]
fn every_bad_field_is_named() {
    let cases = [
        (r#"[1]"#, ""),
        (r#"{"prompt": "x"}"#, "model"),
        (r#"{"model": "w2s"}"#, "prompt"),
        (r#"{"model": "w2s", "prompt": ""}"#, "prompt"),
        (r#"{"model": "w2s", "prompt": 5}"#, "prompt"),
        (
            r#"{"model": "w2s", "prompt": "x", "max_tokens": 0}"#,
            "max_tokens",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "max_tokens": 1.5}"#,
            "max_tokens",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "max_tokens": 99999999999999999999}"#,
            "max_tokens",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "temperature": -1}"#,
            "temperature",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "temperature": "hot"}"#,
            "temperature",
        ),
        (r#"{"model": "w2s", "prompt": "x", "top_p": 0}"#, "top_p"),
        (r#"{"model": "w2s", "prompt": "x", "stop": [1]}"#, "stop"),
        (
            r#"{"model": "w2s", "prompt": "x", "stream": "yes"}"#,
            "stream",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "search": {"method": "beam"}}"#,
            "search.method",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "search": {"w": 0}}"#,
            "search.w",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "search": {"w": 16, "k": 16}}"#,
            "search.w*k",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "search": {"extra": 1}}"#,
            "search.extra",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "search": {"beta": 1e300}}"#,
            "search.beta",
        ),
        (r#"{"model": "w2s", "prompt": "x", "n": 17}"#, "n"),
        (r#"{"model": "w2s", "prompt": "x", "echo": true}"#, "echo"),
        (
            r#"{"model": "w2s", "prompt": "x", "logprobs": 2}"#,
            "logprobs",
        ),
    ];
    for (body, param) in cases {
        let e = err(body);
        assert_eq!(e.status, 400, "{body}");
        assert_eq!(
            e.param.as_deref().unwrap_or(""),
            param,
            "{body}: {}",
            e.message
        );
    }
    assert!(err("{not json").message.contains("not valid JSON"));
    assert!(err(&"[".repeat(1000)).message.contains("not valid JSON"));
    assert!(
        err(r#"{"model": "w2s", "prompt": "x", "max_tokens": 1e400}"#)
            .message
            .contains("not valid JSON")
    );
}

#[test]
fn unknown_fields_are_ignored_and_listed_but_unhonourable_ones_are_refused() {
    let r = ok(
        r#"{"model": "w2s", "prompt": "x", "bogus": 1, "store": false, "metadata": {"a": 1},
                   "stream_options": {"include_usage": true, "extra": 1}, "logprobs": null,
                   "frequency_penalty": 0, "presence_penalty": 0, "n": 1, "seed": null,
                   "temperature": 0.7, "top_p": 1, "logit_bias": {}, "tools": [],
                   "response_format": {"type": "text"}}"#,
    );
    assert_eq!(
        r.ignored,
        vec!["bogus", "metadata", "store", "stream_options.extra"]
    );
    assert!(r.include_usage);
    assert!(!r.seeded);
    for (body, param) in [
        (
            r#"{"model": "w2s", "prompt": "x", "logit_bias": {"50256": -100}}"#,
            "logit_bias",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "tools": [{"type": "function"}]}"#,
            "tools",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "tool_choice": "auto"}"#,
            "tool_choice",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "response_format": {"type": "json_object"}}"#,
            "response_format",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "modalities": ["text", "audio"]}"#,
            "modalities",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "suffix": "end"}"#,
            "suffix",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "logprobs": 3}"#,
            "logprobs",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "stream_options": 3}"#,
            "stream_options",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "search": {"typo": 1}}"#,
            "search.typo",
        ),
    ] {
        let e = err(body);
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        assert!(e.message.len() < 400, "{}", e.message);
    }
    assert!(ok(r#"{"model": "w2s", "prompt": "x", "logprobs": 0}"#).logprobs);
}

#[test]
fn prompt_lists_are_one_search_each_and_best_of_is_best_of_n() {
    let r = ok(r#"{"model": "w2s", "prompt": ["a", "b", "c"], "n": 2, "max_tokens": 4}"#);
    assert_eq!(r.prompts, vec!["a", "b", "c"]);
    assert_eq!(r.cost(), 3 * 16 * 4);
    let many = format!(
        r#"{{"model": "w2s", "prompt": [{}]}}"#,
        vec!["\"p\""; 10_000].join(",")
    );
    let e = err(&many);
    assert_eq!(e.param.as_deref(), Some("prompt"));
    assert!(e.message.contains("10000 prompts"), "{}", e.message);
    for (body, needle) in [
        (
            r#"{"model": "w2s", "prompt": ["a", ""]}"#,
            "prompt[1] is empty",
        ),
        (r#"{"model": "w2s", "prompt": []}"#, "empty array"),
        (r#"{"model": "w2s", "prompt": [1, 2]}"#, "token-id"),
        (r#"{"model": "w2s", "prompt": [[1, 2]]}"#, "token-id"),
        (
            r#"{"model": "w2s", "prompt": ["a", "b"], "stream": true}"#,
            "streaming takes one prompt",
        ),
    ] {
        let e = err(body);
        assert!(e.message.contains(needle), "{body}: {}", e.message);
    }
    let r = ok(r#"{"model": "w2s", "prompt": "x", "best_of": 8, "n": 2}"#);
    assert_eq!(r.config.method(), Method::Bon { n: 8 });
    assert_eq!(r.n, 2);
    assert_eq!(
        ok(r#"{"model": "w2s", "prompt": "x", "best_of": 1}"#)
            .config
            .method(),
        Method::Cbs { w: 4, k: 4, l: 5 }
    );
    for (body, param) in [
        (
            r#"{"model": "w2s", "prompt": "x", "best_of": 2, "n": 3}"#,
            "n",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "best_of": 0}"#,
            "best_of",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "best_of": 99}"#,
            "best_of",
        ),
        (
            r#"{"model": "w2s", "prompt": "x", "best_of": 4, "search": {"method": "cbs"}}"#,
            "best_of",
        ),
    ] {
        assert_eq!(err(body).param.as_deref(), Some(param), "{body}");
    }
}

#[test]
fn chat_takes_a_conversation_ending_with_the_user() {
    let p = policy();
    let chat = |body: &str| parse(body.as_bytes(), Endpoint::Chat, &p, 1);
    let r =
        chat(r#"{"model": "w2s", "messages": [{"role": "user", "content": "hello"}]}"#).unwrap();
    assert_eq!(
        (r.prompts.as_slice(), r.history.len()),
        (&["hello".to_string()][..], 0)
    );
    let r = chat(
        r#"{"model": "w2s", "max_completion_tokens": 7, "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello!", "refusal": null, "name": "bot"},
            {"role": "developer", "content": "Be brief.", "x-extra": 1},
            {"role": "user", "content": [{"type": "text", "text": "Why?"}]}]}"#,
    )
    .unwrap();
    assert_eq!(r.prompts, vec!["Why?"]);
    assert_eq!(r.config.max_new_tokens(), 7);
    let roles: Vec<_> = r
        .history
        .iter()
        .map(|t| (t.role.as_str(), t.content.as_str()))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("system", "Be kind."),
            ("user", "Hi\nthere"),
            ("assistant", "Hello!"),
            ("system", "Be brief.")
        ]
    );
    assert_eq!(r.ignored, vec!["messages[3].x-extra"]);
    for (body, needle) in [
        (r#"{"model": "w2s", "messages": []}"#, "is empty"),
        (
            r#"{"model": "w2s", "messages": [{"role": "wizard", "content": "x"}]}"#,
            "role must be",
        ),
        (
            r#"{"model": "w2s", "messages": [{"role": "tool", "content": "x"}]}"#,
            "tool messages",
        ),
        (
            r#"{"model": "w2s", "messages": [{"role": "user", "content": []}]}"#,
            "empty array",
        ),
        (
            r#"{"model": "w2s", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}"#,
            "only text parts",
        ),
        (
            r#"{"model": "w2s", "messages": [{"role": "user", "content": [1]}]}"#,
            "type",
        ),
        (
            r#"{"model": "w2s", "messages": [{"role": "user", "content": 5}]}"#,
            "string or an array",
        ),
        (
            r#"{"model": "w2s", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}"#,
            "last message",
        ),
        (
            r#"{"model": "w2s", "messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}, {"role": "user", "content": "x"}]}"#,
            "tool calls",
        ),
        (
            r#"{"model": "w2s", "messages": [{"role": "user", "content": "   "}]}"#,
            "empty",
        ),
        (r#"{"model": "w2s", "messages": "hi"}"#, "must be an array"),
        (
            r#"{"model": "w2s", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2, "logprobs": true}"#,
            "top alternatives",
        ),
    ] {
        let e = chat(body).unwrap_err();
        assert_eq!(e.status, 400, "{body}");
        assert!(e.message.contains(needle), "{body}: {}", e.message);
        assert!(e.message.len() < 400, "{}", e.message);
    }
}
