"""``nni-bsn``: search with BSN, sweep budgets, export to ONNX."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

from .config import COSTS, PRESETS, SPACES, SearchConfig, UsageError, check_data_cost_budget

__all__ = ["main", "build_parser"]


def _int_at_least(low: int, wording: str):
    """An argparse type: an integer >= ``low``, refused with ``expected <wording>``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _keep_prob(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a probability strictly between 0 and 1, got {text!r}")
    return value


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default=None, help=f"search space: {', '.join(SPACES)} (default: cnf)")
    p.add_argument("--dataset", default=None, help="digits (embedded, default), cifar10 or cifar100")
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/ or cifar-100-python/")
    p.add_argument("--cost", default=None, help=f"cost to budget: {', '.join(COSTS)} (default: macs)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="search epochs (default: 10)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--accelerator", default="cpu", choices=["auto", "cpu", "gpu"], help="Lightning accelerator")
    p.add_argument("--devices", type=_positive_int, default=1, help="devices; > 1 on GPUs runs Lightning DDP")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="the paper's configuration")
    p.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted search from the checkpoint kept in <out>.partial/")
    g = p.add_argument_group("space shape")
    g.add_argument("--layers", type=_positive_int, default=None, help="CNF layers (default: 4)")
    g.add_argument("--channels", type=_positive_int, default=None, help="CNF channels (default: 16)")
    g.add_argument("--image-size", type=_positive_int, default=None, help="input size (default: 16 digits, 32 CIFAR)")
    g.add_argument("--units", type=_positive_int, default=None, help="ResNet-fabric units per stage (default: 2)")
    g.add_argument("--maps", type=_int_list, default=None, help="ResNet-fabric channels per stage, e.g. 8,16,32")
    g.add_argument("--shortcuts", default=None, help="ResNet-fabric shortcut letters among s, l, r ('' for none)")
    g = p.add_argument_group("BSN")
    g.add_argument("--lam", type=float, default=None, help="weight of the budget penalty (default: 2)")
    g.add_argument("--num-samples", type=_positive_int, default=None, help="architectures per step, the batch split between them (default: 1)")
    g.add_argument("--arc-learning-rate", type=float, default=None, help="logits learning rate (default: 0.1)")
    g.add_argument("--init-keep-prob", type=_keep_prob, default=None,
                   help="initial keep-probability of every gate, or 'auto' (default): the largest (<= 0.95) whose "
                   "expected cost meets the budget; the paper's is 0.95")
    g.add_argument("--warmup-epochs", type=_non_negative_int, default=None, help="weights-only epochs first")
    g.add_argument("--allow-over-budget", action="store_true", help="export the closest architecture if none fits")
    g.add_argument("--finetune-epochs", type=_non_negative_int, default=None,
                   help="train the found architecture further before evaluating it (default: 0)")
    g.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-bsn", description="Budgeted Super Networks for NNI 3.0")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="search an architecture within a budget")
    _add_search_options(p)
    p.add_argument("--budget", default=None, help="budget: a number in the cost's unit or a percentage (default: 50%%)")
    p.add_argument("--out", default=None, help="output folder (default: bsn-search)")

    p = sub.add_parser("sweep", help="search at several budgets and plot accuracy against cost")
    _add_search_options(p)
    p.add_argument("--budgets", default="10%,25%,50%,100%", help="comma-separated budgets (default: 10%%,25%%,50%%,100%%)")
    p.add_argument("--out", default="bsn-sweep", help="output folder (default: bsn-sweep)")

    p = sub.add_parser("export", help="rebuild a found architecture and export it to ONNX")
    p.add_argument("arch", help="arch.json written by `nni-bsn search` (report.json and weights.pt are read beside it)")
    p.add_argument("--out", default="model.onnx", help="ONNX file to write (default: model.onnx)")
    p.add_argument("--force", action="store_true", help="replace the ONNX file if it exists")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |torch - ONNX Runtime| allowed (default: 1e-4)")

    p = sub.add_parser("compare", help="BSN beside NNI's DARTS, GumbelDARTS, ENAS, Proxyless and RandomOneShot",
                       description="Run each strategy (in its own process) on the same space, data, seed and epochs, "
                       "retrain each found architecture from scratch the same way, and write one table and one "
                       "accuracy-vs-MACs plot. Exit code 1 if a strategy failed (its row says why; every output "
                       "is still written), 2 on bad input.")
    p.add_argument("--strategies", default="bsn,darts,gumbel-darts,enas,proxyless,random,darts+penalty,proxyless+penalty",
                   help="comma-separated, among bsn, darts, gumbel-darts, enas, proxyless, random, darts+penalty, "
                   "proxyless+penalty (default: all eight)")
    p.add_argument("--space", default=None, help="cnf (default) or resnet-fabric")
    p.add_argument("--dataset", default=None, help="digits (embedded, default), cifar10 or cifar100")
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/ or cifar-100-python/")
    p.add_argument("--epochs", type=_positive_int, default=None, help="search epochs of every strategy (default: 3)")
    p.add_argument("--retrain-epochs", type=_positive_int, default=None,
                   help="epochs to retrain each found architecture from scratch (default: the search epochs)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--cost", default=None, help=f"BSN's budgeted cost: {', '.join(COSTS)} (default: macs)")
    p.add_argument("--budget", default=None, help="BSN's budget and the penalty rows' baseline (default: 50%%)")
    p.add_argument("--lam", type=float, default=None, help="BSN's lambda and the penalty rows' scale (default: 2)")
    p.add_argument("--init-keep-prob", type=_keep_prob, default=None,
                   help="BSN's initial keep-probability of the gates, or 'auto' (default; see nni-bsn search -h)")
    p.add_argument("--layers", type=_positive_int, default=None, help="CNF layers (default: 4)")
    p.add_argument("--channels", type=_positive_int, default=None, help="CNF channels (default: 8)")
    p.add_argument("--image-size", type=_positive_int, default=None, help="input size (default: 16 digits, 32 CIFAR)")
    p.add_argument("--units", type=_positive_int, default=None, help="ResNet-fabric units per stage (default: 2)")
    p.add_argument("--maps", type=_int_list, default=None, help="ResNet-fabric channels per stage, e.g. 8,16,32")
    p.add_argument("--shortcuts", default=None, help="ResNet-fabric shortcut letters among s, l, r ('' for none)")
    p.add_argument("--limit-train-batches", type=_positive_int, default=None,
                   help="training batches per epoch, for quick checks (default: all)")
    p.add_argument("--limit-val-batches", type=_positive_int, default=None,
                   help="validation batches per epoch, for quick checks (default: all)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads of each strategy's process (default: 1, which keeps timings comparable "
                   "when other work shares the CPU)")
    p.add_argument("--strategy-timeout", type=float, default=None,
                   help="seconds allowed per strategy (search and retraining); it then fails (default: no limit)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and latency column")
    p.add_argument("--out", default="bsn-compare", help="output folder (default: bsn-compare)")
    p.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    return parser


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """A :class:`SearchConfig` from parsed arguments: defaults, then the preset, then explicit options."""
    values: dict[str, Any] = {}
    if args.preset:
        values.update(PRESETS[args.preset])
    explicit = {
        "space": args.space, "dataset": args.dataset, "data_dir": args.data_dir, "cost": args.cost,
        "epochs": args.epochs, "batch_size": args.batch_size, "layers": args.layers, "channels": args.channels,
        "image_size": args.image_size, "units": args.units, "maps": args.maps, "shortcuts": args.shortcuts,
        "lam": args.lam, "num_samples": args.num_samples, "arc_learning_rate": args.arc_learning_rate,
        "warmup_epochs": args.warmup_epochs,
        "init_keep_prob": getattr(args, "init_keep_prob", None), "finetune_epochs": args.finetune_epochs,
        "budget": getattr(args, "budget", None), "out": getattr(args, "out", None),
    }
    values.update({k: v for k, v in explicit.items() if v is not None})
    values.update(seed=args.seed, accelerator=args.accelerator, devices=args.devices, force=args.force,
                  resume=args.resume,
                  allow_over_budget=args.allow_over_budget, onnx=not args.no_onnx, preset=args.preset)
    known = {f.name for f in fields(SearchConfig)}
    cfg = SearchConfig(**{k: v for k, v in values.items() if k in known})
    if cfg.space not in SPACES:
        raise UsageError(f"unknown space {cfg.space!r}; choose one of {', '.join(SPACES)}")
    check_data_cost_budget(cfg.dataset, cfg.cost, cfg.budget)
    if args.image_size is None and "image_size" not in values:
        cfg.image_size = 16 if cfg.dataset == "digits" else 32
    return cfg


def _progress(message: str) -> None:
    print(f"nni-bsn: {message}", file=sys.stderr, flush=True)


def _search(args: argparse.Namespace) -> int:
    from .outputs import atomic_output_dir, partial_dir
    from .workflow import run_search

    cfg = config_from_args(args)
    if int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0:
        # A DDP worker that Lightning started by re-running this command: it trains, rank 0 writes the outputs.
        import tempfile

        with tempfile.TemporaryDirectory(prefix="nni-bsn-rank-") as tmp:
            run_search(cfg, Path(tmp), progress=lambda message: None)
        return 0
    try:
        with atomic_output_dir(cfg.out, cfg.force) as tmp:
            report = run_search(cfg, tmp, progress=_progress)
    except (KeyboardInterrupt, SystemExit):
        partial = partial_dir(cfg.out)
        if (partial / "last.ckpt").is_file():
            _progress(f"interrupted: checkpoint kept in {partial}/; run the same command with --resume to continue")
        else:
            _progress("interrupted before the first checkpoint; nothing was written")
        return 130
    _print_summary(report, cfg.out)
    return 0


def _print_summary(report: dict, out: str) -> None:
    budget = ", ".join(f"{b['cost']} <= {b['limit']:.4g} {b['unit']} ({b['spec']})" for b in report["budgets"])
    print(f"architecture: {report['selection']['method']}; within budget: {report['selection']['within_budget']}")
    print(f"budget: {budget}")
    print(f"costs: MACs {report['costs']['macs']:.4g}, params {report['costs']['params']:.4g}"
          + (f", ONNX Runtime latency {report['costs']['latency_ms']:.3f} ms" if "latency_ms" in report["costs"] else ""))
    print(f"accuracy: val {report['accuracy']['val']:.4f}, test {report['accuracy']['test']:.4f}")
    print(f"search: {report['search_seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB")
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(out).iterdir())
    print(f"outputs in {out}/: {' '.join(files)}")


def _sweep(args: argparse.Namespace) -> int:
    from .budget import parse_budget
    from .outputs import atomic_output_dir
    from .plots import plot_accuracy_vs_cost
    from .workflow import run_search

    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    if not budgets:
        raise UsageError("--budgets is empty; give comma-separated budgets like 10%,25%,50%")
    for b in budgets:
        try:
            parse_budget(b)
        except ValueError as e:
            raise UsageError(str(e)) from None
    args.budget = budgets[0]
    base = config_from_args(args)
    rows = []
    with atomic_output_dir(base.out, base.force) as tmp:
        for b in budgets:
            cfg = SearchConfig(**{**base.__dict__, "budget": b, "onnx": False})
            sub = tmp / f"budget_{b.replace('%', 'pct')}"
            sub.mkdir()
            _progress(f"budget {b}")
            report = run_search(cfg, sub, progress=_progress)
            rows.append({"budget": b, "macs": report["costs"]["macs"], "params": report["costs"]["params"],
                         "val_acc": report["accuracy"]["val"], "test_acc": report["accuracy"]["test"],
                         "within_budget": report["selection"]["within_budget"],
                         "search_seconds": report["search_seconds"], "strategy": f"BSN {b}"})
        (tmp / "sweep.json").write_text(json.dumps(rows, indent=2))
        lines = ["| budget | MACs | params | val acc | test acc | within budget | search s |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['budget']} | {r['macs']:.4g} | {r['params']:.4g} | {r['val_acc']:.4f} | {r['test_acc']:.4f} "
                  f"| {r['within_budget']} | {r['search_seconds']:.1f} |" for r in rows]
        (tmp / "sweep.md").write_text("\n".join(lines) + "\n")
        plot_accuracy_vs_cost(rows, tmp / "accuracy_vs_cost.png", cost_key="macs", acc_key="test_acc",
                              label_key="strategy")
    print("\n".join(lines))
    print(f"outputs in {base.out}/")
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from .builders import rebuild_space
    from .data import DataError, get_dataloaders
    from .export import ExportError, export_onnx, measure_ort_latency

    arch_path = Path(args.arch)
    if not arch_path.is_file():
        raise UsageError(f"architecture file {arch_path} does not exist")
    try:
        arch = json.loads(arch_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{arch_path} is not a JSON architecture: {e}") from None
    report_path = arch_path.with_name("report.json")
    if not report_path.is_file():
        raise UsageError(f"{report_path} not found: export needs the report.json written beside arch.json by "
                         "`nni-bsn search` (it names the space)")
    report = json.loads(report_path.read_text())
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} already exists; pass --force to replace it")
    space = rebuild_space(report["space"])
    unknown = set(arch) - set(space.simplify())
    missing = set(space.simplify()) - set(arch)
    if unknown or missing:
        raise UsageError(f"{arch_path} does not fit the space of {report_path}: "
                         + (f"unknown labels {sorted(unknown)[:5]}" if unknown else f"missing labels {sorted(missing)[:5]}"))
    model = space.freeze(arch)
    weights = arch_path.with_name("weights.pt")
    if weights.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        _progress(f"loaded trained weights from {weights}")
    else:
        _progress(f"no {weights.name} beside {arch_path.name}: exporting freshly initialised weights")
    cfg = report.get("config", {})
    try:
        _, _, test, info = get_dataloaders(cfg.get("dataset", "digits"), cfg.get("data_dir"), 16,
                                           report["dataset"].get("image_size"), 0)
        example = next(iter(test))[0]
        if report["space"]["name"] not in ("cnf", "resnet-fabric") and example.shape[1] != 3:
            example = example.expand(-1, 3, -1, -1)
    except DataError:
        shape = (16, report["space"].get("in_channels", 3), report["dataset"]["image_size"], report["dataset"]["image_size"])
        example = torch.randn(*shape)
        _progress("dataset not available: checking parity on random inputs")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        info_onnx = export_onnx(model, example, tmp, tolerance=args.tolerance)
    except ExportError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(str(e)) from None
    os.replace(tmp, out)
    lat = measure_ort_latency(out, (1, *example.shape[1:]))
    print(f"wrote {out}: max |torch - ONNX Runtime| = {info_onnx['max_abs_diff']:.2e}, "
          f"ONNX Runtime latency {lat['median_ms']:.3f} ms (batch 1, {lat['threads']} thread(s), median)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import shlex

    from .compare import run_compare
    from .compare_report import equivalent_command, markdown_table
    from .config import CompareConfig, check_compare_config, parse_strategies
    from .outputs import atomic_output_dir

    explicit = {
        "space": args.space, "dataset": args.dataset, "data_dir": args.data_dir, "epochs": args.epochs,
        "retrain_epochs": args.retrain_epochs, "batch_size": args.batch_size, "cost": args.cost,
        "budget": args.budget, "lam": args.lam, "init_keep_prob": args.init_keep_prob, "layers": args.layers,
        "channels": args.channels,
        "image_size": args.image_size, "units": args.units, "maps": args.maps, "shortcuts": args.shortcuts,
        "limit_train_batches": args.limit_train_batches, "limit_val_batches": args.limit_val_batches,
        "strategy_timeout": args.strategy_timeout, "threads": args.threads,
    }
    cfg = CompareConfig(strategies=parse_strategies(args.strategies), seed=args.seed, onnx=not args.no_onnx,
                        out=args.out, force=args.force, **{k: v for k, v in explicit.items() if v is not None})
    if args.image_size is None and cfg.dataset.lower() != "digits":
        cfg.image_size = 32
    check_compare_config(cfg)
    typed = Path(sys.argv[0]).name == "nni-bsn" and sys.argv[1:2] == ["compare"]
    command = shlex.join(["nni-bsn", *sys.argv[1:]]) if typed else equivalent_command(cfg)
    with atomic_output_dir(cfg.out, cfg.force) as tmp:
        report = run_compare(cfg, tmp, progress=_progress, command=command)
    print(markdown_table(report["rows"]))
    print(f"outputs in {cfg.out}/: compare.md compare.csv compare.json accuracy_vs_cost.png logs/")
    if report["failed"]:
        _progress(f"failed: {', '.join(report['failed'])} (see {cfg.out}/logs/); exit code 1")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        warnings.filterwarnings("ignore")
        for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "nni"):
            logging.getLogger(name).setLevel(logging.ERROR)
    handlers = {"search": _search, "sweep": _sweep, "export": _export, "compare": _compare}
    try:
        return handlers[args.command](args)
    except UsageError as e:
        print(f"nni-bsn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nni-bsn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
