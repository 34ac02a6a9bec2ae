"""Search cost of BSN against NNI's one-shot strategies: epoch time, step time and memory growth during fit.

    python benchmarks/bench_search_cost.py [--repeats 5] [--epochs 4] [--layers 6 --channels 32 --image-size 8]

Every (strategy, repeat) runs in a fresh process, interleaved, on the same CNF, data and batch (64).
``fixed@NN%`` is the physical limit: plain Lightning training (same evaluator, loaders and callbacks, validation
included) of one fixed connected sub-network with NN% of the super network's MACs (the first of a seeded draw
within 2 points of NN%), no search. The epoch
time is the median over epochs after the first (BSN's distribution has moved by then; 'converged' numbers use the
last epoch); memory is the growth of resident memory during the fit (sampled every 2 ms from the fit's start, after
the strategy's set-up), with the growth of peak RSS over set-up and fit beside it. Appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nni_bsn.network.training import QUIET_CPU  # noqa: E402

warnings.filterwarnings("ignore")

STRATEGIES = ["bsn@25%", "bsn@50%", "bsn@100%", "darts", "gumbel-darts", "proxyless", "enas", "random"]


def child(name: str, epochs: int, layers: int, channels: int, image_size: int) -> dict:
    import psutil
    import torch
    from nni.nas.evaluator.pytorch import Classification
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, RandomOneShot

    from evaluators import MacsCost
    from nni_bsn import BSN
    from nni_bsn.compat import TaggedENAS
    from nni_bsn.data import get_dataloaders
    from nni_bsn.network.training import StepTimer
    from search_spaces import ConvolutionalNeuralFabric

    torch.manual_seed(0)
    torch.set_num_threads(
        1
    )  # one thread per process: a 2-thread pool under other load runs many times slower
    train, val, _, _ = get_dataloaders("digits", batch_size=64, image_size=image_size, seed=0)
    space = ConvolutionalNeuralFabric(layers=layers, channels=channels, image_size=image_size, in_channels=1)
    timer = StepTimer()
    ev = Classification(
        train_dataloaders=train,
        val_dataloaders=val,
        num_classes=10,
        max_epochs=epochs,
        **QUIET_CPU,
        callbacks=[timer],
    )
    cost = MacsCost(input_shape=(1, 1, image_size, image_size)).bind(space)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    strategy, share = (
        None,
        math.nan,
    )  # share: MACs run over the whole super network's (BSN's: set after the fit)
    if name.startswith("fixed"):
        arch = fixed_arch(space, cost, float(name.split("@")[1].rstrip("%")) / 100)
        net = space.freeze(arch)
        share = cost(arch) / cost.full_cost()
        run = lambda: ev.evaluate(net)  # noqa: E731
    else:
        if name.startswith("bsn"):
            strategy = BSN(
                cost=MacsCost(input_shape=(1, 1, image_size, image_size)), budget=name.split("@")[1]
            )
        else:
            strategy = {
                "darts": DARTS,
                "gumbel-darts": GumbelDARTS,
                "proxyless": Proxyless,
                "random": RandomOneShot,
                "enas": lambda: TaggedENAS(reward_metric_name="val_acc"),
            }[name]()
        strategy.initialize(RawFormatModelSpace.from_model(space, ev), SequentialExecutionEngine())
        run = strategy.run
    # Memory growth during the fit: resident memory sampled every 2 ms, against its value when the fit starts
    # (after the strategy's set-up: mutation, and for BSN binding the cost evaluator).
    proc = psutil.Process()
    start_rss = proc.memory_info().rss
    peak = [start_rss]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run()
    stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if name.startswith("bsn"):  # mean MACs of the architectures sampled during the last epoch
        share = float(strategy.oneshot_module.trainer.callback_metrics["bsn/cost_macs"]) / cost.full_cost()
    epochs_s = timer.epochs
    return {
        "strategy": name,
        "epoch_s": statistics.median(epochs_s[1:] or epochs_s),
        "last_epoch_s": epochs_s[-1],
        "step_ms": timer.summary()["step_ms_median"],
        "rss_growth_mb": after - before,
        "fit_rss_growth_mb": (peak[0] - start_rss) / 2**20,
        "macs_share": share,
    }


def fixed_arch(space, cost, share: float, tolerance: float = 0.02) -> dict:
    """The first connected, pruned architecture of a seeded draw whose MACs are within ``tolerance`` of ``share``."""
    import random

    from evaluators.blocks import GATE_OFF, GATE_ON

    rng = random.Random(0)
    labels = list(space.gate_labels)
    full = cost.full_cost()
    for _ in range(100_000):
        p = rng.uniform(0.5, 1.0)
        arch = space.prune({label: GATE_ON if rng.random() < p else GATE_OFF for label in labels})
        if space.is_connected(arch) and abs(cost(arch) / full - share) <= tolerance:
            return arch
    raise RuntimeError(f"no connected architecture with {share:.0%} of the MACs found")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(child(sys.argv[2], *map(int, sys.argv[3:7]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    args = p.parse_args()
    names = args.strategies.split(",")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(args.repeats):
        for n in names:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "_child",
                    n,
                    str(args.epochs),
                    str(args.layers),
                    str(args.channels),
                    str(args.image_size),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(f"{n} failed: {out.stderr[-500:]}", file=sys.stderr)
                continue
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs[n].append(res)
            print(rep, res, file=sys.stderr)

    def med(n, key):
        vals = [r[key] for r in runs[n]]
        return statistics.median(vals) if vals else float("nan")

    darts_epoch, darts_mem = med("darts", "epoch_s"), med("darts", "fit_rss_growth_mb")
    lines = [
        "| strategy | MACs run ÷ full | epoch s (median) | last epoch s | step ms | peak RSS growth MB "
        "(set-up + fit) | RSS growth during fit MB | epoch ÷ DARTS | fit memory ÷ DARTS | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        share = med(n, "macs_share")
        lines.append(
            f"| {n} | {'' if math.isnan(share) else f'{share:.2f}'} | {med(n, 'epoch_s'):.3f} | "
            f"{med(n, 'last_epoch_s'):.3f} | {med(n, 'step_ms'):.1f} | "
            f"{med(n, 'rss_growth_mb'):.0f} | {med(n, 'fit_rss_growth_mb'):.0f} | "
            f"{med(n, 'epoch_s') / darts_epoch:.2f} | {med(n, 'fit_rss_growth_mb') / darts_mem:.2f} | "
            f"{len(runs[n])} |"
        )
    checks = []
    if runs.get("bsn@50%") and runs.get("darts"):
        r = med("bsn@50%", "epoch_s") / darts_epoch
        m = med("bsn@50%", "fit_rss_growth_mb") / darts_mem
        checks.append(
            f"- BSN at 50% vs DARTS: epoch {r:.2f}x (target <= 0.25x: {'met' if r <= 0.25 else 'NOT met'}), "
            f"memory growth during fit {m:.2f}x (target <= 0.4x: {'met' if m <= 0.4 else 'NOT met'})"
        )
    if runs.get("bsn@25%") and runs.get("bsn@100%"):
        r = med("bsn@25%", "last_epoch_s") / med("bsn@100%", "last_epoch_s")
        checks.append(
            f"- BSN at 25% vs at 100%, last epoch: {r:.2f}x (target <= 0.5x: {'met' if r <= 0.5 else 'NOT met'})"
        )
    for fixed in [n for n in names if n.startswith("fixed") and runs[n]]:
        bsn = "bsn@" + fixed.split("@")[1]
        if runs.get(bsn):
            checks.append(
                f"- {bsn} vs {fixed} (the physical limit at that budget): epoch "
                f"{med(bsn, 'epoch_s') / med(fixed, 'epoch_s'):.2f}x, memory growth during fit "
                f"{med(bsn, 'fit_rss_growth_mb') / med(fixed, 'fit_rss_growth_mb'):.2f}x; {fixed} vs "
                f"DARTS: epoch {med(fixed, 'epoch_s') / darts_epoch:.2f}x, memory "
                f"{med(fixed, 'fit_rss_growth_mb') / darts_mem:.2f}x"
            )
    notes = [
        "",
        "MACs run ÷ full: for BSN the mean MACs of the architectures sampled in the last epoch (pruned), "
        "for fixed@ rows the trained sub-network's, over the whole super network's.",
    ]
    from _results import append

    append(
        f"Search cost: CNF {args.layers} layers x {args.channels} channels, digits {args.image_size}x"
        f"{args.image_size}, batch 64, {args.epochs} epochs, {args.repeats} interleaved repeats",
        "\n".join(lines + [""] + checks + notes),
    )


if __name__ == "__main__":
    main()
