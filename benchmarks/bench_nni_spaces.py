"""Benchmark of MacsCost and ParamsCost on NNI 3.0's hub spaces: bind time, cost-call time, error against fvcore.

Usage: python benchmarks/bench_nni_spaces.py [--archs 8 --calls 2000 --spaces DARTS,ENAS] [--append]

For each hub space (at small widths and depths, so that the whole run takes minutes on 2 cores): binds MacsCost
and ParamsCost, times ``cost(arch)`` (median over ``--calls`` calls on random architectures), and compares it with
fvcore (MACs) and ``numel`` (parameters) on ``space.freeze(arch)`` for ``--archs`` random architectures (the max
relative error; 0 means exact on every one). In ``exact`` mode (the count did not decompose) the call time is that of
a new architecture (a fresh build and an fvcore count; repeated architectures are memoised). ``full``/``min`` say whether ``full_cost()`` / ``min_cost()`` are
exact (tables, enumeration) and whether the architecture behind ``full_cost()`` counts the same with fvcore;
``BSN set-up`` is ``BSN(cost=MacsCost(...), budget="50%").mutate_model(space)`` on a fresh space (bind included).
Prints a Markdown table; ``--append`` adds it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from nni_models import small_hub_space  # noqa: E402

from evaluators import MacsCost, ParamsCost  # noqa: E402
from evaluators.counting.flops import fvcore_macs, space_grid  # noqa: E402
from nni_bsn import BSN  # noqa: E402


def hub_spaces() -> dict:
    """Each hub space at a small size (tests/nni_models.small_hub_space), with the input shape its MACs are counted
    on."""
    import nni.nas.hub.pytorch as hub

    cifar = (1, 3, 32, 32)
    names = {
        "NasBench201": "nasbench201",
        "DARTS": "darts",
        "ENAS": "enas",
        "NASNet": "nasnet",
        "AmoebaNet": "amoebanet",
        "PNAS": "pnas",
        "ProxylessNAS": "proxylessnas",
        "MobileNetV3": "mobilenetv3",
        "ShuffleNet": "shufflenet",
        "Autoformer": "autoformer",
    }
    spaces = {label: (lambda n=name: small_hub_space(n), cifar) for label, name in names.items()}
    spaces["DARTS (width 16, 8 cells)"] = (lambda: hub.DARTS(width=16, num_cells=8, dataset="cifar"), cifar)
    spaces["DARTS (width, depth)"] = (
        lambda: hub.DARTS(width=(4, 8), num_cells=(2, 3), dataset="cifar"),
        cifar,
    )
    return spaces


def reference(name: str, model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    return fvcore_macs(model, shape) if name == "macs" else sum(p.numel() for p in model.parameters())


def bench_one(make, shape, evaluator, archs: int, calls: int, seed: int = 0) -> dict:
    space = make()
    t0 = time.perf_counter()
    bound = evaluator.bind(space)
    bind_s = time.perf_counter() - t0
    grid = space_grid(space)
    rng = random.Random(seed)
    sample = [{k: rng.choice(v) for k, v in grid.items()} for _ in range(min(calls, 200))]
    if bound.mode == "exact":  # each new architecture is frozen and counted: time first calls, not memo hits
        calls, sample = min(calls, archs), sample[:archs]
    times = []
    for i in range(calls):
        arch = sample[i % len(sample)]
        t = time.perf_counter()
        bound(arch)
        times.append(time.perf_counter() - t)
    err, unfrozen = 0.0, 0
    for arch in sample[:archs]:
        try:
            model = space.freeze(arch)
        except (
            Exception
        ):  # NNI itself cannot build some architectures of some spaces (e.g. a stage of 0 cells)
            unfrozen += 1
            continue
        ref = reference(evaluator.name, model, shape)
        err = max(err, abs(bound(arch) - ref) / max(ref, 1))
    full_arch = bound.full_arch()
    full_ok = (
        full_arch is not None
        and reference(evaluator.name, space.freeze(full_arch), shape) == bound.full_cost()
    )
    setup = None
    if evaluator.name == "macs":  # BSN's whole set-up with this cost and budget="50%", on a fresh space
        setup = ""
        for budget in ("50%", "100%"):  # 50% is below the cheapest architecture of some spaces (ShuffleNet)
            t0 = time.perf_counter()
            try:
                BSN(cost=type(evaluator)(input_shape=shape), budget=budget).mutate_model(make())
            except ValueError:
                setup = "50% refused; "
                continue
            setup += f"{time.perf_counter() - t0:.1f}" + (" at 100%" if budget == "100%" else "")
            break
    return dict(
        setup=setup,
        unfrozen=unfrozen,
        mode=bound.mode,
        bind=bind_s,
        call_ms=1e3 * statistics.median(times),
        err=err,
        full=bound.full_cost(),
        full_ok=full_ok,
        min=bound.min_cost(),
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=8, help="random architectures checked against fvcore")
    parser.add_argument("--calls", type=int, default=2000, help="timed cost calls")
    parser.add_argument("--spaces", default="", help="comma-separated subset of the spaces (default: all)")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    spaces = hub_spaces()
    chosen = [s.strip() for s in re.split(r",(?![^()]*\))", args.spaces) if s.strip()] or list(spaces)
    lines = [
        "| space | cost | mode | bind (s) | BSN set-up (s) | cost call (ms, median) | "
        "max rel. error vs fvcore/numel | full_cost (exact arch?) | min_cost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in chosen:
        make, shape = spaces[name]
        for evaluator in (MacsCost(input_shape=shape), ParamsCost()):
            try:
                r = bench_one(make, shape, evaluator, args.archs, args.calls)
            except Exception as e:  # one space failing must not hide the others
                lines.append(
                    f"| {name} | {evaluator.name} | failed: {type(e).__name__}: {str(e)[:80]} ||||||||"
                )
                continue
            err = f"{r['err']:.2g}" + (f" ({r['unfrozen']} not freezable by NNI)" if r["unfrozen"] else "")
            lines.append(
                f"| {name} | {evaluator.name} | {r['mode']} | {r['bind']:.1f} | {r['setup'] or ''} | "
                f"{r['call_ms']:.4f} | {err} | {r['full']:.6g} ({'yes' if r['full_ok'] else 'no'}) | {r['min']} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    table = "\n".join(lines)
    print(table)
    if args.append:
        from _results import append

        append("MacsCost / ParamsCost on NNI hub spaces", table)
    return table


if __name__ == "__main__":
    main()
