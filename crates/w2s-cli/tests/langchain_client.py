"""LangChain's OpenAI integration (`langchain-openai`) against a running `w2s serve` (base URL in argv[1]).

What it sends by default (recorded with langchain-openai 1.7, openai 2.x):
- ChatOpenAI: `messages` (system/user/assistant, content a string or text parts), `model`,
  `max_completion_tokens` (from `max_tokens=`), `stream` (false on invoke/batch), and
  `stream_options: {"include_usage": true}` only with `stream_usage=True` (a custom
  base_url turns the default off); `seed`, `stop`, `n`, `temperature` only when set.
- OpenAI (completions LLM): `prompt` as a list (one request for a whole batch; a plain
  string when streaming), `n: 1`, `temperature: 0.7`, `top_p: 1`, `frequency_penalty: 0`,
  `presence_penalty: 0`, `logprobs: null`, `seed: null` unless set, `max_tokens`.
"""
import re
import sys

import openai
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI, OpenAI

base = sys.argv[1] + "/v1"
MAX = 10
SEARCH = {"search": {"method": "cbs", "w": 2, "k": 2, "l": 4}}
FINISH = ("stop", "length")


def chat(**kw):
    args = dict(base_url=base, api_key="unused", model="w2s", max_tokens=MAX, max_retries=0,
                timeout=1200, extra_body=SEARCH)
    args.update(kw)
    return ChatOpenAI(**args)


def llm(**kw):
    args = dict(base_url=base, api_key="unused", model="w2s", max_tokens=MAX, max_retries=0,
                timeout=1200, extra_body=SEARCH)
    args.update(kw)
    return OpenAI(**args)


def check_usage(u, where):
    """A usage_metadata dict (LangChain's names for prompt/completion/total tokens)."""
    assert u["input_tokens"] >= 0, (where, u)
    assert 0 < u["output_tokens"] <= MAX, (where, u)
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"], (where, u)


def header(msg, name):
    headers = msg.response_metadata.get("headers") or {}
    return next((v for k, v in headers.items() if k.lower() == name), None)


# -- ChatOpenAI.invoke: a system and a human message; unknown fields are ignored and named.
r = chat(include_response_headers=True,
         extra_body={**SEARCH, "langchain_test_unknown_field": True}).invoke(
    [SystemMessage("You write short movie reviews."), HumanMessage("The acting in this film")])
assert isinstance(r, AIMessage), r
assert isinstance(r.content, str) and r.content, r
assert r.response_metadata["finish_reason"] in FINISH, r.response_metadata
assert r.response_metadata["model_name"] == "w2s", r.response_metadata
if r.usage_metadata is not None:
    check_usage(r.usage_metadata, "invoke")
    tu = r.response_metadata["token_usage"]
    assert tu["completion_tokens"] == r.usage_metadata["output_tokens"], (tu, r.usage_metadata)
ignored = header(r, "x-w2s-ignored-fields")
assert ignored is not None, r.response_metadata.get("headers")
ignored = set(re.split(r"[,\s]+", ignored.strip())) - {""}
assert "langchain_test_unknown_field" in ignored, ignored
assert not ignored & {"messages", "model", "max_completion_tokens", "stream", "search"}, ignored

# -- An earlier assistant turn in the history, and content as a list of text parts.
r = chat().invoke([SystemMessage("You write short movie reviews."), HumanMessage("Review a film."),
                   AIMessage("It was long."), HumanMessage("Say more about")])
assert isinstance(r.content, str) and r.content, r
assert r.response_metadata["finish_reason"] in FINISH, r.response_metadata
r = chat().invoke([HumanMessage(content=[{"type": "text", "text": "My wife dragged me to see"},
                                         {"type": "text", "text": " this and"}])])
assert isinstance(r.content, str) and r.content, r

# -- A seed (constructor or per call) gives the same text every time.
PROMPT = [HumanMessage("I rented this movie last weekend and")]
seeded = chat(seed=11)
a = seeded.invoke(PROMPT)
b = seeded.invoke(PROMPT)
assert a.content and a.content == b.content, (a.content, b.content)
c = chat().invoke(PROMPT, seed=11)
assert c.content == a.content, (c.content, a.content)

# -- .stream: chunks concatenate to the seeded non-streamed text; usage, if streamed, comes
# once, after all the text.
def check_stream(chunks, where):
    assert chunks and all(isinstance(ch, AIMessageChunk) for ch in chunks), (where, chunks)
    text = "".join(ch.content for ch in chunks)
    assert text == a.content, (where, text, a.content)
    finishes = [ch.response_metadata["finish_reason"] for ch in chunks
                if ch.response_metadata.get("finish_reason")]
    assert len(finishes) == 1 and finishes[0] in FINISH, (where, finishes)
    with_usage = [i for i, ch in enumerate(chunks) if ch.usage_metadata]
    assert len(with_usage) <= 1, (where, with_usage)  # never counted twice
    if with_usage:
        assert not "".join(ch.content for ch in chunks[with_usage[0] + 1:]), (where, chunks)
        check_usage(chunks[with_usage[0]].usage_metadata, where)
    total = chunks[0]
    for ch in chunks[1:]:
        total = total + ch
    assert total.content == text, (where, total)
    return with_usage


check_stream(list(seeded.stream(PROMPT)), "stream")
# stream_usage=True sends stream_options.include_usage: the usage must then arrive.
assert check_stream(list(chat(seed=11, stream_usage=True).stream(PROMPT)), "stream_usage")

# -- .batch: three prompts, answered in order (the seeded one repeats its text).
out = seeded.batch([PROMPT, "The first thing you notice about this film is", "This was the worst"])
assert len(out) == 3, out
assert out[0].content == a.content, (out[0].content, a.content)
for m in out:
    assert isinstance(m, AIMessage) and isinstance(m.content, str) and m.content, out
    assert m.response_metadata["finish_reason"] in FINISH, m.response_metadata

# -- The completions LLM: `prompt` as a list, default penalties, `n`, `logprobs: null`.
text = llm(seed=5).invoke("I rented this movie last weekend and")
assert isinstance(text, str) and text, repr(text)
res = llm(seed=5).generate(["I rented this movie last weekend and", "The acting in this film"])
assert len(res.generations) == 2, res
for gens in res.generations:
    assert len(gens) == 1 and gens[0].text, res
    assert gens[0].generation_info["finish_reason"] in FINISH, gens[0].generation_info
usage = res.llm_output["token_usage"]
assert 0 < usage["completion_tokens"] <= 2 * MAX, usage
assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], usage
pieces = list(llm(seed=5).stream("I rented this movie last weekend and"))
assert "".join(pieces) == text, (pieces, text)

# -- Errors surface as the openai SDK's exceptions.
try:
    chat(model="gpt-4").invoke("hi")
    raise AssertionError("expected a 404")
except openai.NotFoundError as e:
    assert e.status_code == 404, e
try:
    llm(model="gpt-3.5-turbo-instruct").invoke("hi")
    raise AssertionError("expected a 404")
except openai.NotFoundError as e:
    assert e.status_code == 404, e
try:
    chat(extra_body={"search": {"method": "beam"}}).invoke("hi")
    raise AssertionError("expected a 400")
except openai.BadRequestError as e:
    assert e.status_code == 400, e
    assert e.body["param"] == "search.method", e.body

print("langchain: all checks passed")
