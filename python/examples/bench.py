"""The Python path against the CLI on the same CBS run: the same models, prompts, seed and
threads; CLI and Python runs interleaved, after a warm-up of each.

    python python/examples/bench.py --cli target/release/w2s --prompts 3 --rounds 3

Prints, per round, the wall time of `w2s generate --prompts FILE` (one process: model
loading included) and of the same in Python (`Searcher(...)` + `generate_batch`), and the
searches' own time (their stats.total_time) on each side, then the Python / CLI ratios
of the medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import w2s

ARGS = {
    "strong": "gemma-3-270m",
    "tuned": "smollm2-135m-instruct",
    "untuned": "smollm2-135m-instruct",
    "strong_template": "Here is a movie review from imdb: {prompt}",
    "tuned_template": "chat:Write a very positive movie review.||{prompt}",
}


def cli_run(cli, prompts_file, method, tokens, threads):
    cmd = [cli, "generate", "--method", method, "--max-new-tokens", str(tokens),
           "--threads", str(threads), "--seed", "1", "--json", "--prompts", prompts_file]
    for k, v in ARGS.items():
        cmd += [f"--{k.replace('_', '-')}", v]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    search = sum(line["timings"]["total_s"] for line in lines)
    return wall, search, [line["text"] for line in lines]


def py_run(prompts, method, tokens, threads):
    t = time.perf_counter()
    s = w2s.Searcher(**ARGS, threads=threads, max_new_tokens=tokens)
    outs = s.generate_batch(prompts, method=method, seed=1)
    wall = time.perf_counter() - t
    return wall, sum(o.stats.total_time for o in outs), [o.text for o in outs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--method", default="cbs:4x4x5")
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "prompts", "sentiment.jsonl"), encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()][: a.prompts]
    prompts = [i["prompt"] for i in items]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i in items:
            f.write(json.dumps(i) + "\n")
        prompts_file = f.name
    run = lambda side: (cli_run(a.cli, prompts_file, a.method, a.max_new_tokens, a.threads)
                        if side == "cli" else py_run(prompts, a.method, a.max_new_tokens, a.threads))
    run("cli"), run("python")  # warm-up: page cache, CPU clocks
    rows = {"cli": [], "python": []}
    for r in range(a.rounds):
        order = ["cli", "python"] if r % 2 == 0 else ["python", "cli"]
        for side in order:
            wall, search, texts = run(side)
            rows[side].append((wall, search, texts))
            print(f"round {r + 1} {side:<6} wall {wall:6.2f} s  searches {search:6.2f} s", flush=True)
    same = all(c[2] == p[2] for c, p in zip(rows["cli"], rows["python"]))
    med = {side: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
           for side, v in rows.items()}
    print(f"\n{a.method}, {a.prompts} prompts x {a.max_new_tokens} tokens, {a.threads} threads, "
          f"median of {a.rounds} rounds; same texts on both sides: {same}")
    print(f"| side | wall s (load + searches) | searches s |\n|---|---|---|")
    for side in ("cli", "python"):
        print(f"| {side} | {med[side][0]:.2f} | {med[side][1]:.2f} |")
    print(f"| python / cli | {med['python'][0] / med['cli'][0]:.3f} | "
          f"{med['python'][1] / med['cli'][1]:.3f} |")
    os.unlink(prompts_file)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
