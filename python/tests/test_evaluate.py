"""The evaluation harness from Python: the same resumable results and report as w2s eval."""

import json
import os
import subprocess
import sys

import pytest
import w2s

from conftest import REPO, STRONG_TEMPLATE, TUNED_TEMPLATE


def test_evaluate_writes_resumable_results_with_a_python_gold(strong, small, tmp_path):
    calls = []

    def exclaims(prompt, response):
        calls.append(response)
        return float(response.count("!")) - 0.01 * len(response)

    prompts = [{"id": "a", "prompt": "The film opens on a quiet street, and"},
               {"id": "b", "prompt": "I rented this movie last weekend and"}]
    kwargs = dict(
        prompts=prompts, methods=["sample", "bon:2"], seeds=[1], out=tmp_path / "run",
        strong=strong, tuned=small, untuned=small, strong_template=STRONG_TEMPLATE,
        tuned_template=TUNED_TEMPLATE, threads=2, max_new_tokens=12,
        gold=[exclaims, "vader"],
    )
    summary = w2s.evaluate(**kwargs)
    assert summary["gold"] == "exclaims"
    assert summary["method_order"] == ["sample", "bon:2"]
    assert summary["methods"]["bon:2"]["strong_tokens_per_prompt"] > 0
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and len(calls) == 4
    rec = json.loads(lines[0])
    assert [g["name"] for g in rec["gold"]] == ["exclaims", "vader"]
    assert (tmp_path / "run" / "report.md").exists()
    # A rerun with the same settings finds every line done: no search, no gold call.
    again = w2s.evaluate(**kwargs)
    assert len(calls) == 4 and again == summary
    assert w2s.report(tmp_path / "run") == summary
    # Other settings are refused unless forced.
    with pytest.raises(ValueError, match="max_new_tokens"):
        w2s.evaluate(**{**kwargs, "max_new_tokens": 13})


def test_evaluate_with_a_python_guide_and_bad_input(strong, tmp_path):
    summary = w2s.evaluate(
        ["I rented this movie last weekend and"], methods="sample,cbs:2x2x5", seeds=[1, 2],
        out=tmp_path / "g", strong=strong, guide=lambda p, t, e: -abs(len(t) - 40),
        strong_template=STRONG_TEMPLATE, threads=2, max_new_tokens=10,
    )
    assert summary["prompts"] == 1 and summary["seeds"] == [1, 2]
    rec = json.loads((tmp_path / "g" / "results.jsonl").read_text().splitlines()[-1])
    assert rec["tuned_logprob"] is None and rec["method"] == "cbs:2x2x5"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        w2s.evaluate(["x"], methods=["nope"], out=tmp_path / "bad", strong=strong,
                     guide=lambda p, t, e: 0.0)
    with pytest.raises(ValueError, match="no file"):
        w2s.evaluate("missing.jsonl", out=tmp_path / "bad", strong=strong,
                     guide=lambda p, t, e: 0.0)
    with pytest.raises(ValueError, match="twice"):
        w2s.evaluate(["x"], methods=["sample"], out=tmp_path / "bad", strong=strong,
                     guide=lambda p, t, e: 0.0, gold={"vader": lambda p, r: 0.0, "builtin": "vader"})
    with pytest.raises(ValueError, match="not one of the run's methods"):
        w2s.evaluate(["x"], methods=["sample", "bon:2"], out=tmp_path / "bad", strong=strong,
                     task="instruct", reference="bon:4")
    with pytest.raises(ValueError, match="guide method samples from the tuned model"):
        w2s.evaluate(["x"], methods=["sample", "guide"], out=tmp_path / "bad", strong=strong,
                     guide=lambda p, t, e: 0.0, gold="vader")


def test_the_example_script_runs(strong, small, tmp_path):
    env = {**os.environ, "W2S_EXAMPLE_OUT": str(tmp_path)}
    got = subprocess.run(
        [sys.executable, str(REPO / "python" / "examples" / "compare.py"), "--prompts", "2",
         "--max-new-tokens", "10", "--strong", strong, "--small", small],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert got.returncode == 0, got.stderr
    assert "cbs:2x2x5" in got.stdout and "sample" in got.stdout
    assert (tmp_path / "results.jsonl").exists()


def test_ctrl_c_stops_an_evaluation_and_a_rerun_resumes(strong, small, tmp_path, sentiment_prompts,
                                                       ctrl_c):
    import signal
    import threading
    import time

    kwargs = dict(
        prompts=sentiment_prompts[:6], methods=["sample", "bon:4"], seeds=[1],
        out=tmp_path / "run", strong=strong, tuned=small, untuned=small,
        strong_template=STRONG_TEMPLATE, tuned_template=TUNED_TEMPLATE, threads=2,
        max_new_tokens=40,
    )
    timer = threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        w2s.evaluate(**kwargs)
    took = time.monotonic() - started
    timer.join()
    assert took < 5.0, f"the evaluation stopped {took - 4.0:.2f} s after Ctrl-C"
    results = tmp_path / "run" / "results.jsonl"
    done = results.read_text().splitlines()
    assert 1 <= len(done) < 12
    summary = w2s.evaluate(**kwargs)
    lines = results.read_text().splitlines()
    assert len(lines) == 12 and lines[: len(done)] == done
    assert summary["methods"]["bon:4"]["n"] == 6


def test_guide_check_rescores_a_run_with_candidate_pairs(strong, small, tmp_path):
    prompts = [{"id": "a", "prompt": "The film opens on a quiet street, and"},
               {"id": "b", "prompt": "I rented this movie last weekend and"}]
    w2s.evaluate(prompts, methods=["sample", "bon:3"], seeds=[1, 2], out=tmp_path / "run",
                 strong=strong, tuned=small, untuned=small, strong_template=STRONG_TEMPLATE,
                 tuned_template=TUNED_TEMPLATE, threads=2, max_new_tokens=8, gold="vader")
    pair = {"name": "positive", "tuned": small, "untuned": small, "tuned_template": TUNED_TEMPLATE}
    flipped = {"name": "flipped", "tuned": small, "untuned": small, "untuned_template": TUNED_TEMPLATE}
    got = w2s.guide_check(tmp_path / "run", pairs=[pair, flipped], bins=2, threads=2)
    assert got["gold"] == "vader"
    a, b = got["candidates"]
    assert (a["name"], b["name"]) == ("positive", "flipped")
    assert a["responses"] == b["responses"] > 0
    assert a["pearson"] == pytest.approx(-b["pearson"], abs=1e-9)
    assert len(a["bins"]) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="results.jsonl"):
        w2s.guide_check(tmp_path / "empty", pairs=[pair])
    with pytest.raises(ValueError, match="no candidate"):
        w2s.guide_check(tmp_path / "run")
    with pytest.raises(ValueError, match="bins"):
        w2s.guide_check(tmp_path / "run", pairs=[pair], bins=0)
