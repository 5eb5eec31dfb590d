"""Preference pairs labelled by the pairwise judge (w2s.train.make_pairs(gold="pairwise")),
with the real SmolLM2 file as sampler and judge: no PyTorch needed."""

import json

import pytest

import w2s
from w2s import train as wt

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    {"id": "a", "prompt": "Name a fruit that is yellow."},
    {"id": "b", "prompt": "Give one tip for sleeping well."},
]


def test_the_judge_compares_in_both_orders():
    judge = w2s.PairJudge(MODEL, threads=1)
    assert judge.path.endswith(".gguf")
    first, second, mass = judge.compare("What is 2 + 2?", "4", "The moon is made of cheese.")
    assert 0.0 <= first <= 1.0 and 0.0 <= second <= 1.0
    assert 0.0 < mass <= 1.0 + 1e-9
    # The same pair with the responses swapped is the same two prompts, decoded in the
    # other order of one batch (which rounds differently).
    b_first, b_second, _ = judge.compare("What is 2 + 2?", "The moon is made of cheese.", "4")
    assert b_first == pytest.approx(1.0 - second, abs=0.03)
    assert b_second == pytest.approx(1.0 - first, abs=0.03)


def test_a_missing_judge_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no-such-judge.gguf does not exist"):
        w2s.PairJudge(str(tmp_path / "no-such-judge.gguf"), threads=1)


def test_pairwise_pairs_follow_the_judge_and_resume(tmp_path):
    out = tmp_path / "pairs.jsonl"
    res = wt.make_pairs(PROMPTS, out, model=MODEL, template="chat:{prompt}", samples=3,
                        pairs_per_prompt=1, min_margin=0.0, gold="pairwise", judge=MODEL,
                        max_new_tokens=6, threads=1)
    verdicts = [json.loads(x) for x in open(tmp_path / "pairs.jsonl.samples" / "judged.jsonl")]
    # Three samples per prompt: three comparisons each (identical responses are not judged).
    assert 1 <= len(verdicts) <= 6
    assert res["judge"]["comparisons"] == len(verdicts)
    by_key = {(v["prompt_id"], v["a"], v["b"]): v for v in verdicts}
    pairs = [json.loads(x) for x in open(out)]
    assert pairs and all(p["gold"] == "pairwise" for p in pairs)
    for p in pairs:
        assert p["chosen_gold"] >= p["rejected_gold"]
        assert 0.0 <= p["rejected_gold"] <= p["chosen_gold"] <= 1.0
    # A response's gold is its mean probability of winning its comparisons.
    samples = [json.loads(x) for x in open(tmp_path / "pairs.jsonl.samples" / "results.jsonl")]
    for pid in ("a", "b"):
        seeds = sorted(r["seed"] for r in samples if r["prompt_id"] == pid)
        texts = {r["seed"]: r["response"] for r in samples if r["prompt_id"] == pid}
        wins = {s: [] for s in seeds}
        for i, a in enumerate(seeds):
            for b in seeds[i + 1:]:
                v = by_key.get((pid, a, b))
                if v is None:
                    assert texts[a] == texts[b]
                    p = 0.5
                else:
                    p = 0.5 * (v["p_a_first"] + v["p_a_second"])
                wins[a].append(p)
                wins[b].append(1 - p)
        best = max(seeds, key=lambda s: (sum(wins[s]), -s))
        chosen = [p for p in pairs if p["prompt_id"] == pid]
        if chosen:
            assert chosen[0]["chosen"] == texts[best]
            assert chosen[0]["chosen_gold"] == pytest.approx(sum(wins[best]) / 2)
    # A rerun judges nothing again.
    again = wt.make_pairs(PROMPTS, out, model=MODEL, template="chat:{prompt}", samples=3,
                          pairs_per_prompt=1, min_margin=0.0, gold="pairwise", judge=MODEL,
                          max_new_tokens=6, threads=1)
    assert again["judge"]["comparisons"] == len(verdicts)
    assert len(open(tmp_path / "pairs.jsonl.samples" / "judged.jsonl").readlines()) == len(verdicts)
    assert [json.loads(x) for x in open(out)] == pairs
