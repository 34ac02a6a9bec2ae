"""BSN beside NNI's DARTS on the same space, data, seed and epochs, each found network retrained the same way.

    python examples/compare_bsn_darts.py --epochs 3 --out bsn-vs-darts

The Python form of `nni-bsn compare --strategies bsn,darts`: every strategy searches in its own process, then its
architecture is retrained from scratch. Writes compare.md, compare.csv, compare.json and accuracy_vs_cost.png
into --out and prints one line per row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nni_bsn  # noqa: F401  (first: quiets NNI's import-time warnings)
from nni_bsn.compare import run_compare
from nni_bsn.jobs.config import CompareConfig


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="bsn,darts", help="rows, as `nni-bsn compare --strategies`")
    parser.add_argument("--budget", default="50%", help="BSN's MACs budget")
    parser.add_argument("--epochs", type=int, default=3, help="search epochs, and retraining epochs")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--limit-batches", type=int, default=None, help="at most this many batches an epoch")
    parser.add_argument("--out", default="bsn-vs-darts")
    args = parser.parse_args(argv)

    config = CompareConfig(
        strategies=tuple(args.strategies.split(",")),
        budget=args.budget,
        epochs=args.epochs,
        layers=args.layers,
        channels=args.channels,
        image_size=args.image_size,
        limit_train_batches=args.limit_batches,
        limit_val_batches=args.limit_batches,
        onnx=False,  # no latency column: ONNX export of each row takes longer than the search at this size
        out=args.out,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = run_compare(config, out, progress=lambda line: print(line, flush=True))
    for row in report["rows"]:
        if row["status"] == "ok":
            print(f"{row['strategy']}: test accuracy {row['test_acc']:.4f}, MACs {int(row['macs']):,}")
        else:
            print(f"{row['strategy']}: failed ({row.get('error', row['status'])})")
    return report


if __name__ == "__main__":
    main()
