"""Where compare's retraining spends its time: the retraining every row gets (``nni_bsn.compare.row._retrain``,
NNI's Classification evaluator on Lightning) against a plain torch loop doing the same work (the same frozen
network, data, batches, optimizer and epochs; a validation pass after each epoch), interleaved, medians.

    python benchmarks/bench_retrain.py [--rows cheapest,full] [--epochs 1] [--repeats 3] [--train-size N]

Fashion-MNIST (all 55,000 training images by default) at 16x16 on CNF 4x16, as the full-data benchmark retrains;
one torch thread. Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _results import append  # noqa: E402


def _plain_loop(cfg, spec: dict, arch: dict, loaders) -> float:
    """Seconds of the same retraining as a hand-written loop: Adam at compare's learning rate and weight decay,
    cross-entropy, ``cfg.retrain`` epochs, a validation pass after each."""
    import pytorch_lightning as pl

    from nni_bsn.compare.row import reset_order
    from nni_bsn.jobs.builders import rebuild_space
    from nni_bsn.network.export import load_frozen_model

    train, val, _ = loaders
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    reset_order(train, cfg.seed)
    net = load_frozen_model(lambda: rebuild_space(spec), arch)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(cfg.retrain):
        net.train()
        for x, y in train:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            for x, _y in val:
                net(x)
    return time.perf_counter() - started


def _compare_path(cfg, spec: dict, arch: dict, loaders, num_classes: int) -> float:
    """Seconds of compare's own retraining fit (its accuracy evaluation afterwards not counted)."""
    from nni_bsn.compare.row import _retrain

    return _retrain(cfg, spec, arch, loaders, num_classes)[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="cheapest,full")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from nni_bsn.compare.fixed import fixed_network
    from nni_bsn.compat import quiet_library_logs, quiet_library_warnings
    from nni_bsn.jobs.builders import build_space, load_job_data
    from nni_bsn.jobs.config import CompareConfig

    quiet_library_warnings()  # as compare's row processes
    quiet_library_logs()
    cfg = CompareConfig(
        dataset="fashion-mnist",
        image_size=16,
        layers=4,
        channels=16,
        train_size=args.train_size,
        epochs=args.epochs,
        retrain_epochs=args.epochs,
    )
    data = load_job_data(cfg.search_config())
    _, spec = build_space(cfg.search_config(), data.in_channels, data.info.num_classes, data.info.image_size)
    loaders = (data.train, data.val, data.test)
    times: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for row in args.rows.split(","):
            row_spec, arch = fixed_network(cfg, row, spec, None, data)
            kinds = ["compare (Lightning)", "plain torch loop"]
            for name in kinds if repeat % 2 == 0 else kinds[::-1]:  # interleaved, the order alternating
                seconds = (
                    _compare_path(cfg, row_spec, arch, loaders, data.info.num_classes)
                    if name == kinds[0]
                    else _plain_loop(cfg, row_spec, arch, loaders)
                )
                times.setdefault((row, name), []).append(seconds)
                print(f"{row} {name}: {times[(row, name)][-1]:.1f} s", flush=True)
    lines = [
        f"{data.info.sizes['train']} training images, 16x16, CNF 4x16, batch {cfg.batch_size}, {args.epochs} "
        f"epoch(s) with a validation pass each, one torch thread; medians of {args.repeats}, interleaved.",
        "",
        "| row | compare's retraining s | plain torch loop s | ratio of the medians | median of the paired ratios |",
        "|---|---|---|---|---|",
    ]
    for row in args.rows.split(","):
        ours = statistics.median(times[(row, "compare (Lightning)")])
        plain = statistics.median(times[(row, "plain torch loop")])
        paired = statistics.median(
            a / b for a, b in zip(times[(row, "compare (Lightning)")], times[(row, "plain torch loop")])
        )
        lines.append(f"| {row} | {ours:.1f} | {plain:.1f} | {ours / plain:.2f} | {paired:.2f} |")
    append("Where compare's retraining spends its time", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
