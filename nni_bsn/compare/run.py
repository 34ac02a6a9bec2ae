"""``nni-bsn compare``: BSN beside NNI's DARTS / GumbelDARTS / ENAS / Proxyless / RandomOneShot on the same work.

Every strategy searches a fresh copy of the same space, data, seed and epochs in a process of its own
(:mod:`nni_bsn.compare.row`), and its architecture is retrained from scratch the same way; one row each. A strategy
that fails gets a row ``failed: <reason>`` and the others still run. The method in full: ``docs/compare.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nni_bsn.compare.report import equivalent_command, machine, notes, write_outputs
from nni_bsn.compare.row import failed_row
from nni_bsn.compare.summary import summarize, targets
from nni_bsn.jobs.config import (
    RANDOM_BANDS,
    CompareConfig,
    UsageError,
    check_compare_config,
    parse_strategies,
    row_budget,
    row_kind,
)
from nni_bsn.jobs.outputs import partial_dir
from nni_bsn.jobs.ranks import row_rendezvous_env

__all__ = ["run_compare", "summarise"]


def _resolve_budget(cfg: CompareConfig, space_spec: dict, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The budget as an absolute limit in the cost's unit, and as a fraction of the whole super network."""
    from nni_bsn.jobs.builders import build_cost, rebuild_space
    from nni_bsn.strategy.budget import parse_budget, resolve_limit

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


def _full_macs(cfg: CompareConfig, budget: dict[str, Any], space_spec: dict, input_shape) -> float:
    """The super network's MACs (every row's MACs is also shown as a share of it)."""
    if cfg.cost == "macs":
        return budget["full"]
    from nni_bsn.jobs.builders import build_cost, rebuild_space

    return float(build_cost("macs", input_shape).bind(rebuild_space(space_spec)).full_cost())


def _log_name(name: str) -> str:
    return name.replace("+", "_").replace("@", "_at_").replace("%", "pct").replace(":", "_")


@dataclass
class _Job:
    """One process of the comparison: a row name at a seed (with its drawn architecture, for random rows)."""

    name: str
    seed: int
    budget: dict[str, Any]
    arch: dict[str, Any] | None = None
    draw: dict[str, Any] | None = None

    @property
    def tag(self) -> str:
        index = f"-{self.draw['index']}" if self.draw else ""
        return f"seed{self.seed}-{_log_name(self.name)}{index}"


def _die_with_parent() -> None:
    """In a job's process before it runs (Linux): be sent SIGTERM when the comparison that started it dies, even
    killed with SIGKILL, so that no orphaned row keeps the cores busy (its finished rows are kept, see KeptRows)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the job outlives a killed comparison
        pass


def _run_in_process(
    cfg: CompareConfig, job: _Job, index: int, jobdir: Path, log: Path
) -> list[dict[str, Any]]:
    """Run job number ``index`` in a fresh ``python -m nni_bsn.compare.row`` process (its output goes to ``log``);
    its rows."""
    workdir = jobdir / job.tag
    workdir.mkdir(parents=True)
    spec = {
        "checkpoints": str(job_checkpoints(cfg, job)),
        "identity": job_identity(cfg, job),
        "config": dataclasses.replace(cfg, seed=job.seed, seeds=None).as_dict(),
        "strategy": job.name,
        "budget": job.budget,
        "arch": job.arch,
        "workdir": str(workdir),
        "result": str(workdir / "result.json"),
    }
    (workdir / "job.json").write_text(json.dumps(spec, indent=2))
    with open(log, "w") as out:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "nni_bsn.compare.row", str(workdir / "job.json")],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=cfg.strategy_timeout,
                cwd=os.getcwd(),
                env=row_rendezvous_env(index),
                check=False,
                preexec_fn=_die_with_parent,
            )
        except subprocess.TimeoutExpired:
            return [failed_row(job.name, job.seed, f"timed out after {cfg.strategy_timeout:g} s")]
    result_path = Path(spec["result"])
    if result_path.is_file():
        return json.loads(result_path.read_text())["rows"]
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    # Lightning stops a fit on SIGTERM and the process then exits with 0, before its row is written.
    code = proc.returncode
    error = f"worker exited with code {code}" + (
        " without its row (stopped by a signal?)" if code == 0 else ""
    )
    error += f": {lines[-1][:200]}" if lines else ""
    return [failed_row(job.name, job.seed, error)]


# Options that change what a row finds: the others (how many rows, at once, where) leave a kept row valid.
NOT_IDENTITY = (
    "strategies",
    "seeds",
    "jobs",
    "out",
    "force",
    "resume",
    "threads",
    "strategy_timeout",
    "random_archs",
)


def job_identity(cfg: CompareConfig, job: _Job) -> dict[str, Any]:
    """What makes a job the same job in another run: its options (but not how many run at once, or --resume), row,
    seed, budget and drawn architecture."""
    config = dataclasses.replace(cfg, seed=job.seed, seeds=None).as_dict()
    config = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    return json.loads(json.dumps({"config": config, "row": job.name, "budget": job.budget, "arch": job.arch}))


def job_checkpoints(cfg: CompareConfig, job: _Job) -> Path:
    """Where a job's search keeps its checkpoints until the job's rows are kept."""
    return partial_dir(cfg.out) / "checkpoints" / job.tag


class KeptRows:
    """Every finished job's rows, kept in ``folder`` (``<out>.partial/rows/``) the moment the job ends, so that a
    comparison interrupted, killed or failing at its end loses none; ``--resume`` reuses those whose job is the
    same (its options, row, seed, budget and drawn architecture), marked ``resumed``."""

    def __init__(self, folder: Path, cfg: CompareConfig):
        self.folder, self.cfg = folder, cfg

    def get(self, job: _Job) -> list[dict[str, Any]] | None:
        try:
            kept = json.loads((self.folder / f"{job.tag}.json").read_text())
        except (OSError, ValueError):
            return None
        if kept.get("identity") != job_identity(self.cfg, job):
            return None
        return [{**row, "resumed": True} for row in kept["rows"]]

    def put(self, job: _Job, rows: list[dict[str, Any]]) -> None:
        from nni_bsn.jobs.outputs import write_json

        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / f"{job.tag}.json", {"identity": job_identity(self.cfg, job), "rows": rows})


def _row_budgets(
    cfg: CompareConfig, budget: dict, space_spec: dict, input_shape
) -> dict[str, dict[str, Any]]:
    """Each row's budget: its own for ``<kind>@<budget>`` rows, the comparison's for the others."""
    return {
        name: _resolve_budget(dataclasses.replace(cfg, budget=row_budget(name)), space_spec, input_shape)
        if row_budget(name) is not None
        else budget
        for name in cfg.strategies
    }


def _jobs(cfg: CompareConfig, budgets: dict, space_spec: dict, input_shape) -> list[_Job]:
    """Every process of the comparison: each row at each seed, a random row once per drawn architecture."""
    from nni_bsn.compare.random_baseline import draw_for_row

    jobs = []
    for seed in cfg.seed_list:
        for name in cfg.strategies:
            if row_kind(name) in RANDOM_BANDS:
                try:
                    draws = draw_for_row(cfg, name, seed, budgets[name], space_spec, input_shape)
                except ValueError as e:  # too few architectures in the band: a budget or band to change
                    raise UsageError(f"strategy {name!r}: {e}") from None
                jobs += [_Job(name, seed, budgets[name], d.arch, _draw_info(d)) for d in draws]
            else:
                jobs.append(_Job(name, seed, budgets[name]))
    return jobs


def _draw_info(draw) -> dict[str, Any]:
    return {"index": draw.index, "cost": draw.cost, "keep_prob": draw.keep_prob}


def _progress_line(job: _Job, rows: list[dict[str, Any]], seconds: float) -> str:
    parts = []
    for row in rows:
        if row["status"] == "ok":
            search = row.get("search_seconds")
            parts.append(
                f"{row['name']}: val {row['val_acc']:.4f}, test {row['test_acc']:.4f}, MACs {row['macs']:.4g}"
                + (f", search {search:.1f} s" if search is not None else "")
            )
        else:
            parts.append(f"{row['name']}: failed: {row['error']} (see logs/{job.tag}.log)")
    return f"seed {job.seed} {job.tag}: " + "; ".join(parts) + f" ({seconds:.0f} s in all)"


def _run_rows(
    cfg: CompareConfig, jobs: list[_Job], logs: Path, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Every job in its own process, ``cfg.jobs`` at a time; the rows in the order of the jobs."""
    jobdir = Path(tempfile.mkdtemp(prefix="nni-bsn-compare-"))
    n, done = len(jobs), [0]
    lock = threading.Lock()

    kept = KeptRows(partial_dir(cfg.out) / "rows", cfg)

    def run(index: int) -> list[dict[str, Any]]:
        job = jobs[index]
        rows = kept.get(job) if cfg.resume else None
        if rows is not None:
            with lock:
                done[0] += 1
                progress(f"[{done[0]}/{n}] kept from an earlier run: " + _progress_line(job, rows, 0.0))
            return rows
        t0 = time.perf_counter()
        rows = _run_in_process(cfg, job, index, jobdir, logs / f"{job.tag}.log")
        seconds = round(time.perf_counter() - t0, 1)
        for row in rows:
            row.update(wall_seconds=seconds, draw=job.draw)
            if job.draw:
                row["strategy"] = f"{row['strategy']} #{job.draw['index']}"
        if all(row["status"] == "ok" for row in rows):
            kept.put(job, rows)
            shutil.rmtree(job_checkpoints(cfg, job), ignore_errors=True)
        with lock:
            done[0] += 1
            progress(f"[{done[0]}/{n}] " + _progress_line(job, rows, seconds))
        return rows

    progress(f"{n} processes, {cfg.jobs} at a time")
    try:
        with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
            results = list(pool.map(run, range(len(jobs))))
    finally:
        shutil.rmtree(jobdir, ignore_errors=True)
    rows = [row for result in results for row in result]
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
    from nni_bsn.jobs.builders import build_space, load_job_data
    from nni_bsn.jobs.outputs import versions

    check_compare_config(cfg)
    cfg.strategies = parse_strategies(cfg.strategies)
    data = load_job_data(cfg.search_config())
    info, input_shape = data.info, data.input_shape
    space, space_spec = build_space(cfg.search_config(), data.in_channels, info.num_classes, info.image_size)
    budget = _resolve_budget(cfg, space_spec, input_shape)
    gates = len(getattr(space, "gate_labels", []))
    del space
    progress(
        f"comparing {', '.join(cfg.strategies)} on {cfg.space} ({gates} gates) / {cfg.dataset} "
        f"({info.sizes['train']} training images): {cfg.epochs} search epochs"
        f"{f' at most (--settle {cfg.settle})' if cfg.settle else ''}, {cfg.retrain} retraining epochs, "
        f"{cfg.cost} budget {cfg.budget} = {budget['limit']:.6g}"
    )
    machine_at_start = machine()  # its load average: other work on the machine slows every timing column
    logs = workdir / "logs"
    logs.mkdir()
    started = time.time()
    budgets = _row_budgets(cfg, budget, space_spec, input_shape)
    rows = _run_rows(cfg, _jobs(cfg, budgets, space_spec, input_shape), logs, progress)
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
        "row_budgets": budgets,
        "seeds": list(cfg.seed_list),
        "config": cfg.as_dict(),
        "rows": rows,
        "failed": [r["name"] for r in rows if r["status"] != "ok"],
        "resumed": sum(bool(r.get("resumed")) for r in rows),
        "full_macs": _full_macs(cfg, budget, space_spec, input_shape),
    }
    summarise(report, cfg)
    write_outputs(report, workdir)
    return report


def summarise(report: dict[str, Any], cfg: CompareConfig) -> dict[str, Any]:
    """``report`` with its summary (mean ± std per row), targets and notes computed from its rows (a finished run
    can be summarised again by newer code: ``benchmarks/bench_fashion.py --from-run``)."""
    report["summary"] = summarize(report["rows"], report["full_macs"])
    report["targets"] = targets(report["summary"])
    report["notes"] = notes(cfg, report)
    return report
