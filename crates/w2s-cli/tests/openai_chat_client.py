"""The official openai SDK against `w2s serve` with chat templates in every role (base URL
in argv[1]): conversations, text parts, prompt lists, best_of, log-probabilities,
streamed usage, ignored fields and errors."""
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0, timeout=1200)
SEARCH = {"search": {"method": "cbs", "w": 2, "k": 2, "l": 3}}

# A conversation: system, user, assistant, user; content as a string or text parts.
history = [
    {"role": "system", "content": "You answer in a few words."},
    {"role": "user", "content": [{"type": "text", "text": "Hi!"}]},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Name a colour."},
]
r = client.chat.completions.create(model="w2s", messages=history, max_completion_tokens=8, seed=2,
                                   extra_body=SEARCH)
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant" and r.choices[0].message.content, r
assert r.choices[0].finish_reason in ("stop", "length"), r
short = client.chat.completions.create(model="w2s", messages=history[-1:], max_completion_tokens=8, seed=2,
                                       extra_body=SEARCH)
assert r.usage.prompt_tokens > short.usage.prompt_tokens, (r.usage, short.usage)

# Chat log-probabilities: the strong model's tokens of the returned text.
lp = client.chat.completions.create(model="w2s", messages=history, max_completion_tokens=8, seed=2,
                                    logprobs=True, extra_body=SEARCH)
assert lp.choices[0].message.content == r.choices[0].message.content
toks = lp.choices[0].logprobs.content
assert "".join(t.token for t in toks) == lp.choices[0].message.content, toks
assert all(t.logprob <= 0 for t in toks), toks

# Streaming chat with include_usage: the usage arrives in a last chunk with no choices.
chunks = list(client.chat.completions.create(model="w2s", messages=history, max_completion_tokens=8, seed=2,
                                             stream=True, stream_options={"include_usage": True},
                                             extra_body=SEARCH))
assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0, chunks[-1]
assert all(c.usage is None for c in chunks[:-1]), chunks
text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
assert text == r.choices[0].message.content, (text, r.choices[0].message.content)

# A list of prompts: one search each, n choices per prompt, in order.
lst = client.completions.create(model="w2s", prompt=["Name a colour.", "Name a fruit."], max_tokens=6, n=2,
                                seed=3, extra_body=SEARCH)
assert [c.index for c in lst.choices] == [0, 1, 2, 3], lst
alone = client.completions.create(model="w2s", prompt="Name a fruit.", max_tokens=6, n=2, seed=3,
                                  extra_body=SEARCH)
assert [c.text for c in lst.choices[2:]] == [c.text for c in alone.choices], (lst, alone)

# best_of is Best-of-N; logprobs 0 returns the chosen tokens' log-probabilities.
bo = client.completions.create(model="w2s", prompt="Name a colour.", max_tokens=6, best_of=4, n=1, seed=3,
                               logprobs=0)
assert bo.model_extra["w2s"]["method"] == "bon:4", bo
assert "".join(bo.choices[0].logprobs.tokens) == bo.choices[0].text, bo

# Unknown fields are ignored and named in a header.
raw = client.completions.with_raw_response.create(model="w2s", prompt="Name a colour.", max_tokens=4,
                                                  seed=3, extra_body={**SEARCH, "my_option": 1})
assert raw.headers.get("x-w2s-ignored-fields") == "my_option", raw.headers
assert raw.parse().choices[0].text

# Errors: a non-text part, a conversation ending with the assistant, top alternatives.
for bad, needle in [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}], "only text parts"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "last message"),
    ([{"role": "wizard", "content": "x"}], "role must be"),
]:
    try:
        client.chat.completions.create(model="w2s", messages=bad, max_completion_tokens=4)
        raise AssertionError("expected a 400 for %r" % bad)
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "messages", e.body
        assert needle in e.body["message"], e.body
try:
    client.chat.completions.create(model="w2s", messages=history, max_completion_tokens=4, logprobs=True,
                                   top_logprobs=3)
    raise AssertionError("expected a 400")
except openai.BadRequestError as e:
    assert e.body["param"] == "top_logprobs", e.body

print("openai sdk chat: all checks passed")
