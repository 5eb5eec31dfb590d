"""Types of the native module (used through the `w2s` package)."""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__version__: str

class W2sError(RuntimeError):
    """A model backend (local or remote) or w2s itself failed."""

_Batched = Callable[[str, List[str], List[bool]], List[float]]
_Parts = Tuple[List[Tuple[str, str, _Batched]], Optional[Tuple[str, _Batched]]]

class Beam:
    """One finished candidate."""

    text: str
    #: The guide's value (beta * (tuned - untuned) for the pair).
    score: float
    #: log p_tuned(text | prompt); None when a custom guide replaced the pair.
    tuned_logprob: Optional[float]
    untuned_logprob: Optional[float]
    #: "eos", "stop" or "length".
    finish: str
    strong_tokens: int
    def to_dict(self) -> Dict[str, Any]: ...

class Stats:
    """Counters and timings (seconds) of one search."""

    strong_tokens_sampled: int
    chunks: int
    tuned_tokens_evaluated: int
    untuned_tokens_evaluated: int
    strong_time: float
    tuned_time: float
    untuned_time: float
    total_time: float
    #: Time in a custom guide (0 with the tuned / untuned pair).
    guide_time: float
    def to_dict(self) -> Dict[str, Any]: ...

class Output:
    """The result of one search: every finished row, best first."""

    prompt: str
    method: str
    seed: int
    beams: List[Beam]
    stats: Stats
    #: Every step of the search when asked for with `trace=True`; the shape
    #: `w2s generate --trace` writes.
    trace: Optional[Dict[str, Any]]
    @property
    def text(self) -> str:
        """The best response."""
        ...
    @property
    def score(self) -> float:
        """The best response's guide value."""
        ...
    def to_dict(self) -> Dict[str, Any]:
        """A plain dict (JSON-ready)."""
        ...

class Searcher:
    def __init__(self, settings: Dict[str, Any], parts: _Parts) -> None: ...
    def generate(self, prompt: str, method: str, seed: int, trace: bool = False) -> Output: ...
    def generate_batch(
        self,
        prompts: List[str],
        method: str,
        seed: int,
        parallel: Optional[int],
        progress: Optional[Callable[[int], Any]],
        trace: bool = False,
        pooled: bool = False,
    ) -> List[Output]: ...

class LocalScorer:
    """A small GGUF model on llama.cpp that scores responses exactly as the search does (a
    Q4_1 or Q5_1 file through its Q8_0 copy, unless keep_guide_weights)."""

    def __init__(
        self,
        model: str,
        template: Optional[str] = None,
        threads: Optional[int] = None,
        gpu_layers: int = 0,
        keep_guide_weights: bool = False,
    ) -> None: ...
    def score(self, prompt: str, texts: List[str], ended: List[bool]) -> List[float]: ...

class PairJudge:
    """The pairwise judge of the `pairwise` gold reward (default Qwen2.5-Coder-1.5B-Instruct),
    the same model and prompt as `w2s eval`."""

    def __init__(
        self, model: Optional[str] = None, threads: Optional[int] = None, gpu_layers: int = 0
    ) -> None: ...
    @property
    def path(self) -> str: ...
    def compare(self, instruction: str, a: str, b: str) -> Tuple[float, float, float]:
        """(P(a better) shown first, P(a better) shown second, answer mass)."""
        ...

def evaluate(
    settings: Dict[str, Any],
    parts: _Parts,
    golds: List[Tuple[str, Callable[[str, str], float]]],
    prompts: List[Tuple[str, str]],
    prompts_source: str,
    methods: str,
    seeds: Sequence[int],
    task: str,
    builtin_golds: Optional[List[str]],
    judge: Optional[str],
    reference: Optional[str],
    out: str,
    force: bool,
    command: str,
    parallel: Optional[int] = None,
) -> str: ...
def report(out: str) -> str: ...
def quantize(input: str, output: str, to: str, threads: int) -> None: ...
def resolve_model(spec: str) -> "os.PathLike[str]": ...
