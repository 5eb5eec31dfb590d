"""Searches from Python on the real SmolLM2-135M-Instruct / gemma-3-270m files."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import w2s

from conftest import STRONG_TEMPLATE, TUNED_TEMPLATE

PROMPT = "I rented this movie last weekend and"


def test_the_same_seed_gives_the_cli_text(searcher, strong, small, cli):
    out = searcher.generate(PROMPT, method="cbs:2x2x5", seed=3)
    got = subprocess.run(
        [
            str(cli), "generate", "--strong", strong, "--tuned", small, "--untuned", small,
            "--strong-template", STRONG_TEMPLATE, "--tuned-template", TUNED_TEMPLATE,
            "--threads", "2", "--max-new-tokens", "20", "--method", "cbs:2x2x5",
            "--seed", "3", "--json", "--prompt", PROMPT,
        ],
        capture_output=True, text=True, timeout=300, check=True,
    )
    line = json.loads(got.stdout.strip().splitlines()[-1])
    assert out.text == line["text"]
    assert out.score == pytest.approx(line["score"], abs=1e-9)
    assert out.stats.strong_tokens_sampled == line["strong_tokens_sampled"]
    assert [b.text for b in out.beams] == [b["text"] for b in line["beams"]]


def test_an_output_has_beams_stats_and_plain_forms(searcher):
    out = searcher.generate(PROMPT, method="bon:4", seed=1)
    assert len(out.beams) == 4 and out.text == out.beams[0].text
    assert all(a.score >= b.score for a, b in zip(out.beams, out.beams[1:]))
    b = out.beams[0]
    assert b.score == pytest.approx(b.tuned_logprob - b.untuned_logprob)
    assert b.finish in ("eos", "stop", "length") and 1 <= b.strong_tokens <= 20
    assert out.stats.strong_tokens_sampled == sum(x.strong_tokens for x in out.beams)
    assert out.stats.total_time > 0 and out.stats.tuned_tokens_evaluated > 0
    d = out.to_dict()
    assert json.loads(json.dumps(d))["beams"][0]["text"] == out.text
    rows = w2s.to_records([out])
    assert rows[0]["text"] == out.text and rows[0]["method"] == "bon:4"


def test_a_batch_with_a_progress_bar_becomes_a_dataframe(searcher, capfd):
    pd = pytest.importorskip("pandas")  # scripts/install-python installs it
    outs = searcher.generate_batch([PROMPT, "The film opens on a quiet street, and"],
                                   method="sample", seed=2, progress=True)
    assert "2/2" in capfd.readouterr().err  # tqdm's bar (or the plain line) on stderr
    df = w2s.to_dataframe(outs)
    assert isinstance(df, pd.DataFrame) and len(df) == 2
    assert list(df["text"]) == [o.text for o in outs]
    assert {"score", "strong_tokens_sampled", "total_time", "finish"} <= set(df.columns)


def test_a_python_scorer_with_the_local_numbers_reproduces_the_local_search(strong, small):
    local = w2s.Searcher(
        strong=strong, tuned=small, untuned=small, strong_template=STRONG_TEMPLATE,
        tuned_template=TUNED_TEMPLATE, threads=2, max_new_tokens=15,
    )
    calls = []

    class Wrapped:
        def __init__(self, template):
            self.inner = w2s.LocalScorer(small, template=template, threads=2)

        def score(self, prompt, texts, ended):
            calls.append(len(texts))
            return self.inner.score(prompt, texts, ended)

    python = w2s.Searcher(
        strong=strong, tuned=Wrapped(TUNED_TEMPLATE), untuned=Wrapped(None),
        strong_template=STRONG_TEMPLATE, threads=2, max_new_tokens=15,
    )
    for prompt in ["The film opens on a quiet street, and", PROMPT]:
        a = local.generate(prompt, method="cbs:2x2x5", seed=7)
        b = python.generate(prompt, method="cbs:2x2x5", seed=7)
        assert a.text == b.text
        assert [x.text for x in a.beams] == [x.text for x in b.beams]
        # The numbers agree to llama.cpp's batch noise only: one text scored in a batch
        # of 8 copies gets values up to 0.7 nats apart on this model, and the search
        # scores rows incrementally in other batches than the one-pass Python scorer.
        for x, y in zip(a.beams, b.beams):
            assert x.tuned_logprob == pytest.approx(y.tuned_logprob, rel=0.03)
            assert x.untuned_logprob == pytest.approx(y.untuned_logprob, rel=0.03)
    assert calls and max(calls) == 4  # W*K rows per call


def test_a_python_guide_that_rewards_a_word_makes_it_more_frequent(strong, sentiment_prompts):
    word = "movie"
    seen = []

    def guide(prompt, text, ended):
        seen.append(text)
        return float(text.lower().count(word))

    s = w2s.Searcher(strong=strong, guide=guide, strong_template=STRONG_TEMPLATE,
                     threads=2, max_new_tokens=30)
    prompts = sentiment_prompts[:4]
    searched = s.generate_batch(prompts, method="cbs:3x3x5", seed=1)
    sampled = s.generate_batch(prompts, method="sample", seed=1)
    count = lambda outs: sum(o.text.lower().count(word) for o in outs)
    assert count(searched) > count(sampled) and count(searched) >= len(prompts), (
        count(searched), count(sampled))
    assert seen, "the guide was never called"
    b = searched[0].beams[0]
    assert b.tuned_logprob is None and b.untuned_logprob is None
    assert b.score == float(b.text.lower().count(word))
    assert searched[0].stats.guide_time > 0


def test_bad_arguments_raise_the_right_exceptions(strong, small, searcher):
    with pytest.raises(ValueError, match="unknown search method"):
        searcher.generate(PROMPT, method="beam")
    with pytest.raises(ValueError, match="at least 1"):
        searcher.generate(PROMPT, method="cbs:0x2x5")
    with pytest.raises(ValueError, match="prompt is empty"):
        searcher.generate("   ")
    with pytest.raises(ValueError, match="seed"):
        searcher.generate(PROMPT, seed=-1)
    with pytest.raises(TypeError, match="unknown setting"):
        w2s.Searcher(strong=strong, tuned=small, untuned=small, temprature=0.5)
    with pytest.raises(ValueError, match="temperature"):
        w2s.Searcher(strong=strong, tuned=small, untuned=small, temperature=-1.0)
    with pytest.raises(ValueError, match="no tuned model"):
        w2s.Searcher(strong=strong, untuned=small)
    with pytest.raises(ValueError, match="nowhere.gguf"):
        w2s.Searcher(strong="/nowhere.gguf", tuned=small, untuned=small)
    with pytest.raises(ValueError, match="replaces the tuned / untuned pair"):
        w2s.Searcher(strong=strong, tuned=small, guide=lambda p, t, e: 0.0)
    with pytest.raises(TypeError, match="score"):
        w2s.Searcher(strong=strong, tuned=42, untuned=small)
    with pytest.raises(w2s.W2sError, match="strong model"):
        w2s.Searcher(strong="http://127.0.0.1:9/v1#nothing", tuned=small, untuned=small,
                     max_new_tokens=5).generate(PROMPT, method="sample")


def test_a_guide_that_raises_or_misbehaves_is_reported(strong):
    class Boom(Exception):
        pass

    def raising(prompt, text, ended):
        raise Boom("no value today")

    s = w2s.Searcher(strong=strong, guide=raising, threads=2, max_new_tokens=5)
    with pytest.raises(Boom, match="no value today"):
        s.generate(PROMPT, method="bon:2")

    class Short:
        def score(self, prompt, texts, ended):
            return [0.0]

    s = w2s.Searcher(strong=strong, guide=Short(), threads=2, max_new_tokens=5)
    with pytest.raises(w2s.W2sError, match="1 values for 2"):
        s.generate(PROMPT, method="bon:2")
    s = w2s.Searcher(strong=strong, guide=lambda p, t, e: float("nan"), threads=2, max_new_tokens=5)
    with pytest.raises(w2s.W2sError, match="NaN"):
        s.generate(PROMPT, method="bon:2")


def test_ctrl_c_stops_a_long_search_within_a_second(searcher, ctrl_c):
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        # About a minute of work on two cores.
        searcher.generate(PROMPT * 20, method="bon:64", seed=1)
    took = time.monotonic() - started
    timer.join()
    print(f"stopped {took - 1.0:.3f} s after SIGINT")
    assert took < 2.0, f"the search stopped {took - 1.0:.2f} s after Ctrl-C"
    # The searcher still works afterwards.
    assert searcher.generate(PROMPT, method="sample", seed=1).text


def test_searches_on_two_searchers_in_two_threads(strong, small, searcher):
    other = w2s.Searcher(strong=strong, tuned=small, untuned=small,
                         strong_template=STRONG_TEMPLATE, tuned_template=TUNED_TEMPLATE,
                         threads=2, max_new_tokens=20)
    alone = [searcher.generate(PROMPT, method="cbs:2x2x5", seed=s).text for s in (1, 2)]
    results = {}
    ticks = []

    def run(name, s, seed):
        results[name] = s.generate(PROMPT, method="cbs:2x2x5", seed=seed).text

    threads = [threading.Thread(target=run, args=("a", searcher, 1)),
               threading.Thread(target=run, args=("b", other, 2))]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        ticks.append(time.monotonic())  # the GIL is free while they search
        time.sleep(0.01)
    assert [results["a"], results["b"]] == alone
    assert len(ticks) > 10


def test_a_pooled_batch_shares_one_strong_context_and_is_seeded(searcher):
    prompts = [PROMPT, "The film opens on a quiet street, and", "Halfway through, the hero"]
    a = searcher.generate_batch(prompts, method="cbs:2x2x5", seed=4, parallel=3, pooled=True)
    b = searcher.generate_batch(prompts, method="cbs:2x2x5", seed=4, parallel=3, pooled=True)
    assert [o.prompt for o in a] == prompts
    assert [o.text for o in a] == [o.text for o in b]
    for o in a:
        assert o.text.strip()
        assert o.score == pytest.approx(o.beams[0].tuned_logprob - o.beams[0].untuned_logprob)
        assert len(o.beams) == 4  # W * K rows


def test_a_batch_with_searches_in_flight_equals_one_at_a_time(searcher):
    prompts = [PROMPT, "The film opens on a quiet street, and", "Halfway through, the hero", "At the end"]
    one = searcher.generate_batch(prompts, method="cbs:2x2x5", seed=4, parallel=1)
    many = searcher.generate_batch(prompts, method="cbs:2x2x5", seed=4, parallel=3)
    assert [o.prompt for o in many] == prompts
    assert [o.text for o in many] == [o.text for o in one]
    assert [o.score for o in many] == [o.score for o in one]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="parallel"):
            searcher.generate_batch(prompts, parallel=bad)
    with pytest.raises(ValueError, match="more than 64"):
        searcher.generate_batch(prompts, parallel=65)
    assert searcher.generate_batch([], parallel=4) == []


def test_a_trace_matches_the_cli_and_draws_a_page(searcher, strong, small, cli, tmp_path):
    out = searcher.generate(PROMPT, method="cbs:2x2x5", seed=3, trace=True)
    plain = searcher.generate(PROMPT, method="cbs:2x2x5", seed=3)
    assert plain.trace is None and out.text == plain.text
    steps = out.trace["steps"]
    assert len(steps) == out.stats.chunks
    assert all(sum(r["kept"] for r in s["rows"]) <= 2 for s in steps)
    cli_trace = tmp_path / "cli.jsonl"
    subprocess.run(
        [
            str(cli), "generate", "--strong", strong, "--tuned", small, "--untuned", small,
            "--strong-template", STRONG_TEMPLATE, "--tuned-template", TUNED_TEMPLATE,
            "--threads", "2", "--max-new-tokens", "20", "--method", "cbs:2x2x5",
            "--seed", "3", "--trace", str(cli_trace), "--prompt", PROMPT,
        ],
        capture_output=True, text=True, timeout=300, check=True,
    )
    line = json.loads(cli_trace.read_text())
    assert line["text"] == out.text
    assert [[r["chunk"] for r in s["rows"]] for s in line["trace"]["steps"]] == [
        [r["chunk"] for r in s["rows"]] for s in steps
    ]
    path = tmp_path / "py.jsonl"
    assert w2s.write_traces([out], path) == 1
    assert json.loads(path.read_text())["trace"] == out.trace
    html = tmp_path / "page.html"
    n = w2s.trace_html([out], html, gold="vader")
    assert n == sum(len(s["rows"]) for s in steps)
    assert "w2s search trace" in html.read_text()
    with pytest.raises(ValueError, match="trace=True"):
        w2s.write_traces([plain], path)
    with pytest.raises(ValueError, match="vader"):
        w2s.trace_html(path, html, gold="judge")


def test_a_weighted_guide_from_python(strong, small):
    fluent = {"name": "fluent", "weight": 0.5, "tuned": small, "untuned": small,
              "tuned_template": "chat:Continue this text fluently.||{prompt}"}
    s = w2s.Searcher(strong=strong, tuned=small, untuned=small, strong_template=STRONG_TEMPLATE,
                     tuned_template=TUNED_TEMPLATE, threads=2, max_new_tokens=10, guides=[fluent])
    out = s.generate(PROMPT, method="cbs:2x2x5", seed=1, trace=True)
    assert [t["name"] for t in out.trace["terms"]] == ["main", "fluent"]
    for row in (r for st in out.trace["steps"] for r in st["rows"]):
        assert row["value"] == pytest.approx(row["terms"][0] + 0.5 * row["terms"][1], abs=1e-9)
    for bad, err in [
        ([{"weight": 1.0, "tuned": small}], ValueError),
        ([{"weight": "x", "tuned": small, "untuned": small}], TypeError),
        ([{"weight": 1.0, "tuned": small, "untuned": small, "colour": 1}], TypeError),
        (["not a dict"], TypeError),
    ]:
        with pytest.raises(err):
            w2s.Searcher(strong=strong, tuned=small, untuned=small, guides=bad)
    with pytest.raises(ValueError, match="finite"):
        w2s.Searcher(strong=strong, tuned=small, untuned=small,
                     guides=[{"weight": float("nan"), "tuned": small, "untuned": small}])
