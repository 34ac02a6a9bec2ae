"""``nni-bsn compare``: BSN beside NNI's DARTS / GumbelDARTS / ENAS / Proxyless / RandomOneShot on the same work.

Every strategy searches a fresh copy of the same space, data, seed and epochs in a process of its own
(:mod:`nni_bsn.compare_row`), and its architecture is retrained from scratch the same way; one row each. A strategy
that fails gets a row ``failed: <reason>`` and the others still run. The method in full: ``docs/compare.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .compare_report import equivalent_command, machine, notes, write_outputs
from .config import (
    CompareConfig,
    UsageError,
    bsn_row_budget,
    check_compare_config,
    parse_strategies,
    row_label,
)

__all__ = ["run_compare"]


def _resolve_budget(cfg: CompareConfig, space_spec: dict, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The budget as an absolute limit in the cost's unit, and as a fraction of the whole super network."""
    from .budget import parse_budget, resolve_limit
    from .builders import build_cost, rebuild_space

    evaluator = build_cost(cfg.cost, input_shape).bind(rebuild_space(space_spec))
    full = float(evaluator.full_cost())
    unit = evaluator.describe().get("unit", "")
    try:
        limit = resolve_limit(parse_budget(cfg.budget), full, evaluator.min_cost(), name=cfg.cost, unit=unit)
    except ValueError as e:
        raise UsageError(f"{e} (--budget {cfg.budget})") from None
    return {
        "cost": cfg.cost,
        "spec": cfg.budget,
        "limit": limit,
        "full": full,
        "fraction": limit / full,
        "unit": unit,
    }


def _log_name(name: str) -> str:
    return name.replace("+", "_").replace("@", "_at_").replace("%", "pct")


def _run_in_process(
    cfg: CompareConfig, name: str, budget: dict[str, Any], jobdir: Path, log: Path
) -> dict[str, Any]:
    """Run one strategy in a fresh ``python -m nni_bsn.compare_row`` process; its output goes to ``log``."""
    workdir = jobdir / name.replace("+", "_")
    workdir.mkdir(parents=True)
    job = {
        "config": cfg.as_dict(),
        "strategy": name,
        "budget": budget,
        "workdir": str(workdir),
        "result": str(workdir / "result.json"),
    }
    (workdir / "job.json").write_text(json.dumps(job, indent=2))
    failed = {"strategy": row_label(name), "name": name, "status": "failed"}
    with open(log, "w") as out:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "nni_bsn.compare_row", str(workdir / "job.json")],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=cfg.strategy_timeout,
                cwd=os.getcwd(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {**failed, "error": f"timed out after {cfg.strategy_timeout:g} s"}
    result_path = Path(job["result"])
    if result_path.is_file():
        return json.loads(result_path.read_text())
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return {
        **failed,
        "error": f"worker exited with code {proc.returncode}" + (f": {lines[-1][:200]}" if lines else ""),
    }


def _run_rows(
    cfg: CompareConfig,
    budget: dict[str, Any],
    space_spec: dict,
    input_shape: tuple[int, ...],
    logs: Path,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One row per strategy, each run in its own process, in the order of ``cfg.strategies``."""
    jobdir = Path(tempfile.mkdtemp(prefix="nni-bsn-compare-"))
    rows, n = [], len(cfg.strategies)
    try:
        for i, name in enumerate(cfg.strategies, 1):
            progress(f"[{i}/{n}] {name}: searching, then retraining")
            t0 = time.perf_counter()
            row_budget = budget
            if (
                bsn_row_budget(name) is not None
            ):  # BSN at its own budget: its limit, and its "within budget" column
                own = dataclasses.replace(cfg, budget=bsn_row_budget(name))
                row_budget = _resolve_budget(own, space_spec, input_shape)
            row = _run_in_process(cfg, name, row_budget, jobdir, logs / f"{_log_name(name)}.log")
            row["wall_seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            if row["status"] == "ok":
                progress(
                    f"[{i}/{n}] {name}: val {row['val_acc']:.4f}, test {row['test_acc']:.4f}, "
                    f"MACs {row['macs']:.4g}, search {row['search_seconds']:.1f} s "
                    f"({row['wall_seconds']:.0f} s in all)"
                )
            else:
                progress(f"[{i}/{n}] {name}: failed: {row['error']} (see logs/{_log_name(name)}.log)")
    finally:
        shutil.rmtree(jobdir, ignore_errors=True)
    for row in rows:
        if row["status"] != "ok":
            row["status"] = f"failed: {row['error']}"
    return rows


def run_compare(
    cfg: CompareConfig, workdir: Path, progress: Callable[[str], None] = print, command: str | None = None
) -> dict[str, Any]:
    """Run every strategy of ``cfg`` (each in its own process), write the outputs into ``workdir``; the report.

    Outputs: ``compare.md`` (table, command, machine, versions, notes), ``compare.csv``, ``compare.json``,
    ``accuracy_vs_cost.png`` (test accuracy against MACs) and ``logs/<strategy>.log`` (each process's output).
    ``report['failed']`` names the strategies that failed; their rows say why.
    """
    from .builders import build_space
    from .data import DataError, get_dataloaders
    from .outputs import versions

    check_compare_config(cfg)
    cfg.strategies = parse_strategies(cfg.strategies)
    try:
        _, _, _, info = get_dataloaders(
            cfg.dataset, cfg.data_dir, cfg.batch_size, cfg.image_size, cfg.seed, train_size=cfg.train_size
        )
    except DataError as e:
        raise UsageError(str(e)) from None
    space, space_spec = build_space(cfg.search_config(), info.in_channels, info.num_classes, info.image_size)
    input_shape = (1, info.in_channels, info.image_size, info.image_size)
    budget = _resolve_budget(cfg, space_spec, input_shape)
    gates = len(getattr(space, "gate_labels", []))
    del space
    progress(
        f"comparing {', '.join(cfg.strategies)} on {cfg.space} ({gates} gates) / {cfg.dataset} "
        f"({info.sizes['train']} training images): {cfg.epochs} search epochs, {cfg.retrain} retraining epochs, "
        f"{cfg.cost} budget {cfg.budget} = {budget['limit']:.6g}"
    )
    machine_at_start = machine()  # its load average: other work on the machine slows every timing column
    logs = workdir / "logs"
    logs.mkdir()
    started = time.time()
    rows = _run_rows(cfg, budget, space_spec, input_shape, logs, progress)
    report = {
        "command": command,
        "equivalent_command": equivalent_command(cfg),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "total_seconds": round(time.time() - started, 1),
        "machine": {**machine_at_start, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": versions(),
        "dataset": {"name": cfg.dataset, "sizes": info.sizes, "image_size": info.image_size},
        "space": {**space_spec, "gates": gates},
        "budget": budget,
        "config": cfg.as_dict(),
        "rows": rows,
        "failed": [r["name"] for r in rows if r["status"] != "ok"],
    }
    report["notes"] = notes(cfg, report)
    write_outputs(report, workdir)
    return report
