"""BSN's accuracy-cost front on Fashion-MNIST beside NNI's strategies, random architectures and fixed networks.

    python benchmarks/bench_fashion.py [--seeds 0,1,2] [--epochs 3] [--retrain-epochs 10] [--jobs 2]   # all 55,000 images

The estimator study (BSN's estimators against random architectures on the same seeds):

    python benchmarks/bench_fashion.py --bsn-kinds bsn,bsn-k2,bsn-disarm,bsn-val --budgets 25%,50% \
        --peers none --fixed full --random-kinds random-arch --name fashion_estimators --title "Fashion-MNIST estimators"

Runs ``nni-bsn compare`` once (every row at every seed, each in its own process, ``--jobs`` at a time): BSN at each
budget (with its default hinge penalty and with ``penalty='abs'``), NNI's DARTS / ENAS / Proxyless / RandomOneShot (with the DARTS paper's derivation beside the
DARTS-family exports), random connected architectures at each budget (anywhere within it, and costing 90-100% of
it; ``--random-archs`` per seed), the full super network, the cheapest connected path and a plain ResNet. Every architecture is retrained from
scratch the same way. Appends the mean ± std table, the targets (met or not) and the command to
benchmarks/RESULTS.md and copies the plot to benchmarks/<name>.png. ``--accelerator gpu`` repeats it on a CUDA
machine (on CPU nothing changes). Fashion-MNIST comes from ``--data-dir`` or Debian's dataset-fashion-mnist.
``--from-run`` runs nothing: it summarises the finished run in ``--out`` again with this code (given the options
the run had) and appends that. ``--merge RUN [RUN ...]`` runs nothing either: it merges finished runs of one recipe
(other rows, seeds or budgets) into one table and plot in ``--out``, and appends that.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import append  # noqa: E402

from nni_bsn.jobs.config import FABRICS  # noqa: E402

PEERS = "darts,enas,proxyless,random"  # GumbelDARTS: --peers adds it (the costliest search, DARTS's family)
# On NasBench201 (python benchmarks/bench_fashion.py --space nasbench201 --peers darts,gumbel-darts,...) every
# NNI strategy is at home; the fixed networks (full, resnet, cheapest) are the fabrics' and are left out there.
HERE = Path(__file__).resolve().parent


def _names(text: str) -> list[str]:
    return [] if text == "none" else text.split(",")


def _rows(args: argparse.Namespace) -> str:
    budgets, space = args.budgets.split(","), args.space
    bsn = [f"{kind}@{b}" for kind in _names(args.bsn_kinds) for b in budgets]
    random = [f"{kind}@{b}" for b in budgets for kind in _names(args.random_kinds)]
    fixed = _names(args.fixed) if space in FABRICS else []  # the fixed networks are the fabrics'
    peers = _names(args.peers)
    return ",".join([*bsn, *peers, *fixed, *random])


def _command(args: argparse.Namespace) -> list[str]:
    command = ["nni-bsn", "compare", "--strategies", _rows(args)]
    command += ["--dataset", "fashion-mnist", "--space", args.space, "--seeds", args.seeds]
    command += [] if args.train_size is None else ["--train-size", str(args.train_size)]
    command += ["--image-size", str(args.image_size)]
    command += ["--epochs", str(args.epochs), "--retrain-epochs", str(args.retrain_epochs)]
    command += ["--layers", str(args.layers), "--channels", str(args.channels)]
    command += ["--random-archs", str(args.random_archs), "--jobs", str(args.jobs), "--budget", "50%"]
    command += [
        "--accelerator",
        args.accelerator,
        "--devices",
        str(args.devices),
        "--out",
        args.out,
        "--force",
    ]
    command += [] if args.data_dir is None else ["--data-dir", args.data_dir]
    return command + args.extra


def _body(report: dict, plot: str, command: list[str]) -> str:
    from nni_bsn.compare.report import summary_lines

    data = report["dataset"]
    lines = [
        f"Fashion-MNIST, {data['sizes']['train']} training images"
        f"{' (a fixed class-balanced subset)' if data['sizes']['train'] < 55000 else ' (all)'}, validation "
        f"{data['sizes']['val']}, the official {data['sizes']['test']} test images, {data['image_size']}x"
        f"{data['image_size']}; space {json.dumps(report['space'])}; seeds {report['seeds']}; "
        f"{report['total_seconds'] / 60:.0f} min in all.",
        "",
        f"- compare command: `{' '.join(command)}`",
        f"- every setting: `{report['equivalent_command']}`",
        *([f"- the merged runs' commands: `{report['command']}`"] if report.get("merged_from") else []),
        f"- plot: [{plot}]({plot})",
        "",
        *summary_lines(report),
        "",
        "Notes of the run:",
        "",
        *[f"- {n}" for n in report["notes"]],
    ]
    return "\n".join(lines)


def _summarised_again(result: Path, out: str) -> dict:
    """The report of a finished run (moved to ``out``, say), its summary, targets, notes and command computed again
    from its rows by this code, and its outputs written again beside it."""
    from nni_bsn.compare.report import equivalent_command, write_outputs
    from nni_bsn.compare.run import summarise
    from nni_bsn.jobs.config import CompareConfig

    report = json.loads(result.read_text())
    cfg = CompareConfig.from_dict({**report["config"], "out": out})
    if (
        "full_macs" not in report
    ):  # a run from before compare kept it: on a MACs budget, the budget's full cost
        report["full_macs"] = report["budget"]["full"] if report["budget"]["cost"] == "macs" else None
    report["equivalent_command"] = equivalent_command(cfg)
    write_outputs(summarise(report, cfg), result.parent)
    return report


def _merged(runs: list[Path], out: Path) -> dict:
    """One report from several finished runs of the same recipe (their rows together, each (row, seed, draw) once,
    the first run's kept), summarised and written into ``out``; ``ValueError`` if their recipes differ."""
    from nni_bsn.compare.report import write_outputs
    from nni_bsn.compare.run import NOT_IDENTITY, summarise
    from nni_bsn.jobs.config import CompareConfig

    # What may differ between merged runs: what a kept row may differ in, the seed and budget of the run, and
    # whether it measured the ONNX latency (which changes no accuracy; rows without it show none).
    free = (*NOT_IDENTITY, "seed", "budget", "onnx")
    reports = [json.loads((run / "compare.json").read_text()) for run in runs]
    base = reports[0]
    defaults = CompareConfig().as_dict()  # an option a run's version did not have yet: its default

    def recipe(report: dict) -> dict:
        config = {**defaults, **report["config"]}
        return {k: v for k, v in config.items() if k not in free}

    for run, report in zip(runs, reports):
        differ = sorted(k for k in recipe(base) if recipe(base)[k] != recipe(report).get(k))
        if differ or report["dataset"] != base["dataset"]:
            raise ValueError(f"{run} is not the recipe of {runs[0]} (differs in {differ or 'the dataset'})")
    seen, rows = set(), []
    for report in reports:
        for row in report["rows"]:
            key = (row["name"], row["seed"], json.dumps(row.get("draw"), sort_keys=True))
            if key not in seen:
                seen.add(key)
                rows.append(row)
    strategies = list(dict.fromkeys(n for r in reports for n in r["config"]["strategies"]))
    seeds = sorted({s for r in reports for s in r["seeds"]})
    merged = {
        **base,
        "command": " ; ".join(r["command"] or r["equivalent_command"] for r in reports),
        "total_seconds": sum(r["total_seconds"] for r in reports),
        "row_budgets": {k: v for r in reports for k, v in r.get("row_budgets", {}).items()},
        "seeds": seeds,
        "config": {**base["config"], "strategies": strategies, "seeds": seeds},
        "rows": rows,
        "failed": [r["name"] for r in rows if r["status"] != "ok"],
        "resumed": sum(bool(r.get("resumed")) for r in rows),
        "merged_from": [str(run) for run in runs],
    }
    cfg = CompareConfig.from_dict({**merged["config"], "out": str(out)})
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(summarise(merged, cfg), out)
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="10%,25%,50%")
    parser.add_argument("--peers", default=PEERS, help="NNI's strategies beside BSN ('none': no peer)")
    parser.add_argument(
        "--fixed", default="full,resnet,cheapest", help="fixed networks, on a fabric ('none': no row)"
    )
    parser.add_argument("--bsn-kinds", default="bsn,bsn-abs", help="BSN's rows at each budget ('none': none)")
    parser.add_argument(
        "--random-kinds",
        default="random-arch,random-arch90",
        help="random rows at each budget ('none': none)",
    )
    parser.add_argument("--space", default="cnf")
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="a class-balanced subset (default: all 55,000; a subset cannot tell)",
    )
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--retrain-epochs",
        type=int,
        default=10,
        help="retraining epochs of every found or fixed network (10: 3 ranked architectures unlike 10, "
        "Kendall tau 0.42, docs/diagnosis.md)",
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--random-archs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu", "auto"))
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="bench-fashion")
    parser.add_argument("--name", default="fashion_front", help="the plot's name under benchmarks/")
    parser.add_argument("--title", default="Fashion-MNIST front", help="the RESULTS.md section's title")
    parser.add_argument(
        "--from-run",
        action="store_true",
        help="do not run compare: summarise the finished run in --out again with this code, and append it",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RUN",
        help="do not run compare: merge these finished runs (output folders of one recipe) into --out, and append",
    )
    parser.add_argument("extra", nargs="*", help="more nni-bsn compare options, after --")
    args = parser.parse_args()
    command = _command(args)
    result = Path(args.out) / "compare.json"
    if args.merge:
        try:
            report = _merged([Path(run) for run in args.merge], Path(args.out))
        except (OSError, ValueError, KeyError) as e:
            print(f"bench_fashion: cannot merge: {e}", file=sys.stderr)
            return 2
        command = ["python", "benchmarks/bench_fashion.py", "--merge", *args.merge, "--out", args.out]
        args.seeds = ",".join(map(str, report["seeds"]))
    elif args.from_run:  # --out and the other options as the run had them
        report = _summarised_again(result, args.out)
    else:
        print(" ".join(command), flush=True)
        # This Python's nni-bsn, whether or not its environment's bin/ is on PATH.
        code = subprocess.call([sys.executable, "-m", "nni_bsn", *command[1:]])
        if not result.is_file():
            print(f"bench_fashion: nni-bsn compare wrote no {result} (exit code {code})", file=sys.stderr)
            return 1
        report = json.loads(result.read_text())
    plot = f"{args.name}.png"
    shutil.copyfile(Path(args.out) / "accuracy_vs_cost.png", HERE / plot)
    append(f"{args.title} ({args.space}, seeds {args.seeds})", _body(report, plot, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
