"""The same benchmarks on two checkouts, interleaved: does a change leave search cost and overhead as they were?

    python benchmarks/bench_trees.py --base ../before [--repeats 3] [--epochs 4] [--strategies bsn@50%,fixed@50%,darts]

``--base`` is another checkout of this repository (e.g. ``git worktree add ../before <commit>``). For each repeat,
each checkout runs every strategy of ``bench_search_cost.py`` in a fresh process, from its own code (its own
``bench_search_cost.py _child``), so before and after share the machine's state at the same moments; then each
checkout runs ``bench_bsn.py overhead`` once (BSN's step against plain training of its converged deterministic
sub-network). Medians over repeats, and the median of the after/before ratios paired by round (the
order alternates between rounds), which cancels most of the load a shared machine adds. Appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HERE = Path(__file__).resolve().parents[1]
SEARCH_KEYS = ("epoch_s", "step_ms", "fit_rss_growth_mb", "macs_share")


def _run(tree: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True)


def search_cost(tree: Path, name: str, a: argparse.Namespace) -> dict:
    """One ``bench_search_cost.py`` child of ``tree``: epoch time, step time, memory growth."""
    sizes = [str(v) for v in (a.epochs, a.layers, a.channels, a.image_size)]
    out = _run(tree, [str(tree / "benchmarks/bench_search_cost.py"), "_child", name, *sizes])
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def overhead(tree: Path, a: argparse.Namespace) -> dict[str, float]:
    """One ``bench_bsn.py overhead`` of ``tree``: median step ms of BSN (1 sample) and of the fixed network."""
    args = ["overhead", "--repeats", str(a.overhead_repeats), "--epochs", "2", "--converge-epochs", "8"]
    results = tree / "benchmarks/RESULTS.md"
    kept = results.read_text() if results.exists() else None
    out = _run(tree, [str(tree / "benchmarks/bench_bsn.py"), *args])
    if kept is not None:  # the overhead bench appends its own section: this run reports it in its own
        results.write_text(kept)
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: overhead failed:\n{out.stderr[-2000:]}")
    steps: dict[str, list[float]] = {"bsn_k1": [], "fixed": []}
    for line in out.stderr.splitlines():
        mode, _, rest = line.partition(" ")
        if mode in steps and "{" in rest:
            steps[mode].append(ast.literal_eval(rest[rest.index("{") :])["step_ms_median"])
    return {mode: statistics.median(v) for mode, v in steps.items()}


def _table(rows: dict[str, dict[str, list[float]]], keys: tuple[str, ...]) -> list[str]:
    """Medians before and after, and the median of the paired ratios (after / before of the same round)."""
    head = " | ".join(f"{k} before | {k} after | paired ratio" for k in keys)
    lines = [f"| run | {head} |", "|---|" + "---|" * (3 * len(keys))]
    for name, vals in rows.items():
        cells = []
        for k in keys:
            before, after = vals[f"{k}:base"], vals[f"{k}:this"]
            ratios = [f / b for b, f in zip(before, after) if b]
            ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
            cells.append(f"{statistics.median(before):.3f} | {statistics.median(after):.3f} | {ratio}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, type=Path, help="the other checkout (before the change)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--overhead-repeats", type=int, default=3)
    p.add_argument("--overhead-rounds", type=int, default=2, help="overhead runs per checkout, alternating")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--strategies", default="bsn@50%,fixed@50%,darts")
    a = p.parse_args()
    trees = {"base": a.base.resolve(), "this": HERE}
    names = a.strategies.split(",")
    search: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for rep in range(a.repeats):
        order = list(trees.items()) if rep % 2 == 0 else list(trees.items())[::-1]  # balance the order
        for side, tree in order:
            for n in names:
                res = search_cost(tree, n, a)
                for k in SEARCH_KEYS:
                    search[n].setdefault(f"{k}:{side}", []).append(res[k])
                print(rep, side, n, {k: res[k] for k in SEARCH_KEYS}, file=sys.stderr, flush=True)
    over: dict[str, dict[str, list[float]]] = {"bsn_k1": {}, "fixed": {}, "bsn_k1 / fixed": {}}
    for side, tree in list(trees.items()) * a.overhead_rounds:
        res = overhead(tree, a)
        print(side, "overhead", res, file=sys.stderr, flush=True)
        for mode in ("bsn_k1", "fixed"):
            over[mode].setdefault(f"step_ms:{side}", []).append(res[mode])
        over["bsn_k1 / fixed"].setdefault(f"step_ms:{side}", []).append(res["bsn_k1"] / res["fixed"])
    lines = [
        f"Before: `{a.base}` at `{_head(a.base)}`; after: this checkout at `{_head(HERE)}`.",
        "",
        f"Search cost (`bench_search_cost.py` children, CNF {a.layers}x{a.channels}, digits "
        f"{a.image_size}x{a.image_size}, {a.epochs} epochs, {a.repeats} interleaved repeats, medians):",
        "",
        *_table(search, SEARCH_KEYS),
        "",
        f"Overhead (`bench_bsn.py overhead --repeats {a.overhead_repeats} --epochs 2`, {a.overhead_rounds} rounds per "
        "checkout, alternating):",
        "",
        *_table(over, ("step_ms",)),
    ]
    print("\n".join(lines))
    from _results import append

    append("The same benchmarks before and after a change (bench_trees.py)", "\n".join(lines))


def _head(tree: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    main()
