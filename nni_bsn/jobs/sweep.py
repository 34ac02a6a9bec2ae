"""The sweep job behind ``nni-bsn sweep``: one search per budget, a table and a plot of accuracy against MACs.

An interrupted sweep keeps what it did in ``<out>.partial/``: each finished budget's folder, and the checkpoints
of the budget it was searching (``budget_<b>.partial/``); ``--resume`` reuses the first and resumes the second.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from nni_bsn.jobs.config import SearchConfig
from nni_bsn.jobs.outputs import partial_dir

__all__ = ["run_sweep", "budget_folder"]


def budget_folder(budget: str) -> str:
    """The name of a budget's folder in the sweep's output (``25%`` -> ``budget_25pct``)."""
    return f"budget_{budget.replace('%', 'pct')}"


def run_sweep(base: SearchConfig, budgets: list[str], workdir: Path, progress=print) -> list[str]:
    """Search at every budget into ``workdir`` and write ``sweep.json``, ``sweep.md`` and the plot; returns the
    table's lines. On any failure or interrupt, the finished budgets and the current checkpoints are kept."""
    from nni_bsn.jobs.search import run_search

    kept = partial_dir(base.out)
    rows = []
    for b in budgets:
        sub = workdir / budget_folder(b)
        done = kept / sub.name
        if base.resume and (done / "report.json").is_file():
            progress(f"budget {b}: finished before the interruption, kept")
            shutil.move(str(done), str(sub))
            report = json.loads((sub / "report.json").read_text())
        else:
            cfg = dataclasses.replace(base, budget=b, onnx=False, out=str(kept / sub.name))
            cfg.resume = base.resume and (partial_dir(cfg.out) / "last.ckpt").is_file()
            sub.mkdir()
            progress(f"budget {b}")
            try:
                report = run_search(cfg, sub, progress=progress)
            except BaseException:
                _keep(workdir, kept, sub, partial_dir(cfg.out))
                raise
        rows.append(_row(b, report))
    return _write_table(rows, workdir)


def _keep(workdir: Path, kept: Path, current: Path, current_partial: Path) -> None:
    """Move the finished budgets and the current budget's checkpoints into ``kept``."""
    kept.mkdir(exist_ok=True)
    checkpoints = current / "checkpoints"
    if any(checkpoints.glob("*.ckpt")):
        shutil.rmtree(current_partial, ignore_errors=True)
        shutil.move(str(checkpoints), str(current_partial))
    for folder in workdir.glob("budget_*"):
        if (folder / "report.json").is_file() and folder != current:
            shutil.rmtree(kept / folder.name, ignore_errors=True)
            shutil.move(str(folder), str(kept / folder.name))


def _row(budget: str, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "budget": budget,
        "macs": report["costs"]["macs"],
        "params": report["costs"]["params"],
        "val_acc": report["accuracy"]["val"],
        "test_acc": report["accuracy"]["test"],
        "within_budget": report["selection"]["within_budget"],
        "search_seconds": report["search_seconds"],
        "strategy": f"BSN {budget}",
    }


def _write_table(rows: list[dict[str, Any]], workdir: Path) -> list[str]:
    from nni_bsn.plots import plot_accuracy_vs_cost

    (workdir / "sweep.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| budget | MACs | params | val acc | test acc | within budget | search s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['budget']} | {r['macs']:.4g} | {r['params']:.4g} | {r['val_acc']:.4f} | {r['test_acc']:.4f} "
        f"| {r['within_budget']} | {r['search_seconds']:.1f} |"
        for r in rows
    ]
    (workdir / "sweep.md").write_text("\n".join(lines) + "\n")
    plot_accuracy_vs_cost(
        rows, workdir / "accuracy_vs_cost.png", cost_key="macs", acc_key="test_acc", label_key="strategy"
    )
    return lines
