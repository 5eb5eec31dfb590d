"""Sampling, Best-of-N and CBS on a few of the repository's sentiment prompts, scored by
VADER; prints mean gold against strong tokens per method and, with matplotlib installed,
plots it to OUT/gold_vs_tokens.png.

    python python/examples/compare.py --prompts 4
"""

import argparse
import json
import os
import pathlib

import w2s

REPO = pathlib.Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4, help="how many prompts of prompts/sentiment.jsonl")
    ap.add_argument("--max-new-tokens", type=int, default=30)
    ap.add_argument("--strong", default="gemma-3-270m")
    ap.add_argument("--small", default="smollm2-135m-instruct")
    ap.add_argument("--methods", default="sample,bon:4,cbs:2x2x5")
    args = ap.parse_args()
    out = pathlib.Path(os.environ.get("W2S_EXAMPLE_OUT", "runs/python-example"))

    with open(REPO / "prompts" / "sentiment.jsonl", encoding="utf-8") as f:
        prompts = [json.loads(line) for line in f if line.strip()][: args.prompts]
    summary = w2s.evaluate(
        prompts,
        methods=args.methods.split(","),
        seeds=[1],
        out=out,
        strong=args.strong,
        tuned=args.small,
        untuned=args.small,
        strong_template="Here is a movie review from imdb: {prompt}",
        tuned_template="chat:Write a very positive movie review.||{prompt}",
        max_new_tokens=args.max_new_tokens,
        gold="vader",
    )
    print(f"{'method':<12} {'mean gold':>10} {'95% CI':>18} {'strong tokens':>14}")
    points = []
    for name in summary["method_order"]:
        m = summary["methods"][name]
        ci = f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
        tokens = m["strong_tokens_per_prompt"]
        print(f"{name:<12} {m['mean_gold']:>10.3f} {ci:>18} {tokens:>14.0f}")
        points.append((tokens, m["mean_gold"], name))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for x, y, name in points:
        ax.scatter([x], [y])
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_xlabel("strong tokens sampled per prompt")
    ax.set_ylabel("mean VADER (gold)")
    fig.tight_layout()
    fig.savefig(out / "gold_vs_tokens.png", dpi=120)
    print(f"plot: {out / 'gold_vs_tokens.png'}")


if __name__ == "__main__":
    main()
