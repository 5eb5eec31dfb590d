"""Weak-to-strong search from Python.

A large ("strong") model proposes chunks of text; a beam search keeps the chunks that a
small tuned model likes more than its small untuned twin (or that any guide you pass
values more). The search runs in Rust on llama.cpp or on any OpenAI-compatible engine;
this package only translates.

    import w2s
    s = w2s.Searcher(strong="gemma-3-270m", tuned="smollm2-135m-instruct",
                     untuned="smollm2-135m-instruct",
                     strong_template="Here is a movie review from imdb: {prompt}",
                     tuned_template="chat:Write a very positive movie review.||{prompt}",
                     untuned_template="chat:Write a very negative movie review.||{prompt}")
    out = s.generate("I rented this movie last weekend and", method="cbs:4x4x5", seed=1)
    print(out.text, out.beams[0].score, out.stats.strong_tokens_sampled)

Every model may be a GGUF file, a name fetched by the repository's scripts/fetch-models,
or a remote engine as "URL#MODEL". The tuned and untuned models may also be Python
scorers, and `guide=` replaces the pair with any Python function (see `Scorer`,
`GuideFn`). Bad settings raise ValueError, backend failures `W2sError`, Ctrl-C
cancels a running search and raises KeyboardInterrupt.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    runtime_checkable,
)

from . import _w2s
from ._w2s import Beam, LocalScorer, Output, PairJudge, Stats, W2sError

__version__ = _w2s.__version__

__all__ = [
    "Searcher",
    "Output",
    "Beam",
    "Stats",
    "LocalScorer",
    "PairJudge",
    "W2sError",
    "Scorer",
    "GuideFn",
    "evaluate",
    "report",
    "to_records",
    "write_traces",
    "guide_check",
    "trace_html",
    "to_dataframe",
]


@runtime_checkable
class Scorer(Protocol):
    """A model in the tuned or untuned role, or a whole guide: one value per text.

    `prompt` is the prompt as the user wrote it (apply your own template), `texts` the
    whole responses so far, `ended[i]` whether response i has ended (a model then adds
    its end-of-sequence term). A scorer returns log-probabilities; a guide returns any
    value, higher is better.
    """

    def score(self, prompt: str, texts: List[str], ended: List[bool]) -> Sequence[float]: ...


#: A guide or scorer given as a function of one response: f(prompt, text, ended) -> float.
GuideFn = Callable[[str, str, bool], float]

ScorerLike = Union[str, Scorer, GuideFn]
GoldLike = Union[str, Callable[[str, str], float]]


def _label(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return f"python:{module}.{name}"


def _batched(obj: Any, what: str) -> Callable[[str, List[str], List[bool]], List[float]]:
    """One callable f(prompt, texts, ended) -> list[float] for a scorer or guide."""
    if hasattr(obj, "score") and callable(obj.score):
        method = obj.score

        def call(prompt: str, texts: List[str], ended: List[bool]) -> List[float]:
            return [float(v) for v in method(prompt, texts, ended)]

        return call
    if callable(obj):

        def each(prompt: str, texts: List[str], ended: List[bool]) -> List[float]:
            return [float(obj(prompt, t, e)) for t, e in zip(texts, ended)]

        return each
    raise TypeError(
        f"{what} must be a model name, a GGUF path, 'URL#MODEL', an object with "
        f"score(prompt, texts, ended), or a function f(prompt, text, ended); got {type(obj).__name__}"
    )


def _settings(
    strong: Optional[str],
    tuned: Optional[ScorerLike],
    untuned: Optional[ScorerLike],
    guide: Optional[Union[Scorer, GuideFn]],
    options: Mapping[str, Any],
) -> Tuple[Dict[str, Any], Tuple[list, Optional[tuple]]]:
    # The native module reads the dict into the library's run settings (an unknown key
    # raises TypeError there), so the settings are listed once, in Rust.
    settings: Dict[str, Any] = dict(options)
    if settings.get("config") is not None:
        settings["config"] = os.fspath(settings["config"])
    if isinstance(settings.get("stop"), str):
        settings["stop"] = [settings["stop"]]
    if settings.get("guides") is not None:
        settings["guides"] = [_guide_table(g) for g in settings["guides"]]
    if strong is not None and not isinstance(strong, str):
        raise TypeError("strong must be a model name, a GGUF path or 'URL#MODEL' (a str)")
    settings["strong"] = os.fspath(strong) if strong is not None else None
    scorers = []
    for role, model in (("tuned", tuned), ("untuned", untuned)):
        if model is None or isinstance(model, (str, os.PathLike)):
            settings[role] = os.fspath(model) if model is not None else None
            continue
        if settings.get(f"{role}_template") is not None:
            raise ValueError(
                f"{role}_template is for a model w2s runs; the Python {role} scorer applies its own template"
            )
        settings[role] = None
        scorers.append((role, _label(model), _batched(model, role)))
    guide_part = None
    if guide is not None:
        guide_part = (_label(guide), _batched(guide, "guide"))
    return settings, (scorers, guide_part)


_GUIDE_KEYS = ("name", "weight", "tuned", "untuned", "tuned_template", "untuned_template")


def _guide_table(g: Any) -> Dict[str, Any]:
    """One more pair of a weighted guide, as a dict with the CLI's `--guide` keys."""
    if not isinstance(g, Mapping):
        raise TypeError(
            "each of guides must be a dict such as {'weight': 0.5, 'tuned': MODEL, 'untuned': MODEL}, "
            f"got {type(g).__name__}"
        )
    unknown = sorted(set(g) - set(_GUIDE_KEYS))
    if unknown:
        raise TypeError(f"unknown guide key(s): {', '.join(unknown)}; known: {', '.join(_GUIDE_KEYS)}")
    for key in ("weight", "tuned", "untuned"):
        if g.get(key) is None:
            raise ValueError(f"a guide needs {key!r}: {dict(g)!r}")
    if isinstance(g["weight"], bool) or not isinstance(g["weight"], (int, float)):
        raise TypeError(f"a guide's weight must be a number, got {g['weight']!r}")
    t = {k: g.get(k) for k in _GUIDE_KEYS}
    t["weight"] = float(t["weight"])
    for key in ("tuned", "untuned"):
        t[key] = os.fspath(t[key])
    return t


class Searcher:
    """The three models of a weak-to-strong search, loaded once.

    Args:
        strong: the strong model (GGUF file, fetched name, or "URL#MODEL").
        tuned, untuned: the small pair; each a model like `strong`, a `Scorer`
            object, or a function f(prompt, text, ended) -> log-probability.
        guide: instead of the pair, any `Scorer` / function valuing a response so far.
        guides: more pairs weighed into the guide, each a dict with the keys of the
            CLI's --guide table ("weight", "tuned", "untuned", optional "name",
            "tuned_template", "untuned_template"); the guide is then beta * (pair) +
            sum of weight * (pair).
        chunk_entropy, chunk_min: adaptive chunk ends, as the CLI's --chunk-entropy /
            --chunk-min (a remote strong model's engine must return top log-probs).
        config: a TOML file with any of these settings (as `w2s --config`).
        strong_template, tuned_template, untuned_template: how each model is given
            the prompt: "... {prompt} ..." or "chat:USER||ASSISTANT-PREFIX".
        threads, gpu_layers, max_new_tokens, beta, temperature, top_k, top_p, stop:
            as the CLI's flags of the same names.

    Searches on one Searcher run one at a time; two Searchers in two threads run at once
    (they share loaded model files).
    """

    def __init__(
        self,
        strong: Optional[str] = None,
        tuned: Optional[ScorerLike] = None,
        untuned: Optional[ScorerLike] = None,
        *,
        guide: Optional[Union[Scorer, GuideFn]] = None,
        **settings: Any,
    ) -> None:
        s, parts = _settings(strong, tuned, untuned, guide, settings)
        self._native = _w2s.Searcher(s, parts)

    def generate(self, prompt: str, method: str = "cbs", seed: int = 1, trace: bool = False) -> Output:
        """Searches for a response to `prompt`.

        `method`: "cbs" (the settings' W, K, L; 4x4x5 by default), "cbs:WxKxL",
        "bon:N" (Best-of-N), or "sample". `trace=True` records every step in
        `Output.trace` (see `write_traces` and `trace_html`).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        return self._native.generate(prompt, method, seed, bool(trace))

    def generate_batch(
        self,
        prompts: Iterable[str],
        method: str = "cbs",
        seed: int = 1,
        progress: bool = False,
        parallel: Optional[int] = None,
        trace: bool = False,
        pooled: bool = False,
    ) -> List[Output]:
        """`generate` for each prompt; the outputs come back in the prompts' order.
        `parallel`: searches in flight at once, each on an engine of its own over the
        shared models (default: 1 with a local strong model, whose CPU is the bottleneck;
        8 with a remote one, whose searches mostly wait on the engine; at most 64).
        `progress=True` shows a bar counting finished searches (tqdm if installed, else a
        line on stderr). `pooled=True` (a local strong model guided by the tuned / untuned
        pair): the searches in flight share one context of the strong model, their rows
        sampled in one decode per token, as `w2s generate --parallel N` does; batched
        kernels round a little differently, so an answer may differ from the same seed
        run alone."""
        prompts = list(prompts)
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"prompts must be str, got {type(p).__name__}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if parallel is not None and (
            not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1
        ):
            raise ValueError(f"parallel must be an integer >= 1, got {parallel!r}")
        if not prompts:
            return []
        bar = _progress(len(prompts), method) if progress else None
        try:
            outs = self._native.generate_batch(
                prompts, method, seed, parallel, bar.update if bar is not None else None, bool(trace),
                bool(pooled),
            )
        finally:
            if bar is not None:
                bar.close()
        return outs

    def __repr__(self) -> str:
        return repr(self._native)


class _LineBar:
    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n, self.t0 = total, desc, 0, time.monotonic()

    def update(self, k: int) -> None:
        self.n += k
        rate = self.n / max(time.monotonic() - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} ({rate:.2f}/s)")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def _progress(total: int, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm  # type: ignore[import-not-found]

        return tqdm(total=total, desc=desc)
    except ImportError:
        return _LineBar(total, desc)


def _golds(gold: Union[None, GoldLike, Sequence[GoldLike], Mapping[str, GoldLike]]):
    """Built-in gold names ("vader", "judge", "pairwise") and Python gold rewards (name, f)."""
    if gold is None:
        return None, []
    items: List[Tuple[Optional[str], GoldLike]]
    if isinstance(gold, Mapping):
        items = list(gold.items())
    elif isinstance(gold, (str, bytes)) or callable(gold):
        items = [(None, gold)]
    else:
        items = [(None, g) for g in gold]
    builtin: List[str] = []
    custom: List[Tuple[str, Callable[[str, str], float]]] = []
    for name, g in items:
        if isinstance(g, str):
            builtin.append(g)
        elif callable(g):
            label = name or getattr(g, "__name__", None) or type(g).__name__
            custom.append((label, lambda p, r, g=g: float(g(p, r))))
        else:
            raise TypeError(
                f"a gold reward is 'vader', 'judge', 'pairwise' or a function f(prompt, response) -> float, not {g!r}"
            )
    return (builtin or None), custom


def _prompts(prompts: Union[str, os.PathLike, Sequence[Any]]) -> Tuple[List[Tuple[str, str]], str]:
    """(id, prompt) pairs from a JSONL file, a list of str, or a list of {"id", "prompt"}."""
    if isinstance(prompts, (str, os.PathLike)) and os.path.exists(prompts):
        path = os.fspath(prompts)
        items = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path} line {n}: not JSON ({e})") from None
                    if not isinstance(d, dict) or not isinstance(d.get("prompt"), str):
                        raise ValueError(f'{path} line {n}: expected {{"id": ..., "prompt": "..."}}')
                    items.append((str(d.get("id", n)), d["prompt"]))
        return items, path
    if isinstance(prompts, str):
        raise ValueError(f"prompts: no file {prompts!r} (give a JSONL path or a list of prompts)")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            out.append((str(i), p))
        elif isinstance(p, Mapping) and isinstance(p.get("prompt"), str):
            out.append((str(p.get("id", i)), p["prompt"]))
        else:
            raise ValueError(f'prompts[{i}] must be a str or {{"id": ..., "prompt": "..."}}, got {p!r}')
    return out, "python"


def evaluate(
    prompts: Union[str, os.PathLike, Sequence[Any]],
    methods: Union[str, Sequence[str]] = ("sample", "bon:16", "cbs:4x4x5"),
    seeds: Sequence[int] = (1,),
    out: Union[str, os.PathLike] = "runs/python",
    *,
    strong: Optional[str] = None,
    tuned: Optional[ScorerLike] = None,
    untuned: Optional[ScorerLike] = None,
    guide: Optional[Union[Scorer, GuideFn]] = None,
    task: str = "sentiment",
    gold: Union[None, GoldLike, Sequence[GoldLike], Mapping[str, GoldLike]] = None,
    judge: Optional[str] = None,
    reference: Optional[str] = None,
    force: bool = False,
    parallel: Optional[int] = None,
    **settings: Any,
) -> Dict[str, Any]:
    """Compares methods on prompts, as `w2s eval` does, and returns the summary.

    One line per (method, seed, prompt) is appended to OUT/results.jsonl as soon as it
    is done, so an interrupted run (Ctrl-C included) resumes where it stopped when called
    again with the same settings; OUT/report.md, summary.json and plots are written at
    the end. `gold`: "vader", "judge" (a 1-9 rating), "pairwise" (the judge's probability
    that a response beats the `reference` method's, "sample" by default, on the same seed
    and prompt), a function f(prompt, response) -> float (named by its __name__), a list
    of these, or a dict {name: function}. The report's primary gold reward is the first
    Python function where there is one, else the first built-in name (Python functions
    are listed before built-in golds in each line).
    Default: the task's (VADER for sentiment, pairwise for instruct). `methods` may include
    "guide", the tuned model sampled alone. `parallel`: searches in flight at once, as in
    `Searcher.generate_batch`. Model settings are those of `Searcher`.
    """
    s, parts = _settings(strong, tuned, untuned, guide, settings)
    builtin, custom = _golds(gold)
    items, source = _prompts(prompts)
    if isinstance(methods, str):
        methods = [methods]
    seeds = list(seeds)
    if any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in seeds):
        raise ValueError(f"seeds must be integers >= 0, got {seeds!r}")
    command = f"w2s.evaluate(methods={list(methods)!r}, seeds={seeds!r}, out={os.fspath(out)!r})"
    text = _w2s.evaluate(
        s, parts, custom, items, source, ",".join(methods), seeds, task, builtin, judge,
        reference, os.fspath(out), force, command, parallel,
    )
    return json.loads(text)


def report(out: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Redraws OUT's report from its results.jsonl and returns the summary."""
    return json.loads(_w2s.report(os.fspath(out)))


def write_traces(outputs: Iterable[Output], path: Union[str, os.PathLike]) -> int:
    """Writes the traces of `outputs` (searched with `trace=True`) as JSON lines, the
    file `w2s generate --trace` writes; ids are the outputs' positions. Returns how many
    were written; an output without a trace is an error."""
    lines = []
    for i, o in enumerate(outputs):
        if o.trace is None:
            raise ValueError(f"output {i} has no trace: search it with trace=True")
        score = o.score if o.score == o.score and abs(o.score) != float("inf") else None
        lines.append(
            json.dumps(
                {"id": str(i), "prompt": o.prompt, "method": o.method, "seed": o.seed,
                 "text": o.text, "score": score, "trace": o.trace}
            )
        )
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return len(lines)


def trace_html(
    trace: Union[str, os.PathLike, Iterable[Output]],
    html: Union[str, os.PathLike],
    gold: Optional[str] = None,
) -> int:
    """Draws a trace file (or traced outputs) as a self-contained HTML page: the beam
    tree step by step, the final text with each chunk's share of the guide value, and
    with `gold="vader"` every candidate's VADER beside its guide value. Returns the
    number of candidates drawn."""
    if isinstance(trace, (str, os.PathLike)):
        return _w2s.trace_html(os.fspath(trace), os.fspath(html), gold)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.jsonl")
        write_traces(trace, path)
        return _w2s.trace_html(path, os.fspath(html), gold)


def guide_check(
    run: Union[str, os.PathLike],
    pairs: Sequence[Mapping[str, Any]] = (),
    configs: Sequence[Union[str, os.PathLike]] = (),
    gold: Optional[str] = None,
    bins: int = 5,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Does a guide pair track the gold? Rescores the responses of the run directory
    `run` (written by `w2s eval` or `evaluate`) with each candidate pair (`pairs`: dicts
    with the keys of the CLI's --guide table, weight not needed; `configs`: TOML files
    whose tuned / untuned pair is a candidate) through w2s's own scorers and returns, per
    candidate, the Pearson and Spearman r with the gold, the mean within-prompt r, the
    accuracy on pairs of responses to the same prompt, and the mean gold by guide-value
    bin (the over-optimisation curve), as `w2s guide-check` prints them."""
    tables = [_guide_table({"weight": 1.0, **p}) if isinstance(p, Mapping) else _guide_table(p) for p in pairs]
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    text = _w2s.guide_check(
        os.fspath(run), tables, [os.fspath(c) for c in configs], gold, bins, threads
    )
    return json.loads(text)


def to_records(outputs: Iterable[Output]) -> List[Dict[str, Any]]:
    """One flat dict per output: prompt, method, seed, the best beam, the counters."""
    rows = []
    for o in outputs:
        best = o.beams[0]
        row: Dict[str, Any] = {"prompt": o.prompt, "method": o.method, "seed": o.seed}
        row.update(best.to_dict())
        row.update(o.stats.to_dict())
        rows.append(row)
    return rows


def to_dataframe(outputs: Iterable[Output]) -> Any:
    """`to_records` as a pandas DataFrame (pandas must be installed)."""
    try:
        import pandas as pd  # type: ignore[import-not-found]
    except ImportError:
        raise ImportError("to_dataframe needs pandas: pip install pandas (or use to_records)") from None
    return pd.DataFrame(to_records(outputs))
