"""Benchmark of the cost evaluators: latency-table accuracy, and cost(arch) time vs one training step.

Usage: python benchmarks/bench_evaluators.py [--layers 8 --channels 32 --image 32 --archs 20 --exporter torchscript]

(1) builds a LatencyCost table (ORT CPU, batch 1, 1 thread, 10 warm-up + 50 timed runs x 3 sessions) on a CNF and
validates it on random connected architectures whose whole-model latency is >= 0.5 ms: MAPE, share within
+-10 %, Spearman. (2) times one cost(arch) call of every evaluator against one training step (forward, backward,
Adam; batch 64) of a sampled sub-network of the same space. Prints a Markdown section; --append adds it to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime  # noqa: E402
import torch  # noqa: E402

import nni_bsn.compat  # noqa: E402,F401
from evaluators import DistributedCost, LatencyCost, MacsCost, ParamsCost  # noqa: E402
from evaluators.latency import cpu_model  # noqa: E402
from search_spaces import ConvolutionalNeuralFabric  # noqa: E402


def time_calls(ev, archs) -> float:
    for arch in archs[:5]:
        ev(arch)
    times = []
    for arch in archs:
        t0 = time.perf_counter()
        ev(arch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def train_step_ms(space, arch, image: int, steps: int = 5) -> float:
    model = space.freeze(space.prune(arch)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 3, image, image), torch.randint(0, 10, (64,))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--p-on", type=float, default=0.8)
    ap.add_argument("--exporter", choices=["dynamo", "torchscript"], default="torchscript")
    ap.add_argument("--cache-dir", default=None, help="latency table folder (default: a fresh temporary one)")
    ap.add_argument("--append", action="store_true", help="append the results to benchmarks/RESULTS.md")
    args = ap.parse_args()

    load_before = os.getloadavg()
    space = ConvolutionalNeuralFabric(layers=args.layers, channels=args.channels, image_size=args.image)
    shape = (1, 3, args.image, args.image)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="nni-bsn-latency-")
    t0 = time.time()
    lat = LatencyCost(input_shape=shape, threads=1, cache_dir=cache, dynamo=args.exporter == "dynamo").bind(space)
    t_table = time.time() - t0
    t0 = time.time()
    report = lat.validate(n=args.archs, seed=0, p_on=args.p_on, min_ms=0.5)
    t_validate = time.time() - t0

    evaluators = {
        "MacsCost": MacsCost(input_shape=shape, verify=0).bind(space),
        "ParamsCost": ParamsCost(verify=0).bind(space),
        "LatencyCost": lat,
        "DistributedCost(2, steps)": DistributedCost(devices=2, mode="steps").bind(space),
        "DistributedCost(2, time, MACs)": DistributedCost(devices=2, input_shape=shape).bind(space),
    }
    rng = random.Random(1)
    labels = space.graph.labels
    archs = [{lb: "on" if rng.random() < 0.7 else "off" for lb in labels} for _ in range(300)]
    call_ms = {name: time_calls(ev, archs) for name, ev in evaluators.items()}
    connected = next(a for a in archs if space.is_connected(a))
    step_ms = train_step_ms(space, connected, args.image)
    load_after = os.getloadavg()

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    cmd = "python benchmarks/bench_evaluators.py " + " ".join(sys.argv[1:])
    lines = [
        f"\n## Evaluators: latency table accuracy and cost-call time ({datetime.date.today().isoformat()})\n",
        f"- Command: `{cmd.strip()}` (commit {git.strip()})",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; load average before/after "
        f"{load_before[0]:.2f}/{load_after[0]:.2f} (another developer's jobs may share the machine)",
        f"- Space: CNF layers={args.layers} channels={args.channels} image={args.image}, "
        f"{len(labels)} gates; ORT CPU, batch 1, 1 thread, exporter {args.exporter}, 10 warm-up + 50 timed runs "
        "x 3 sessions (median of medians); block entries minus the one-ReLU per-run overhead",
        f"- Table: {len(set(lat.entries.values()))} distinct entries, built in {t_table:.1f} s; "
        f"validation of {report['n']} whole models in {t_validate:.1f} s",
        "",
        "| latency table vs whole-model measurement | value | target |",
        "|---|---|---|",
        f"| architectures (measured >= 0.5 ms; {report['skipped']} smaller ones skipped) | {report['n']} | >= 20 |",
        f"| measured latency range (ms) | {min(p['measured_ms'] for p in report['pairs']):.3f} - "
        f"{max(p['measured_ms'] for p in report['pairs']):.3f} | |",
        f"| MAPE | {report['mape_pct']:.2f} % | <= 5 % |",
        f"| mean signed error | {report['mean_signed_error_pct']:+.2f} % | |",
        f"| max error | {report['max_error_pct']:.2f} % | |",
        f"| within +-10 % | {100 * report['within_10pct']:.0f} % | >= 90 % |",
        f"| Spearman | {report['spearman']:.3f} | >= 0.95 |",
        "",
        f"One training step (fwd+bwd+Adam, batch 64, {torch.get_num_threads()} torch threads) of a sampled "
        f"sub-network: {step_ms:.1f} ms.",
        "",
        "| evaluator | cost(arch) median (ms) | share of a training step | target |",
        "|---|---|---|---|",
    ]
    for name, ms in call_ms.items():
        lines.append(f"| {name} | {ms:.4f} | {100 * ms / step_ms:.3f} % | < 3 % |")
    lines.append("")
    lines.append("Pairs (predicted ms, measured ms, live gates): " + ", ".join(
        f"({p['predicted_ms']:.3f}, {p['measured_ms']:.3f}, {p['live_gates']})" for p in report["pairs"]))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
