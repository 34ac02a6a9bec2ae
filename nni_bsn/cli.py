"""``nni-bsn``: search with BSN, sweep budgets, compare with NNI's strategies, export to ONNX."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from nni_bsn import __version__
from nni_bsn.jobs.config import (
    CompareConfig,
    SearchConfig,
    UsageError,
    check_compare_config,
    check_search_config,
    default_image_size,
    parse_strategies,
)
from nni_bsn.jobs.options import COMMAND_DEFAULTS, add_options, given_options, positive_float
from nni_bsn.jobs.presets import PRESETS
from nni_bsn.jobs.ranks import RankLost, is_worker_process, release_process_group, stop_on_lost_rank

__all__ = ["main", "build_parser", "config_from_args", "compare_config_from_args"]


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other bad input's (and the same exit code, 2)."""

    def error(self, message: str):
        self.exit(2, f"nni-bsn: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``nni-bsn`` parser; the jobs' options come from the one table :data:`nni_bsn.jobs.options.OPTIONS`."""
    parser = _Parser(prog="nni-bsn", description="Budgeted Super Networks for NNI 3.0")
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE)
    parser.add_argument("--version", action="version", version=f"nni-bsn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_options(sub.add_parser("search", help="search an architecture within a budget"), "search")

    p = sub.add_parser("sweep", help="search at several budgets and plot accuracy against cost")
    add_options(p, "sweep")
    p.add_argument(
        "--budgets", default="10%,25%,50%,100%", help="comma-separated budgets (default: %(default)s)"
    )

    p = sub.add_parser("export", help="rebuild a found architecture and export it to ONNX")
    p.add_argument(
        "arch", help="arch.json written by `nni-bsn search` (report.json and weights.pt are read beside it)"
    )
    p.add_argument("--out", default="model.onnx", help="ONNX file to write (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace the ONNX file if it exists")
    p.add_argument(
        "--tolerance",
        type=positive_float,
        default=1e-4,
        help="max |torch - ONNX Runtime| allowed, a positive number (default: %(default)s)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="export freshly initialised weights when weights.pt is missing (default: refuse)",
    )

    p = sub.add_parser(
        "compare",
        help="BSN beside NNI's DARTS, GumbelDARTS, ENAS, Proxyless and RandomOneShot",
        description="Run each strategy (in its own process) on the same space, data, seed and epochs, "
        "retrain each found architecture from scratch the same way, and write one table and one "
        "accuracy-vs-MACs plot. Exit code 1 if a strategy failed (its row says why; every output "
        "is still written), 2 on bad input.",
    )
    add_options(p, "compare")
    for command in sub.choices.values():  # -v after the command too; SUPPRESS keeps one given before it
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE)
    return parser


_VERBOSE = "show library logs and warnings"


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """A :class:`SearchConfig` from parsed arguments: defaults, then the preset, then the options given."""
    values: dict[str, Any] = dict(COMMAND_DEFAULTS.get(args.command, {}))
    if args.preset:
        values.update(PRESETS[args.preset])
    values.update(given_options(args, args.command))
    cfg = SearchConfig(**values)
    check_search_config(cfg)
    if "image_size" not in values:
        cfg.image_size = default_image_size(cfg.dataset, cfg.image_size)
    return cfg


def compare_config_from_args(args: argparse.Namespace) -> CompareConfig:
    """A :class:`CompareConfig` from parsed arguments: defaults, then the options given."""
    values = given_options(args, "compare")
    if "strategies" in values:
        values["strategies"] = parse_strategies(values["strategies"])
    cfg = CompareConfig(**values)
    if "image_size" not in values:
        cfg.image_size = default_image_size(cfg.dataset, cfg.image_size)
    check_compare_config(cfg)
    return cfg


def _load_libraries(args: argparse.Namespace) -> None:
    """Import torch, NNI and Lightning (once the arguments are checked), then quiet their loggers unless
    ``--verbose``: importing them sets their levels, so this comes after."""
    from nni_bsn import compat  # noqa: F401  (imports them, and guards NNI's experiment lock)
    from nni_bsn.quiet import quiet_library_logs

    if not args.verbose:
        quiet_library_logs()


def _progress(message: str) -> None:
    print(f"nni-bsn: {message}", file=sys.stderr, flush=True)


def _search(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # arguments are checked before torch and NNI load
    _load_libraries(args)
    from nni_bsn.jobs.checkpoints import has_checkpoint
    from nni_bsn.jobs.findings import summary_lines
    from nni_bsn.jobs.outputs import atomic_output_dir, partial_dir
    from nni_bsn.jobs.search import run_search, run_search_as_worker

    partial = partial_dir(cfg.out)
    if is_worker_process():  # a DDP worker (started by Lightning or a launcher): it trains, rank 0 writes
        with stop_on_lost_rank(partial, cfg.ddp_timeout):
            run_search_as_worker(cfg)
        return 0
    try:
        with atomic_output_dir(cfg.out, cfg.force) as tmp, stop_on_lost_rank(partial, cfg.ddp_timeout):
            report = run_search(cfg, tmp, progress=_progress)
    except (KeyboardInterrupt, SystemExit):
        if has_checkpoint(partial):
            _progress(
                f"interrupted: checkpoint kept in {partial}/; run the same command with --resume to continue"
            )
        else:
            shutil.rmtree(partial, ignore_errors=True)
            _progress("interrupted before the first checkpoint; nothing was written")
        return 130
    except OSError as e:
        resumable = "; run the same command with --resume to continue" if has_checkpoint(partial) else ""
        raise WriteFailure(f"{_os_error(e)}; nothing was written to {cfg.out}{resumable}") from None
    shutil.rmtree(partial, ignore_errors=True)
    print("\n".join(summary_lines(report, cfg.out)))
    return 0


class WriteFailure(Exception):
    """A file the job had to write could not be written (a full disk, a read-only or vanished folder)."""


def _os_error(e: OSError) -> str:
    """``e`` as the path it failed on and why, in one line."""
    import errno

    writing = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
    where = f" {e.filename}" if e.filename else ""
    return f"{'cannot write' if writing else 'failed on'}{where}: {e.strerror or e}"


def _sweep(args: argparse.Namespace) -> int:
    from nni_bsn.strategy.budget import parse_budget

    budgets = [b.strip() for b in args.budgets.split(",")]
    if not any(budgets):
        raise UsageError("--budgets is empty; give comma-separated budgets like 10%,25%,50%")
    if not all(budgets):
        raise UsageError(
            f"--budgets {args.budgets!r} has an empty item; give comma-separated budgets like 10%,25%,50%"
        )
    for b in budgets:
        try:
            parse_budget(b)
        except ValueError as e:
            raise UsageError(str(e)) from None
    repeated = next((b for i, b in enumerate(budgets) if b in budgets[:i]), None)
    if repeated is not None:
        raise UsageError(f"--budgets gives {repeated} twice; give each budget once")
    base = config_from_args(args)
    _load_libraries(args)
    from nni_bsn.jobs.outputs import atomic_output_dir, partial_dir
    from nni_bsn.jobs.sweep import run_sweep, run_sweep_as_worker

    if is_worker_process():  # a DDP worker: it trains each budget's search, rank 0 writes
        with stop_on_lost_rank(partial_dir(base.out), base.ddp_timeout):
            run_sweep_as_worker(base, budgets)
        return 0
    if base.resume and not partial_dir(base.out).is_dir():
        raise UsageError(
            f"nothing to resume: {partial_dir(base.out)} does not exist (an interrupted sweep keeps it)"
        )
    try:
        with (
            atomic_output_dir(base.out, base.force) as tmp,
            stop_on_lost_rank(partial_dir(base.out), base.ddp_timeout),
        ):
            _start_sweep(base)
            lines = run_sweep(base, budgets, tmp, progress=_progress)
    except (KeyboardInterrupt, SystemExit):
        _progress(
            f"interrupted: finished budgets and checkpoints kept in {partial_dir(base.out)}/; run the same "
            "command with --resume to continue"
        )
        return 130
    shutil.rmtree(partial_dir(base.out), ignore_errors=True)
    print("\n".join(lines))
    print(f"outputs in {base.out}/")
    return 0


def _start_sweep(base) -> None:
    """An interrupted sweep's budgets are resumed with ``--resume``, discarded with ``--force``, else refused
    (called holding the output's lock: no running sweep owns them)."""
    from nni_bsn.jobs.outputs import partial_dir

    kept = partial_dir(base.out)
    if base.resume or not kept.is_dir():
        return
    if any(kept.iterdir()) and not base.force:
        raise UsageError(
            f"an interrupted sweep's budgets are in {kept}/; run the same command with --resume to continue it, "
            "or with --force to discard them and start anew"
        )
    shutil.rmtree(kept)


def _check_writable(out: Path, force: bool) -> None:
    if out.is_dir():  # --force replaces a file, never a folder
        raise UsageError(
            f"cannot write the ONNX file {out}: it is a folder; give a file name, e.g. {out / 'model.onnx'}"
        )
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write the ONNX file {out}: {parent} is not a writable folder")


def _export(args: argparse.Namespace) -> int:
    arch_path, out = Path(args.arch), Path(args.out)
    from nni_bsn.jobs.found import ONNX_PREPROCESSING_KEY, check_arch_fits, example_input, read_found

    arch, report = read_found(arch_path)
    _check_writable(out, args.force)
    _load_libraries(args)
    from nni_bsn.jobs.builders import rebuild_space
    from nni_bsn.network.export import ExportError, export_and_time, load_frozen_model, write_metadata

    check_arch_fits(arch, rebuild_space(report["space"]), arch_path)
    weights = arch_path.with_name("weights.pt")
    if not weights.is_file() and not args.random_weights:
        raise UsageError(
            f"no {weights.name} beside {arch_path.name} ({weights}): export needs the trained weights; pass "
            "--random-weights to export freshly initialised ones"
        )
    try:
        model = load_frozen_model(
            lambda: rebuild_space(report["space"]), arch, weights if weights.is_file() else None
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    except (
        Exception
    ) as e:  # torch.load on a truncated or foreign file: OSError, RuntimeError, UnpicklingError
        raise UsageError(f"cannot read the weights {weights}: {type(e).__name__}: {e}") from None
    if weights.is_file():
        _progress(f"loaded trained weights from {weights}")
    else:
        _progress(f"no {weights.name} beside {arch_path.name}: exporting freshly initialised weights")
    example = example_input(report, _progress)
    try:
        info, lat = export_and_time(model, example, out, (1, *example.shape[1:]), tolerance=args.tolerance)
        if report.get("preprocessing"):
            write_metadata(out, {ONNX_PREPROCESSING_KEY: report["preprocessing"]})
    except ExportError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot write the ONNX file {out}: {e.strerror or e}") from None
    print(
        f"wrote {out}: max |torch - ONNX Runtime| = {info['max_abs_diff']:.2e}, "
        f"ONNX Runtime latency {lat['median_ms']:.3f} ms (batch 1, {lat['threads']} thread(s), median)"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    import shlex

    cfg = compare_config_from_args(args)
    _load_libraries(args)
    from nni_bsn.compare.report import equivalent_command, markdown_table
    from nni_bsn.compare.run import run_compare
    from nni_bsn.jobs.outputs import atomic_output_dir, partial_dir

    typed = Path(sys.argv[0]).name == "nni-bsn" and sys.argv[1:2] == ["compare"]
    command = shlex.join(["nni-bsn", *sys.argv[1:]]) if typed else equivalent_command(cfg)
    kept, searches = partial_dir(cfg.out) / "rows", partial_dir(cfg.out) / "checkpoints"
    if cfg.resume and not (kept.is_dir() or searches.is_dir()):
        raise UsageError(
            f"nothing to resume: {kept} does not exist (a comparison keeps its finished rows there, and its "
            f"searches' checkpoints in {searches})"
        )
    if is_worker_process():  # a rank other than 0 of a launch: it runs the same rows, rank 0 writes
        with tempfile.TemporaryDirectory(prefix="nni-bsn-compare-rank-") as tmp:
            run_compare(cfg, Path(tmp), progress=lambda message: None, command=command)
        return 0
    try:
        with atomic_output_dir(cfg.out, cfg.force) as tmp:
            report = run_compare(cfg, tmp, progress=_progress, command=command)
    except BaseException:
        if any(kept.glob("*.json")) or any(searches.glob("*/*.ckpt")):
            _progress(
                f"finished rows and searches' checkpoints kept in {partial_dir(cfg.out)}/; run the same command "
                "with --resume to continue"
            )
        raise
    shutil.rmtree(partial_dir(cfg.out), ignore_errors=True)
    print(markdown_table(report["rows"]))
    print(f"outputs in {cfg.out}/: compare.md compare.csv compare.json accuracy_vs_cost.png logs/")
    if report["failed"]:
        _progress(f"failed: {', '.join(report['failed'])} (see {cfg.out}/logs/); exit code 1")
        return 1
    return 0


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--budget -5%`` as ``--budget=-5%``: argparse takes a negative percentage for an option and says only
    "expected one argument"; attached, the value reaches its own check and its message."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.fullmatch(r"-[\d.]+%?", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_negative_values(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        from nni_bsn import quiet

        quiet.quiet_library_warnings()
    handlers = {"search": _search, "sweep": _sweep, "export": _export, "compare": _compare}
    try:
        return handlers[args.command](args)
    except UsageError as e:
        print(f"nni-bsn: error: {e}", file=sys.stderr)
        return 2
    except (WriteFailure, RankLost) as e:
        print(f"nni-bsn: error: {e}", file=sys.stderr)
        return 1
    # Writing a sweep's or comparison's outputs failed; what they finished stays in <out>.partial.
    except OSError as e:
        print(f"nni-bsn: error: {_os_error(e)}; earlier results are kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nni-bsn: interrupted", file=sys.stderr)
        return 130
    finally:
        release_process_group()


if __name__ == "__main__":
    sys.exit(main())
