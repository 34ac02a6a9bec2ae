"""BSN's own benchmarks: quality and speed across budgets, per-step overhead vs the physical limit, samples per step.

    python benchmarks/bench_bsn.py budgets  [--budgets 25%,50%,75%] [--epochs 15] [--seeds 0,1]
    python benchmarks/bench_bsn.py overhead [--repeats 5] [--epochs 2]
    python benchmarks/bench_bsn.py samples  [--ks 1,2,4,8] [--epochs 6]

Each run appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nni_bsn.network.training import QUIET_CPU  # noqa: E402

warnings.filterwarnings("ignore")


def _search(cfg_kwargs: dict) -> dict:
    from nni_bsn.jobs.config import SearchConfig
    from nni_bsn.jobs.search import run_search

    cfg = SearchConfig(**{"onnx": False, **cfg_kwargs})
    with tempfile.TemporaryDirectory() as tmp:
        return run_search(cfg, Path(tmp), progress=lambda m: print(m, file=sys.stderr))


def budgets(args) -> None:
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for b in args.budgets.split(","):
            r = _search(
                dict(
                    budget=b,
                    epochs=args.epochs,
                    seed=seed,
                    layers=args.layers,
                    channels=args.channels,
                    image_size=args.image_size,
                )
            )
            m = r["final_epoch_metrics"]
            rows.append(
                dict(
                    budget=b,
                    seed=seed,
                    limit=r["budgets"][0]["limit"],
                    macs=r["costs"]["macs"],
                    within=r["selection"]["within_budget"],
                    connected=r["selection"]["connected"],
                    method=r["selection"]["method"],
                    val=r["accuracy"]["val"],
                    test=r["accuracy"]["test"],
                    step_ms=r["search_timing"]["step_ms_median"],
                    epoch_s=r["search_timing"]["epoch_s_median"],
                    sampled_macs=m.get("bsn/cost_macs"),
                )
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    lines = [
        "| budget | seed | limit (MACs) | exported MACs | within | connected | val acc | test acc | "
        "mean sampled MACs (last epoch) | step ms (median) | epoch s (median) |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        lines.append(
            f"| {r['budget']} | {r['seed']} | {r['limit']:.4g} | {r['macs']:.4g} | {r['within']} | "
            f"{r['connected']} | {r['val']:.4f} | {r['test']:.4f} | {r['sampled_macs']:.4g} | "
            f"{r['step_ms']:.1f} | {r['epoch_s']:.2f} |"
        )
    summary = ["", "Per budget (mean over seeds): "]
    for b in args.budgets.split(","):
        sel = [r for r in rows if r["budget"] == b]
        summary.append(
            f"- {b}: test acc {statistics.mean(r['test'] for r in sel):.4f}, "
            f"step {statistics.mean(r['step_ms'] for r in sel):.1f} ms, "
            f"all within budget and connected: {all(r['within'] and r['connected'] for r in sel)}"
        )
    from _results import append

    append(
        f"BSN across MACs budgets: CNF {args.layers} layers x {args.channels} channels on digits "
        f"{args.image_size}x{args.image_size}, {args.epochs} epochs",
        "\n".join(lines + summary),
    )


def _overhead_child(mode: str, epochs: int, logits_file: str) -> dict:
    """One measurement in a fresh process: BSN continuing from converged logits, or the fixed sub-network."""
    import torch
    from nni.nas.evaluator.pytorch import Classification
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace

    from evaluators import MacsCost
    from nni_bsn import BSN
    from nni_bsn.data import get_dataloaders
    from nni_bsn.network.training import StepTimer
    from search_spaces import ConvolutionalNeuralFabric

    torch.manual_seed(0)
    torch.set_num_threads(
        1
    )  # one thread per process: a 2-thread pool under other load runs many times slower
    train, val, _, info = get_dataloaders("digits", batch_size=64, image_size=8, seed=0)
    saved = torch.load(logits_file, weights_only=True)
    space = ConvolutionalNeuralFabric(layers=6, channels=32, image_size=8, in_channels=1)
    timer = StepTimer()
    ev = Classification(
        train_dataloaders=train,
        val_dataloaders=val,
        num_classes=10,
        max_epochs=epochs,
        **QUIET_CPU,
        limit_val_batches=0,
        callbacks=[timer],
    )
    macs = MacsCost(input_shape=(1, 1, 8, 8)).bind(
        ConvolutionalNeuralFabric(layers=6, channels=32, image_size=8, in_channels=1)
    )
    if mode.startswith("bsn"):
        k = int(mode.split("_k")[1]) if "_k" in mode else 1
        strategy = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="50%", num_samples=k)
        strategy.initialize(RawFormatModelSpace.from_model(space, ev), SequentialExecutionEngine())
        with torch.no_grad():
            strategy.distribution.gate_logits.copy_(saved["logits"])
        sampled: list = []
        original = strategy.distribution.sample_parts

        def recording(n=1):
            archs, gate_logp, choice_logp = original(n)
            sampled.extend(archs)
            return archs, gate_logp, choice_logp

        strategy.distribution.sample_parts = recording
        strategy.run()
        mean_macs = statistics.mean(macs(a) for a in sampled)
    else:
        model = space.freeze(saved["arch"])
        ev.fit(model)
        mean_macs = macs(saved["arch"])
    return {**timer.summary(), "mean_macs": mean_macs}


def overhead(args) -> None:
    import torch

    # 1. A converged distribution: BSN at 50% MACs for a few epochs.
    with tempfile.TemporaryDirectory() as tmp:
        from nni.nas.evaluator.pytorch import Classification
        from nni.nas.execution import SequentialExecutionEngine
        from nni.nas.space import RawFormatModelSpace

        from evaluators import MacsCost
        from nni_bsn import BSN
        from nni_bsn.data import get_dataloaders
        from search_spaces import ConvolutionalNeuralFabric

        train, val, _, _ = get_dataloaders("digits", batch_size=64, image_size=8, seed=0)
        space = ConvolutionalNeuralFabric(layers=6, channels=32, image_size=8, in_channels=1)
        ev = Classification(
            train_dataloaders=train,
            val_dataloaders=val,
            num_classes=10,
            max_epochs=args.converge_epochs,
            **QUIET_CPU,
        )
        strategy = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="50%", num_samples=4)
        strategy(RawFormatModelSpace.from_model(space, ev), SequentialExecutionEngine())
        logits = strategy.distribution.gate_logits.detach().clone()
        det = strategy.oneshot_module.deterministic_arch()
        logits_file = str(Path(tmp) / "logits.pt")
        torch.save({"logits": logits, "arch": {str(k): str(v) for k, v in det.items()}}, logits_file)
        probs = torch.sigmoid(logits)
        print(
            f"converged: {int((probs > 0.5).sum())}/{len(probs)} gates on, "
            f"{float(((probs > 0.9) | (probs < 0.1)).float().mean()):.2f} near-deterministic",
            file=sys.stderr,
        )
        modes = ["bsn_k1", "fixed"] + (["bsn_k4"] if args.with_k4 else [])
        results: dict[str, list[dict]] = {m: [] for m in modes}
        for rep in range(args.repeats):
            for mode in modes:
                out = subprocess.run(
                    [sys.executable, __file__, "_child", mode, str(args.epochs), logits_file],
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(res)
                print(mode, rep, res, file=sys.stderr)
    med = {m: statistics.median(r["step_ms_median"] for r in rs) for m, rs in results.items()}
    epoch = {m: statistics.median(r["epoch_s_median"] for r in rs) for m, rs in results.items()}
    macs = {m: statistics.median(r["mean_macs"] for r in rs) for m, rs in results.items()}
    lines = [
        "| run | step ms (median of medians) | epoch s | mean MACs of what runs | step ratio vs fixed | "
        "MACs-normalised ratio |",
        "|---|---|---|---|---|---|",
    ]
    for m in results:
        ratio = med[m] / med["fixed"]
        norm = ratio / (macs[m] / macs["fixed"])
        lines.append(f"| {m} | {med[m]:.2f} | {epoch[m]:.3f} | {macs[m]:.4g} | {ratio:.3f} | {norm:.3f} |")
    lines += [
        "",
        "bsn_kK = BSN continuing from the converged logits with K samples per step (batch split in K chunks); "
        "fixed = plain Lightning training of the deterministic sub-network (pruned). Interleaved fresh "
        f"processes, {args.repeats} repeats, {args.epochs} epochs each, batch 64, CNF 6x32 on digits 8x8, "
        "validation off. Target: BSN <= 1.15x fixed.",
    ]
    from _results import append

    append("BSN per-step overhead vs the physical limit", "\n".join(lines))


def samples(args) -> None:
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        r = _search(
            dict(
                budget="50%",
                epochs=args.epochs,
                seed=0,
                num_samples=k,
                layers=args.layers,
                channels=args.channels,
                image_size=args.image_size,
            )
        )
        rows.append((k, r))
    lines = [
        "| samples per step | step ms | test acc | exported MACs | within | method |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in rows:
        lines.append(
            f"| {k} | {r['search_timing']['step_ms_median']:.1f} | {r['accuracy']['test']:.4f} | "
            f"{r['costs']['macs']:.4g} | {r['selection']['within_budget']} | {r['selection']['method']} |"
        )
    from _results import append

    append(
        f"BSN samples per step (budget 50% MACs, CNF {args.layers}x{args.channels} digits {args.image_size}, "
        f"{args.epochs} epochs)",
        "\n".join(lines),
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(_overhead_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("budgets")
    b.add_argument("--budgets", default="25%,50%,75%")
    b.add_argument("--epochs", type=int, default=15)
    b.add_argument("--seeds", default="0,1")
    o = sub.add_parser("overhead")
    o.add_argument("--repeats", type=int, default=5)
    o.add_argument("--epochs", type=int, default=2)
    o.add_argument("--converge-epochs", type=int, default=8)
    o.add_argument("--with-k4", action="store_true")
    s = sub.add_parser("samples")
    s.add_argument("--ks", default="1,2,4,8")
    s.add_argument("--epochs", type=int, default=6)
    for q in (b, s):
        q.add_argument("--layers", type=int, default=4)
        q.add_argument("--channels", type=int, default=16)
        q.add_argument("--image-size", type=int, default=16)
    args = p.parse_args()
    {"budgets": budgets, "overhead": overhead, "samples": samples}[args.cmd](args)


if __name__ == "__main__":
    main()
