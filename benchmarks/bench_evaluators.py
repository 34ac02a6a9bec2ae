"""Benchmark of the cost evaluators: latency-table accuracy, and cost(arch) time vs one training step.

Usage: python benchmarks/bench_evaluators.py [--layers 8 --channels 32 --image 32 --archs 20 --exporter torchscript]

(0) waits (up to --max-wait s) until the 1-minute load average is <= --max-load, since other jobs may share the
machine, and records the load. (1) builds a LatencyCost table (ORT CPU, batch 1, 1 thread, 10 warm-up + 50 timed
runs x 3 sessions, re-measured when sessions disagree by > 5 %) on a CNF and validates it on random connected
architectures whose whole-model latency is >= 0.5 ms: MAPE, share within +-10 %, Spearman; the same measurements
also score the other table variants (node entries 'all' / 'none', no overhead subtraction, and the previous
table: blocks only with the every-gate-off model as fixed part), and the worst architecture is profiled. (2) times one cost(arch) call of every evaluator against one training step (forward, backward,
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
from evaluators.latency.ort import cpu_model  # noqa: E402
from search_spaces import ConvolutionalNeuralFabric, ResNetFabric  # noqa: E402


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


def wait_for_quiet(max_load: float, max_wait: float) -> tuple[float, float]:
    """Sleep 60 s at a time while the 1-minute load average is above ``max_load`` (at most ``max_wait`` s)."""
    waited = 0.0
    while os.getloadavg()[0] > max_load and waited < max_wait:
        print(
            f"load average {os.getloadavg()[0]:.2f} > {max_load}: waiting 60 s", file=sys.stderr, flush=True
        )
        time.sleep(60)
        waited += 60
    return os.getloadavg()[0], waited


def score(pairs, predicted) -> dict:
    from scipy.stats import spearmanr

    measured = [p["measured_ms"] for p in pairs]
    err = [(q - m) / m for q, m in zip(predicted, measured)]
    return {
        "mape_pct": 100 * statistics.fmean(abs(e) for e in err),
        "mean_signed_error_pct": 100 * statistics.fmean(err),
        "max_error_pct": 100 * max(abs(e) for e in err),
        "within_10pct": sum(abs(e) <= 0.1 for e in err) / len(err),
        "spearman": float(spearmanr(predicted, measured).statistic),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", choices=["cnf", "resnet"], default="cnf")
    ap.add_argument("--units", type=int, default=3, help="ResNet fabric: units per stage")
    ap.add_argument("--shortcuts", default="slr", help="ResNet fabric: extra shortcut blocks ('' for ResNet)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--p-on", type=float, default=0.8)
    ap.add_argument("--exporter", choices=["dynamo", "torchscript"], default="torchscript")
    ap.add_argument("--cache-dir", default=None, help="latency table folder (default: a fresh temporary one)")
    ap.add_argument("--append", action="store_true", help="append the results to benchmarks/RESULTS.md")
    ap.add_argument(
        "--max-load", type=float, default=1.5, help="wait while the 1-minute load average is above this"
    )
    ap.add_argument("--max-wait", type=float, default=900, help="longest wait for a quiet machine (s)")
    args = ap.parse_args()

    load_start, waited = wait_for_quiet(args.max_load, args.max_wait)
    if args.space == "cnf":
        space = ConvolutionalNeuralFabric(layers=args.layers, channels=args.channels, image_size=args.image)
        space_text = f"CNF layers={args.layers} channels={args.channels} image={args.image}"
    else:
        space = ResNetFabric(units=args.units, shortcuts=args.shortcuts)
        space_text = f"ResNet fabric units={args.units} shortcuts={args.shortcuts!r} image={args.image}"
    shape = (1, 3, args.image, args.image)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="nni-bsn-latency-")
    t0 = time.time()

    def make(**kw):
        return LatencyCost(
            input_shape=shape, threads=1, cache_dir=cache, dynamo=args.exporter == "dynamo", **kw
        ).bind(space)

    lat = make()
    t_table = time.time() - t0
    variants = {
        "nodes='all'": make(nodes="all"),
        "nodes='none' (blocks only)": make(nodes="none"),
        "no overhead subtraction": make(subtract_overhead=False),
    }
    blocks_only = variants["nodes='none' (blocks only)"]
    all_off = lat.measure_model(space.freeze({lb: "off" for lb in space.graph.labels}))
    load_table = os.getloadavg()
    t0 = time.time()
    report = lat.validate(n=args.archs, seed=0, p_on=args.p_on, min_ms=0.5, attribute=True)
    t_validate = time.time() - t0
    load_validate = os.getloadavg()
    scores = {
        "default: nodes='constants', overhead subtracted, fixed from reference": score(
            report["pairs"], [p["predicted_ms"] for p in report["pairs"]]
        )
    }
    for name, ev in variants.items():
        scores[name] = score(report["pairs"], [ev.cost(a) for a in report["archs"]])
    scores["previous table (blocks only, fixed = every gate off)"] = score(
        report["pairs"], [blocks_only.cost(a) - blocks_only.fixed + all_off for a in report["archs"]]
    )

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

    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    cmd = "python benchmarks/bench_evaluators.py " + " ".join(sys.argv[1:])
    att = report["attribution"]
    worst = report["pairs"][att["index"]]
    retried = sum(p["rounds"] > 1 for p in report["pairs"])
    node_keys = {v for k, v in lat.entries.items() if k.startswith("<node>")}
    lines = [
        f"\n## Evaluators: latency table accuracy and cost-call time ({datetime.date.today().isoformat()})\n",
        f"- Command: `{cmd.strip()}` (commit {git.strip()})",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; 1-minute load average: {load_start:.2f} at start (after waiting "
        f"{waited:.0f} s for <= {args.max_load}), {load_table[0]:.2f} after the table, {load_validate[0]:.2f} after "
        f"validation, {load_after[0]:.2f} at the end (other developers' jobs share the machine)",
        f"- Space: {space_text}, "
        f"{len(labels)} gates; ORT CPU, batch 1, 1 thread, exporter {args.exporter}, 10 warm-up + 50 timed runs "
        "x 3 sessions, re-measured (up to 3 more rounds) when session medians disagree by > 5 %, median of medians",
        f"- Table: {len(set(lat.entries.values()))} distinct entries ({len(node_keys)} node entries), built in "
        f"{t_table:.1f} s; fixed part {1e3 * lat.fixed:.1f} us (reference architecture measured at "
        f"{1e3 * lat.reference_ms:.1f} us; every-gate-off model {1e3 * all_off:.1f} us); validation of {report['n']} "
        f"whole models in {t_validate:.1f} s, {retried} of them re-measured",
        "",
        f"Latency table vs whole-model measurement: {report['n']} architectures measured >= 0.5 ms "
        f"({report['skipped']} smaller ones skipped), {min(p['measured_ms'] for p in report['pairs']):.3f} - "
        f"{max(p['measured_ms'] for p in report['pairs']):.3f} ms. Every row scores a table on the same measurements.",
        "",
        "| table | MAPE (<= 5 %) | mean signed | max | within +-10 % (>= 90 %) | Spearman (>= 0.95) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in scores.items():
        lines.append(
            f"| {name} | {r['mape_pct']:.2f} % | {r['mean_signed_error_pct']:+.2f} % | "
            f"{r['max_error_pct']:.2f} % | {100 * r['within_10pct']:.0f} % | {r['spearman']:.3f} |"
        )
    k = att["profiled_kernels_ms"]
    lines += [
        "",
        f"Attribution of the worst architecture ({worst['predicted_ms']:.3f} ms predicted vs "
        f"{worst['measured_ms']:.3f} ms measured, {worst['live_gates']} live gates) with ORT's profiler "
        f"(per-run means, profiling inflates batch-1 runs): run {att['profiled_run_ms']['mean']:.3f} ms; kernels: "
        f"blocks {k['blocks']:.3f}, node additions/ReLUs {k['nodes']:.3f}, layout reorders {k['layout']:.3f}, "
        f"other {k['other']:.3f} ms; table: blocks {att['table_ms']['blocks']:.3f}, nodes "
        f"{att['table_ms']['nodes']:.3f}, fixed {att['table_ms']['fixed']:.3f} ms. Largest per-gate differences "
        "(gate: profiled / table ms): "
        + ", ".join(f"{g['gate']}: {g['profiled_ms']:.3f} / {g['table_ms']:.3f}" for g in att["gates"][:4])
        + ".",
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
    lines.append(
        "Pairs (predicted ms, measured ms, live gates, measurement rounds): "
        + ", ".join(
            f"({p['predicted_ms']:.3f}, {p['measured_ms']:.3f}, {p['live_gates']}, {p['rounds']})"
            for p in report["pairs"]
        )
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
