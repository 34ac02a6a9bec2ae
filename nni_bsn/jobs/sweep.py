"""The sweep job behind ``nni-bsn sweep``: one search per budget, a table and a plot of accuracy against MACs.

A sweep keeps what it did in ``<out>.partial/`` as it goes: each finished budget's folder, and the checkpoints
of the budget it is searching (``budget_<b>.partial/``); after any interruption, even a kill, ``--resume`` reuses
the first and resumes the second.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from nni_bsn.jobs.checkpoints import has_checkpoint
from nni_bsn.jobs.config import SearchConfig
from nni_bsn.jobs.outputs import partial_dir

__all__ = ["run_sweep", "run_sweep_as_worker", "budget_folder", "plot_sweep"]


def budget_folder(budget: str) -> str:
    """The name of a budget's folder in the sweep's output (``25%`` -> ``budget_25pct``)."""
    return f"budget_{budget.replace('%', 'pct')}"


def run_sweep(base: SearchConfig, budgets: list[str], workdir: Path, progress=print) -> list[str]:
    """Search at every budget and write ``sweep.json``, ``sweep.md`` and the plot into ``workdir``; returns the
    table's lines.

    Each budget's search writes into ``<out>.partial/budget_<b>`` (published there only when complete, its
    checkpoints in ``budget_<b>.partial``), so whatever ends the sweep, even a kill, ``--resume`` reuses the
    finished budgets and resumes the current one; the finished folders move into ``workdir`` at the end.
    """
    from nni_bsn.jobs.outputs import atomic_output_dir
    from nni_bsn.jobs.search import run_search

    kept = partial_dir(base.out)
    kept.mkdir(parents=True, exist_ok=True)
    rows = []
    for b in budgets:
        done = kept / budget_folder(b)
        if base.resume and (done / "report.json").is_file():
            progress(f"budget {b}: finished before the interruption, kept")
            resumed = "kept"
        else:
            cfg = _budget_config(base, b, done)
            resumed = "from its checkpoint" if cfg.resume else "no"
            progress(f"budget {b}")
            with atomic_output_dir(done, force=True) as sub:
                run_search(cfg, sub, progress=progress)
            shutil.rmtree(partial_dir(done), ignore_errors=True)
        rows.append({**_row(b, json.loads((done / "report.json").read_text())), "resumed": resumed})
    for b in budgets:
        shutil.move(str(kept / budget_folder(b)), str(workdir / budget_folder(b)))
    return _write_table(rows, workdir)


def run_sweep_as_worker(base: SearchConfig, budgets: list[str]) -> None:
    """A DDP worker's part of a sweep (any rank but global rank 0): each budget's search, trained beside rank 0,
    which decides the same budgets from the same files (a shared filesystem) and writes everything."""
    from nni_bsn.jobs.search import run_search_as_worker

    for b in budgets:
        done = partial_dir(base.out) / budget_folder(b)
        if not (base.resume and (done / "report.json").is_file()):
            run_search_as_worker(_budget_config(base, b, done))


def _budget_config(base: SearchConfig, budget: str, done: Path) -> SearchConfig:
    """The search of one budget, into ``done``; resumed if the sweep is and that search left a checkpoint."""
    cfg = dataclasses.replace(base, budget=budget, onnx=False, out=str(done), force=True)
    cfg.resume = base.resume and has_checkpoint(partial_dir(done))
    return cfg


def _row(budget: str, report: dict[str, Any]) -> dict[str, Any]:
    limit = (report.get("budgets") or [{}])[0]  # the budget the sweep varies, in its cost's units
    return {
        "budget": budget,
        "macs": report["costs"]["macs"],
        "params": report["costs"]["params"],
        "val_acc": report["accuracy"]["val"],
        "test_acc": report["accuracy"]["test"],
        "within_budget": report["selection"]["within_budget"],
        "search_seconds": report["search_seconds"],
        "strategy": f"BSN {budget}",
        "budget_cost": limit.get("cost"),
        "budget_limit": limit.get("limit"),
    }


def _write_table(rows: list[dict[str, Any]], workdir: Path) -> list[str]:
    (workdir / "sweep.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| budget | MACs | params | val acc | test acc | within budget | search s | resumed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['budget']} | {r['macs']:.4g} | {r['params']:.4g} | {r['val_acc']:.4f} | {r['test_acc']:.4f} "
        f"| {r['within_budget']} | {r['search_seconds']:.1f} | {r['resumed']} |"
        for r in rows
    ]
    (workdir / "sweep.md").write_text("\n".join(lines) + "\n")
    plot_sweep(rows, workdir / "accuracy_vs_cost.png")
    return lines


_AXIS_NAMES = {"macs": "MACs", "params": "parameters"}


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> str:
    """The found networks' test accuracy against their cost (MACs, or parameters for a parameter budget), joined
    in order of cost, each named by its budget, and each budget's limit as a vertical line in the same colour."""
    from matplotlib import colormaps

    from nni_bsn.plots import new_figure, save_figure

    cost = rows[0]["budget_cost"] if rows and rows[0].get("budget_cost") in _AXIS_NAMES else "macs"
    fig = new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    ordered = sorted(rows, key=lambda r: r[cost])
    ax.plot([r[cost] for r in ordered], [r["test_acc"] for r in ordered], color="#555555", lw=1.2, zorder=2)
    palette = colormaps["tab10"]
    for i, r in enumerate(rows):
        colour = palette(i % palette.N)
        ax.scatter(
            [r[cost]], [r["test_acc"]], s=50, color=colour, edgecolors="black", zorder=3, label=r["budget"]
        )
        ax.annotate(
            r["budget"], (r[cost], r["test_acc"]), xytext=(5, 5), textcoords="offset points", fontsize=8
        )
        if r.get("budget_cost") == cost and r.get("budget_limit") is not None:
            ax.axvline(
                r["budget_limit"], color=colour, ls="--", lw=0.9, zorder=1, label=f"{r['budget']} budget"
            )
    ax.set_xlabel(f"{_AXIS_NAMES[cost]} of the found network")
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"BSN at {len(rows)} budget(s): test accuracy against {_AXIS_NAMES[cost]}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return save_figure(fig, path)
