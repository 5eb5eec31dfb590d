"""scripts/instruct-diagnosis: its figures on result lines whose answers are known, and its
refusals. (The script reads `w2s eval --task instruct` output; these lines are written
here so that every figure can be worked out by hand.)"""

import importlib.machinery
import importlib.util
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "instruct-diagnosis"


def load_script():
    loader = importlib.machinery.SourceFileLoader("instruct_diagnosis", str(SCRIPT))
    spec = importlib.util.spec_from_loader("instruct_diagnosis", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def line(method, prompt, response, guide, first, second, finish="eos", identical=False):
    verdict = (first + second) / 2
    return {
        "method": method, "seed": 1, "prompt_id": prompt, "response": response,
        "finish": finish, "guide": guide,
        "gold": [{"name": "pairwise", "value": verdict}],
        "pair": {"reference": "sample", "first": first, "second": second,
                 "identical": identical},
    }


def rows():
    return [
        line("sample", "a", "x" * 10, 1.0, 0.5, 0.5, identical=True),
        line("sample", "b", "x" * 20, 2.0, 0.5, 0.5, finish="length", identical=True),
        line("sample", "c", "x" * 30, 3.0, 0.5, 0.5, identical=True),
        # margins 1, 2, 3; length differences +10, +20, +30
        line("cbs:2x2x30", "a", "y" * 20, 2.0, 0.7, 0.9),
        line("cbs:2x2x30", "b", "y" * 40, 4.0, 0.4, 0.6),  # the two orders disagree
        line("cbs:2x2x30", "c", "y" * 60, 6.0, 0.8, 0.6, finish="length"),
        # the same response as the reference: never judged, left out
        line("guide", "a", "x" * 10, 1.0, 0.5, 0.5, identical=True),
        line("guide", "b", "z" * 5, 0.0, 0.2, 0.4),
    ]


def test_figures_match_the_hand_computed_ones():
    d = load_script().diagnose(rows())
    assert d["reference"] == "sample"
    assert list(d["methods"]) == ["cbs:2x2x30", "guide"]
    cbs = d["methods"]["cbs:2x2x30"]
    assert cbs["pairs"] == 3
    # verdicts 0.8, 0.5, 0.7
    assert cbs["decisiveness"] == pytest.approx((0.3 + 0.0 + 0.2) / 3)
    assert cbs["mean_margin"] == pytest.approx(2.0)
    # margin and length difference are both 1:2:3, so r = 1; length differences 10, 20, 30
    # against verdicts 0.8, 0.5, 0.7: r = -0.1 / sqrt(2 * 0.04667) by hand
    assert cbs["r_margin_length"] == pytest.approx(1.0)
    assert cbs["r_length_verdict"] == pytest.approx(-0.1 / math.sqrt(2 * 0.0466666667), abs=1e-6)
    # first 0.7, 0.4, 0.8 against second 0.9, 0.6, 0.6: r = 0.02 / sqrt(0.0866667 * 0.06)
    assert cbs["r_first_second"] == pytest.approx(0.02 / math.sqrt(0.0866666667 * 0.06), abs=1e-6)
    assert cbs["ended"] == {"pairs": 2, "verdict": pytest.approx(0.65)}
    assert cbs["cut"] == {"pairs": 1, "verdict": pytest.approx(0.7)}
    # prompt b's reference was cut, its response ended
    assert cbs["both_ended"] == {"pairs": 1, "verdict": pytest.approx(0.8)}
    assert cbs["only_reference_cut"] == {"pairs": 1, "verdict": pytest.approx(0.5)}
    guide = d["methods"]["guide"]
    assert guide["pairs"] == 1
    assert math.isnan(guide["r_first_second"])  # one pair: no correlation
    # the guide alone is left out of the pooled terciles: one search pair in each
    assert [(t["pairs"], t["low"], t["verdict"]) for t in d["terciles"]] == [
        (1, 1.0, pytest.approx(0.8)), (1, 2.0, pytest.approx(0.5)), (1, 3.0, pytest.approx(0.7))]
    text = load_script().render("run", d)
    assert "| `cbs:2x2x30` | 3 | 0.167 |" in text


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_bad_folders_get_one_line_and_exit_2(tmp_path):
    done = run(tmp_path)
    assert done.returncode == 2
    assert "results.jsonl: no such file" in done.stderr

    (tmp_path / "results.jsonl").write_text('{"method": "sample"}\nnot json\n')
    done = run(tmp_path)
    assert done.returncode == 2
    assert ":2: not JSON" in done.stderr

    sentiment = {"method": "sample", "seed": 1, "prompt_id": "a", "response": "r",
                 "gold": [{"name": "vader", "value": 0.3}]}
    (tmp_path / "results.jsonl").write_text(json.dumps(sentiment) + "\n")
    done = run(tmp_path)
    assert done.returncode == 2
    assert "no pairwise verdicts" in done.stderr


def test_reads_the_published_runs():
    for box in ("instruct-whitebox", "instruct-blackbox"):
        done = run(REPO / "docs" / "results" / box)
        assert done.returncode == 0, done.stderr
        assert "### The judge" in done.stdout and "`cbs:4x4x5`" in done.stdout
