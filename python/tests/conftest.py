"""Shared fixtures: the real model files scripts/fetch-models stores, the CLI binary, the
repository's prompt sets."""

import json
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = pathlib.Path(os.environ.get("W2S_MODELS", pathlib.Path.home() / ".cache" / "w2s" / "models"))

STRONG_TEMPLATE = "Here is a movie review from imdb: {prompt}"
TUNED_TEMPLATE = "chat:Write a very positive movie review.||{prompt}"


def model(name: str) -> str:
    path = MODELS / f"{name}.gguf"
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/fetch-models {name}")
    return str(path)


@pytest.fixture(scope="session")
def strong() -> str:
    return model("gemma-3-270m")


@pytest.fixture(scope="session")
def small() -> str:
    return model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def sentiment_prompts():
    with open(REPO / "prompts" / "sentiment.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


@pytest.fixture(scope="session")
def cli() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("W2S_BIN", REPO / "target" / "release" / "w2s"))
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with cargo build --release")
    return path


@pytest.fixture(scope="session")
def searcher(strong, small):
    """The demo's setup, two threads, short responses."""
    import w2s

    return w2s.Searcher(
        strong=strong,
        tuned=small,
        untuned=small,
        strong_template=STRONG_TEMPLATE,
        tuned_template=TUNED_TEMPLATE,
        threads=2,
        max_new_tokens=20,
    )


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt in this test even where the runner was started with
    SIGINT ignored (a background job of a non-interactive shell inherits that, and Python
    then installs no handler of its own)."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)

