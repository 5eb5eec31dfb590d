"""w2s.train on a tiny run with the real SmolLM2 file: pairs sampled by w2s and scored by
VADER, a few DPO steps through TRL, the export to GGUF loaded back by w2s's own scorer and
used as the tuned half of a search. Needs the `train` extra (scripts/test-python runs it
in the PyTorch venv of scripts/install-vllm)."""

import json
import os

import pytest

pytest.importorskip("trl")

import w2s  # noqa: E402
from w2s import train as wt  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    {"id": "a", "prompt": "I saw this film at a small festival and"},
    {"id": "b", "prompt": "The supporting cast"},
    {"id": "c", "prompt": "This musical"},
    {"id": "d", "prompt": "The twist near the end"},
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """pairs -> train (4 steps, 1 prompt held out) -> export (Q8_0) of the trained model and
    of the untrained twin, done once for the module's tests."""
    d = tmp_path_factory.mktemp("train")
    pairs = wt.make_pairs(PROMPTS, d / "pairs.jsonl", model=MODEL, samples=4,
                          pairs_per_prompt=2, min_margin=0.0, max_new_tokens=8, threads=1)
    summary = wt.train(d / "pairs.jsonl", d / "run", model=MODEL, max_steps=4, batch_size=2,
                       holdout=0.25, eval_every=2, threads=1)
    tuned = wt.export(d / "run" / "model", d / "tuned.gguf", quantize="q8_0")
    untuned = wt.export(MODEL, d / "untuned.gguf", quantize="q8_0")
    return d, pairs, summary, tuned, untuned


def test_pairs_are_ordered_by_the_gold(run):
    d, pairs, _, _, _ = run
    rows = wt.read_pairs(d / "pairs.jsonl")
    assert len(rows) == pairs["pairs"] > 0
    for p in rows:
        assert p["chosen_gold"] >= p["rejected_gold"]
        assert p["chosen"] != p["rejected"]
        assert p["gold"] == "vader"
        assert p["prompt"] in {q["prompt"] for q in PROMPTS}
    # The samples are a resumable evaluation: running again samples nothing new.
    again = wt.make_pairs(PROMPTS, d / "pairs.jsonl", model=MODEL, samples=4,
                          pairs_per_prompt=2, min_margin=0.0, max_new_tokens=8, threads=1)
    assert again["pairs"] == pairs["pairs"]
    assert (d / "pairs.jsonl").read_text() == "".join(
        json.dumps(p, ensure_ascii=False) + "\n" for p in rows)


def test_training_logs_held_out_loss_and_resumes(run):
    d, _, summary, _, _ = run
    assert summary["steps"] == 4
    assert summary["held_out_pairs"] > 0 and summary["train_pairs"] > 0
    assert 0.0 <= summary["held_out"]["eval_rewards/accuracies"] <= 1.0
    log = [json.loads(line) for line in open(d / "run" / "log.jsonl")]
    assert any("eval_loss" in r for r in log) and any("loss" in r for r in log)
    assert (d / "run" / "curves.svg").read_text().startswith("<svg")
    assert (d / "run" / "model" / "w2s-trained-from.json").is_file()
    # Two more steps continue from the last checkpoint instead of starting again.
    more = wt.train(d / "pairs.jsonl", d / "run", model=MODEL, max_steps=6, batch_size=2,
                    holdout=0.25, eval_every=2, threads=1)
    assert more["steps"] == 6
    assert more["seconds_per_pair_epoch"] is None  # resumed: no per-pair time claimed


def test_export_keeps_the_tokenizer_and_searches(run):
    d, _, _, tuned, untuned = run
    assert tuned["tokenizer_checked_against"] and untuned["tokenizer_checked_against"]
    assert not list(d.glob("*.partial"))
    # The untrained twin scores like the shipped file, within Q8_0-against-Q4_1 rounding.
    a = w2s.LocalScorer(MODEL, threads=1).score(PROMPTS[0]["prompt"], [" it was great."], [False])
    b = w2s.LocalScorer(str(d / "untuned.gguf"), threads=1).score(
        PROMPTS[0]["prompt"], [" it was great."], [False])
    assert abs(a[0] - b[0]) < 0.5
    s = w2s.Searcher("gemma-3-270m", str(d / "tuned.gguf"), str(d / "untuned.gguf"),
                     max_new_tokens=8, threads=1)
    out = s.generate(PROMPTS[0]["prompt"], method="cbs:2x2x4", seed=1)
    assert out.text and out.beams[0].score == max(b.score for b in out.beams)
    check = wt.check(d / "pairs.jsonl", tuned=d / "tuned.gguf", untuned=d / "untuned.gguf",
                     threads=1)
    assert check["pairs"] > 0 and 0.0 <= check["pair_accuracy"] <= 1.0
    assert check["responses_with_gold"] == 2 * check["pairs"]


def test_export_refuses_an_existing_file_and_leaves_nothing_on_failure(run, tmp_path):
    d = run[0]
    with pytest.raises(wt.TrainError, match="already exists"):
        wt.export(MODEL, d / "untuned.gguf")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(wt.TrainError, match="convert_hf_to_gguf.py failed"):
        wt.export(broken, tmp_path / "out.gguf")
    assert os.listdir(tmp_path) == ["broken"]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a", "chosen": "x"}', "field 'rejected' is missing"),
        ('{"prompt": "a", "chosen": "x", "rejected": "x"}', "the same text"),
        ('{"prompt": "a", "chosen": 3, "rejected": "x"}', "field 'chosen'"),
        ("not json", "not JSON"),
    ],
)
def test_bad_pairs_are_refused_with_their_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "chosen": "x", "rejected": "y"}\n' + line + "\n")
    with pytest.raises(wt.TrainError, match=f"line 2: .*{message}"):
        wt.read_pairs(path)


def test_the_command_line_reports_bad_input_in_one_line(tmp_path, capsys):
    assert wt.main(["train", "--pairs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read the pairs" in err[0]
    assert wt.main(["export", "no-such-model", str(tmp_path / "x.gguf")]) == 2
    assert "no such folder or model file" in capsys.readouterr().err


def test_a_chat_template_on_a_model_without_one_is_refused(tmp_path):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": q["prompt"], "chosen": " good", "rejected": " bad"})
                             + "\n" for q in PROMPTS))
    with pytest.raises(wt.TrainError, match="needs a chat template"):
        wt.train(pairs, tmp_path / "o", model="gemma-3-270m",
                 template="chat:Write a review.||{prompt}", max_steps=1, holdout=0.25)
    assert not (tmp_path / "o" / "model").exists()
