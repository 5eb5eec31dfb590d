"""The transformers scorer (w2s.hf) against w2s's own local scorer, on the same weights:
the Hugging Face folder scripts/install-vllm makes from SmolLM2-135M-Instruct and the F32
GGUF converted back from it. Needs PyTorch and transformers: scripts/test-python runs this
file in vLLM's venv (which has both) when scripts/install-vllm has made it."""

import os
import pathlib

import pytest

import w2s

torch = pytest.importorskip("torch")
from w2s.hf import TransformersScorer  # noqa: E402

CACHE = pathlib.Path(os.environ.get("W2S_CACHE", pathlib.Path.home() / ".cache" / "w2s"))
FOLDER = CACHE / "hf" / "smollm2-135m-instruct"
F32 = CACHE / "hf" / "smollm2-135m-instruct.f32.gguf"
PROMPT = "I rented this movie last weekend and"
TEXTS = [" it was a delight from start to finish.", "roid phones were everywhere, 24/7.\nFun.", ""]
# The same tolerance as the vLLM tests: float32 on two implementations.
PER_TOKEN = 1e-2


@pytest.fixture(scope="module")
def paths():
    if not (FOLDER / "config.json").exists() or not F32.exists():
        pytest.fail(f"{FOLDER} or {F32} is missing: run scripts/install-vllm")
    return str(FOLDER), str(F32)


@pytest.mark.parametrize("template", ["{prompt}", "Review: {prompt}", "chat:Write a very positive movie review.||{prompt}"])
def test_transformers_scores_equal_local_scores_of_the_same_weights(paths, template):
    folder, f32 = paths
    # llama.cpp ends a chat turn with the end-of-turn token it finds by text in SmolLM2's
    # vocabulary, <|endoftext|>; the tokenizer's end-of-sequence token is <|im_end|>.
    end = "<|endoftext|>" if template.startswith("chat:") else None
    hf = TransformersScorer(folder, template=template, end_token=end)
    local = w2s.LocalScorer(f32, template=template, threads=1)
    for ended in (False, True):
        texts = [t for t in TEXTS if t or ended]
        got = hf.score(PROMPT, texts, [ended] * len(texts))
        want = local.score(PROMPT, texts, [ended] * len(texts))
        for text, g, w in zip(texts, got, want):
            n = len(hf.token_logprobs(PROMPT, text, ended))
            assert n >= 1 or not ended
            assert abs(g - w) <= PER_TOKEN * max(n, 1), (template, text, ended, g, w)


def test_a_search_guided_by_transformers_scorers_runs(paths, strong):
    folder, _ = paths
    tuned = TransformersScorer(folder, template="chat:Write a very positive movie review.||{prompt}")
    untuned = TransformersScorer(folder)
    s = w2s.Searcher(strong, tuned, untuned, strong_template="Here is a movie review from imdb: {prompt}",
                     max_new_tokens=10, threads=1)
    out = s.generate(PROMPT, method="cbs:2x2x5", seed=1)
    assert out.text.strip() and out.beams[0].score == max(b.score for b in out.beams)


def test_bad_input_is_a_clear_error(paths):
    folder, _ = paths
    with pytest.raises(ValueError, match="has no"):
        TransformersScorer(folder, template="no placeholder")
    with pytest.raises(ValueError, match="batch_size"):
        TransformersScorer(folder, batch_size=0)
    with pytest.raises(ValueError, match="not one token"):
        TransformersScorer(folder, end_token="<|no such token|>")


def test_the_gemma_folder_keeps_bos_and_scores_like_its_gguf():
    """gemma needs <bos>; transformers' GGUF loader drops the file's add-BOS flag, and a
    folder made without it wrote nonsense in transformers and in vLLM. The folder's values
    equal the shipped (quantised) file's within its rounding."""
    folder = CACHE / "hf" / "gemma-3-270m"
    if not (folder / "config.json").exists():
        pytest.fail(f"{folder} is missing: run scripts/install-vllm")
    hf = TransformersScorer(str(folder), template="Here is a movie review from imdb: {prompt}")
    assert hf.tokenizer("Here")["input_ids"][0] == hf.tokenizer.bos_token_id
    local = w2s.LocalScorer("gemma-3-270m", template="Here is a movie review from imdb: {prompt}",
                            threads=1)
    text = " it was a delight from start to finish."
    got, want = hf.score(PROMPT, [text], [False])[0], local.score(PROMPT, [text], [False])[0]
    n = len(hf.token_logprobs(PROMPT, text))
    # Without <bos> the folder's value was far below (about -5 nats per token).
    assert abs(got - want) <= 0.1 * n, (got, want, n)
