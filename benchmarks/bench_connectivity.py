"""The connectivity check BSN runs on every sampled architecture (``nni_bsn.strategy.connectivity.space_connectivity``): its
set-up and call time on NNI's NasBench201 (the cells' structure) beside the CNF fabric's own ``is_connected``.

    python benchmarks/bench_connectivity.py [--archs 1000] [--append]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import append  # noqa: E402


def _spaces():
    from nni.nas.hub.pytorch import NasBench201

    from nni_bsn.jobs.builders import build_space
    from nni_bsn.jobs.config import SearchConfig

    cnf, _ = build_space(SearchConfig(space="cnf", layers=4, channels=16), 1, 10, 16)
    return {
        "NasBench201 (16 stem channels, 1 cell a stage)": NasBench201(
            stem_out_channels=16, num_modules_per_stack=1, num_labels=10
        ),
        "CNF 4 layers x 16 channels (its own is_connected)": cnf,
    }


def _row(name: str, space, archs: int, rng: random.Random) -> str:
    from nni_bsn.strategy.connectivity import space_connectivity

    grid = {label: list(m.values) for label, m in space.simplify().items()}
    sample = [{label: rng.choice(vs) for label, vs in grid.items()} for _ in range(archs)]
    started = time.perf_counter()
    check = space_connectivity(space)
    setup_ms = (time.perf_counter() - started) * 1e3
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        connected = sum(bool(check(a)) for a in sample)
        runs.append((time.perf_counter() - started) / archs * 1e6)
    return f"| {name} | {setup_ms:.1f} | {statistics.median(runs):.2f} | {connected}/{archs} |"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--archs", type=int, default=1000, help="random architectures per space (uniform choices)"
    )
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    rng = random.Random(0)
    lines = [
        "| space | set-up (ms) | call (µs, median of 5 passes) | connected among the random architectures |",
        "|---|---|---|---|",
        *(_row(name, space, args.archs, rng) for name, space in _spaces().items()),
    ]
    body = "\n".join(lines)
    print(body)
    if args.append:
        append("Connectivity check per sampled architecture", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
