"""The official openai SDK against a running `w2s serve` (base URL in argv[1])."""
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)

models = [m.id for m in client.models.list().data]
assert models == ["w2s", "strong", "tuned", "untuned"], models

c = client.completions.create(
    model="w2s", prompt="I rented this movie last weekend and", max_tokens=12, seed=5,
    extra_body={"search": {"method": "cbs", "w": 2, "k": 2, "l": 4, "return_beams": True}},
)
assert c.object == "text_completion", c
assert len(c.choices) == 1 and c.choices[0].text, c
assert c.choices[0].finish_reason in ("stop", "length"), c
assert 0 < c.usage.completion_tokens <= 12, c.usage
extra = c.model_extra or {}
beams = extra["w2s"]["beams"]
assert beams[0]["text"] == c.choices[0].text, beams
assert all(b["score"] >= beams[i + 1]["score"] for i, b in enumerate(beams[:-1])), beams

ch = client.chat.completions.create(
    model="w2s", messages=[{"role": "user", "content": "The acting in this film"}], max_tokens=10, seed=3,
    extra_body={"search": {"method": "bon", "n": 4}},
)
assert ch.object == "chat.completion", ch
assert ch.choices[0].message.role == "assistant" and ch.choices[0].message.content, ch

stream = client.completions.create(
    model="w2s", prompt="The first thing you notice about this film is", max_tokens=12, seed=7, stream=True,
    extra_body={"search": {"method": "cbs", "w": 1, "k": 3, "l": 3}},
)
pieces, finishes = [], []
for ev in stream:
    pieces.append(ev.choices[0].text)
    if ev.choices[0].finish_reason:
        finishes.append(ev.choices[0].finish_reason)
assert finishes and finishes[-1] in ("stop", "length"), finishes
streamed = "".join(pieces)
same = client.completions.create(
    model="w2s", prompt="The first thing you notice about this film is", max_tokens=12, seed=7,
    extra_body={"search": {"method": "cbs", "w": 1, "k": 3, "l": 3}},
)
assert streamed == same.choices[0].text, (streamed, same.choices[0].text)
assert len([p for p in pieces if p]) >= 2, pieces  # text arrived in several events

chat_stream = client.chat.completions.create(
    model="w2s", messages=[{"role": "user", "content": "My wife dragged me to see this and"}],
    max_tokens=8, seed=2, stream=True,
)
text = "".join((ev.choices[0].delta.content or "") for ev in chat_stream)
assert text, text

try:
    client.completions.create(model="w2s", prompt="hi", max_tokens=5, extra_body={"search": {"method": "beam"}})
    raise AssertionError("expected a 400")
except openai.BadRequestError as e:
    assert e.status_code == 400
    assert e.body["param"] == "search.method", e.body
    assert "unknown search method" in e.body["message"], e.body

try:
    client.completions.create(model="gpt-4", prompt="hi", max_tokens=5)
    raise AssertionError("expected a 404")
except openai.NotFoundError as e:
    assert e.status_code == 404

print("openai sdk: all checks passed")
