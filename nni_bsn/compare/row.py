"""One row of ``nni-bsn compare``: one strategy searches, and what it found is evaluated, in a process of its own.

``python -m nni_bsn.compare.row <job.json>`` runs :func:`search_and_evaluate` and writes the row (or why it failed)
as JSON; a process per strategy keeps its peak memory its own and NNI's global state from leaking between rows.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.blocks import GATE_OFF, GATE_ON
from nni_bsn.compare.fixed import fixed_network
from nni_bsn.compare.strategies import (
    SettleStop,
    choice_stats,
    derived_architecture,
    make_strategy,
    rank_sync_callbacks,
    ranks_agreed,
    strategy_details,
)
from nni_bsn.jobs.config import DERIVED, FIXED_NAMES, CompareConfig, row_label
from nni_bsn.jobs.ranks import is_worker_process

__all__ = ["search_and_evaluate", "failed_row", "INHERITED_BN_BATCHES"]

_logger = logging.getLogger(__name__)

INHERITED_BN_BATCHES = 20  # training batches that re-estimate BatchNorm for the inherited accuracy


@dataclass
class _Searched:
    """What a search left: the architecture, the supernet's weights for it, and the search's figures."""

    arch: dict[str, Any]
    inherited: Any
    derived: tuple[dict[str, Any], Any] | None  # the DARTS paper's derivation and its inherited network
    seconds: float
    rss_before: float
    rss_after: float
    extra: dict[str, Any]
    final_metrics: dict[str, float]
    epochs_run: int


def _classification(
    cfg: CompareConfig,
    train,
    val,
    num_classes: int,
    epochs: int,
    progress_prefix: str,
    callbacks=(),
    checkpoints: Path | None = None,
):
    """NNI's Classification evaluator with the one recipe every search and every retraining uses; its progress is
    one line per epoch starting with ``progress_prefix`` (a bar on a terminal); with ``checkpoints``, a checkpoint
    there every 10 batches and at each epoch end (a killed row's search continues from it with ``--resume``)."""
    import torch
    from nni.nas.evaluator.pytorch import Classification

    from nni_bsn.jobs.ranks import ddp_strategy
    from nni_bsn.network.training import QUIET_CPU, progress_options

    limits = {
        k: v
        for k, v in (
            ("limit_train_batches", cfg.limit_train_batches),
            ("limit_val_batches", cfg.limit_val_batches),
        )
        if v is not None
    }
    saving = {}
    strategy = ddp_strategy(cfg.accelerator, cfg.devices, cfg.num_nodes, cfg.ddp_timeout)
    ddp = {"strategy": strategy} if strategy is not None else {}  # the search's DDP, for several ranks
    if checkpoints is not None:
        from nni_bsn.jobs.checkpoints import RotatingCheckpointIO, checkpoint_callbacks

        callbacks = [*callbacks, *checkpoint_callbacks(checkpoints)]
        saving = {"enable_checkpointing": True, "plugins": [RotatingCheckpointIO()]}
    return Classification(
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        optimizer={"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer],
        train_dataloaders=train,
        val_dataloaders=val,
        num_classes=num_classes,
        max_epochs=epochs,
        **{
            **QUIET_CPU,
            "accelerator": cfg.accelerator,
            **progress_options(progress_prefix, callbacks),
            **saving,
        },
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        deterministic=False,
        **ddp,
        **limits,
    )


def failed_row(name: str, seed: int, error: str) -> dict[str, Any]:
    """The row of a job that gave no result: its name, seed and why."""
    return {"strategy": row_label(name), "name": name, "seed": seed, "status": "failed", "error": error}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _one_line(e: BaseException) -> str:
    """``'<Type>: <first line of the message>'``, at most 300 characters."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


def _search(cfg: CompareConfig, name: str, space, strategy, evaluator, workdir: Path, graph) -> _Searched:
    """Run the experiment and keep what the row needs from it."""
    import pytorch_lightning as pl
    import torch
    from nni.nas.experiment import NasExperiment

    from nni_bsn.compat import quiet_experiment_config

    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the same state for every strategy at fit time
    nni_dir = workdir / "nni"
    rss_before = _rss_mb()
    started = time.perf_counter()
    exp = NasExperiment(space, evaluator, strategy, config=quiet_experiment_config(nni_dir))
    try:
        exp.run()
        seconds = time.perf_counter() - started
        rss_after = _rss_mb()
        # once: ENAS and RandomOneShot export a new sample each call
        model = next(iter(strategy.list_models()))
        inherited = copy.deepcopy(model.executable_model())  # freeze shares weights with the supernet
        extra = strategy_details(name, strategy)
        extra["choices"] = choice_stats(strategy.oneshot_module)
        derived = derived_architecture(name, strategy, graph, model.sample)
        arch, derived, extra["ranks"] = ranks_agreed(strategy.oneshot_module, dict(model.sample), derived)
        # Per-gate probabilities ('prob/...') are left out: the architecture is in the row already.
        trainer = strategy.oneshot_module.trainer
        final_metrics = {
            k: round(float(v), 6)
            for k, v in trainer.callback_metrics.items()
            if v is not None and not k.startswith("prob/") and torch.as_tensor(v).numel() == 1
        }
        epochs_run = int(trainer.current_epoch)  # Lightning counts the finished epochs once fit returns
    finally:
        exp.stop()  # NNI would otherwise save its experiment checkpoint at interpreter exit
        shutil.rmtree(nni_dir, ignore_errors=True)
    return _Searched(
        arch,
        inherited,
        derived,
        seconds,
        rss_before,
        rss_after,
        extra,
        final_metrics,
        epochs_run,
    )


def _inherited_accuracy(model, train, val, test) -> dict[str, float]:
    """Accuracy with the supernet's weights: no training, BatchNorm statistics re-estimated for this network."""
    from nni_bsn.network.evaluation import evaluate_accuracy, recalibrate_batchnorm

    recalibrate_batchnorm(model, train, batches=INHERITED_BN_BATCHES)
    return {"val": evaluate_accuracy(model, val), "test": evaluate_accuracy(model, test)}


def reset_order(loader, seed: int) -> None:
    """Rewind a shuffling loader's generator to ``seed``: every retraining sees the same batches in the same order,
    whatever the search before it in the same process drew from the loader."""
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(int(seed))


def _retrain(cfg: CompareConfig, space_spec: dict, pruned: dict[str, Any], loaders, num_classes: int):
    """The pruned architecture frozen from a fresh space and trained from scratch: model, accuracy, seconds."""
    import pytorch_lightning as pl

    from nni_bsn.jobs.builders import rebuild_space
    from nni_bsn.network.evaluation import evaluate_accuracy
    from nni_bsn.network.export import load_frozen_model

    train, val, test = loaders
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    reset_order(train, cfg.seed)
    net = load_frozen_model(lambda: rebuild_space(space_spec), pruned)
    started = time.perf_counter()
    _classification(cfg, train, val, num_classes, cfg.retrain, "retrain").fit(net)
    seconds = time.perf_counter() - started
    return net, {"val": evaluate_accuracy(net, val), "test": evaluate_accuracy(net, test)}, seconds


def _latency(cfg: CompareConfig, name: str, net, test, input_shape, workdir: Path):
    """ONNX Runtime latency of the retrained network, or None and why the export failed."""
    if not cfg.onnx:
        return None, None
    from nni_bsn.network.export import export_and_time

    onnx_dir = Path(tempfile.mkdtemp(prefix="onnx-", dir=workdir))
    try:
        return export_and_time(net, next(iter(test))[0][:8], onnx_dir / "model.onnx", input_shape)[1], None
    except Exception as e:  # the row keeps its other numbers; the reason goes into the table notes
        _logger.exception("ONNX export or latency failed for %s", name)
        return None, _one_line(e)
    finally:
        shutil.rmtree(onnx_dir, ignore_errors=True)


@dataclass
class _Work:
    """What every row of one process shares: its configuration, data, budget and folder."""

    cfg: CompareConfig
    data: Any  # builders.JobData
    budget: dict[str, Any]
    workdir: Path

    @property
    def loaders(self) -> tuple:
        return self.data.train, self.data.val, self.data.test

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.data.input_shape


def _connected(space: Any, arch: dict[str, Any], input_shape: tuple[int, ...]) -> bool:
    """Whether the input reaches the classifier: the fabric's own check on a gate space, NasBench201's cells
    (:func:`~nni_bsn.strategy.connectivity.space_connectivity`), else the frozen network's output must depend on its input
    (:func:`~nni_bsn.network.evaluation.input_reaches_output`)."""
    from nni_bsn.network.evaluation import input_reaches_output
    from nni_bsn.strategy.connectivity import space_connectivity

    known = space_connectivity(space)
    if known is not None:
        return bool(known(arch))
    return input_reaches_output(space.freeze(arch), input_shape)


def _architecture_fields(
    name: str, spec: dict, arch: dict[str, Any], seed: int, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """The row's name, architecture (as found and pruned), gate counts and connectivity."""
    from nni_bsn.jobs.builders import rebuild_space

    fresh = rebuild_space(spec)
    pruned = fresh.prune(arch) if hasattr(fresh, "prune") else arch
    gates = [label for label, v in arch.items() if v in (GATE_ON, GATE_OFF)]
    return {
        "strategy": row_label(name),
        "name": name,
        "seed": seed,
        "connected": _connected(fresh, arch, input_shape),
        "gates_on": sum(arch[g] == GATE_ON for g in gates),
        "gates_alive": sum(pruned[g] == GATE_ON for g in gates),
        "gates_total": len(gates),
        "arch": arch,
        "pruned_arch": pruned,
    }


def _evaluate(work: _Work, name: str, spec: dict, arch: dict[str, Any], inherited) -> dict[str, Any]:
    """One architecture's row: retrained from scratch, its costs, latency and inherited accuracy.

    A disconnected architecture (its input never reaches the classifier) is a failed row, not retrained.
    """
    from nni_bsn.jobs.builders import all_costs, build_cost, rebuild_space

    cfg, (train, val, test) = work.cfg, work.loaders
    row = _architecture_fields(name, spec, arch, cfg.seed, work.input_shape)
    if not row["connected"]:
        cut = (
            f"{row['gates_on']} of {row['gates_total']} gates on"
            if row["gates_total"]
            else "its output ignores it"
        )
        reason = f"exported a disconnected network ({cut}, no path from the input to the classifier); not retrained"
        return {**row, "status": "failed", "error": reason}
    inherited_acc = (
        _inherited_accuracy(inherited, train, val, test)
        if inherited is not None
        else {"val": None, "test": None}
    )
    pruned = row["pruned_arch"]
    net, accuracy, retrain_seconds = _retrain(cfg, spec, pruned, work.loaders, work.data.info.num_classes)
    costs = all_costs(spec, pruned, work.input_shape)
    budget_cost = float(build_cost(cfg.cost, work.input_shape).bind(rebuild_space(spec)).cost(pruned))
    latency, onnx_error = _latency(cfg, name, net, test, work.input_shape, work.workdir)
    return {
        **row,
        "status": "ok",
        "val_acc": accuracy["val"],
        "test_acc": accuracy["test"],
        "inherited_val_acc": inherited_acc["val"],
        "inherited_test_acc": inherited_acc["test"],
        "macs": costs["macs"],
        "params": costs["params"],
        "latency_ms": latency["median_ms"] if latency else None,
        "latency": latency,
        "onnx_error": onnx_error,
        "distributed_ms": (costs.get("distributed") or {}).get("makespan_ms"),
        "retrain_seconds": round(retrain_seconds, 3),
        "budget_cost": budget_cost,
        "budget_limit": work.budget["limit"],  # the row's own: bsn@25%'s is 25%, not --budget
        "within_budget": budget_cost <= work.budget["limit"] * (1 + 1e-9),
    }


def _resume_point(cfg: CompareConfig, checkpoints: tuple[Path, dict] | None, evaluator) -> str | None:
    """With ``--resume``, the checkpoint the search continues from (set as the fit's ``ckpt_path``), else None."""
    from nni_bsn.jobs.checkpoints import resume_or_start

    if checkpoints is None:
        return None
    ckpt = resume_or_start(*checkpoints, cfg.resume, lambda m: print(f"nni-bsn: {m}", file=sys.stderr))
    if ckpt is None:
        return None
    evaluator.fit_kwargs["ckpt_path"] = str(ckpt)
    print(f"nni-bsn: continuing the search from {ckpt}", file=sys.stderr, flush=True)
    return ckpt.name


def _search_fields(name: str, strategy, searched: _Searched, timer, setup: dict[str, Any]) -> dict[str, Any]:
    """What a search adds to each of its rows: the strategy, its timing, memory and how it ended."""
    import torch

    return {
        "strategy_args": repr(strategy),
        "search_seconds": round(searched.seconds, 3),
        "step_ms": timer.summary()["step_ms_median"],
        "search_timing": timer.summary(),
        "torch_threads": torch.get_num_threads(),
        "search_rss_growth_mb": round(searched.rss_after - searched.rss_before, 1),
        "search_peak_rss_mb": round(searched.rss_after, 1),
        "final_epoch_metrics": searched.final_metrics,
        "choice_max_prob": (searched.extra.get("choices") or {}).get("mean_max_prob"),
        "choice_entropy": (searched.extra.get("choices") or {}).get("mean_entropy"),
        "search_epochs": searched.epochs_run,
        **setup,
        **searched.extra,
    }


def search_and_evaluate(
    cfg: CompareConfig,
    name: str,
    budget: dict[str, Any],
    workdir: Path,
    arch: dict[str, Any] | None = None,
    checkpoints: tuple[Path, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run row ``name`` on ``cfg`` (search, or the given / fixed architecture) and evaluate what it found; its rows
    (two for a DARTS-family strategy on a gate space: NNI's export and the DARTS paper's derivation).
    ``checkpoints``: the folder of the search's checkpoints and the job's identity (``--resume`` continues a killed
    search from there when the identity is the same)."""
    import pytorch_lightning as pl
    import torch

    from nni_bsn.jobs.builders import build_space, load_job_data, rebuild_space
    from nni_bsn.network.training import StepTimer

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_job_data(cfg.search_config())
    info = data.info
    space, space_spec = build_space(cfg.search_config(), data.in_channels, info.num_classes, info.image_size)
    work = _Work(cfg, data, budget, workdir)
    nothing_searched = {"search_seconds": None, "step_ms": None, "search_rss_growth_mb": None}
    if arch is not None or name in FIXED_NAMES:
        spec, fixed = fixed_network(cfg, name, space_spec, arch, data)
        return [{**nothing_searched, **_evaluate(work, name, spec, fixed, None)}]
    strategy, setup = make_strategy(name, cfg, space, work.input_shape, {**budget, "space_spec": space_spec})
    timer = StepTimer()
    settle = SettleStop(cfg.settle) if cfg.settle else None
    callbacks = [timer, *([settle] if settle else []), *rank_sync_callbacks(name, cfg)]
    folder = checkpoints[0] if checkpoints else None
    evaluator = _classification(
        cfg, data.train, data.val, info.num_classes, cfg.epochs, f"{name} search", callbacks, folder
    )
    resumed = _resume_point(cfg, checkpoints, evaluator)
    graph = getattr(rebuild_space(space_spec), "graph", None)
    searched = _search(cfg, name, space, strategy, evaluator, workdir, graph)
    if settle is not None:
        searched.extra["settle"] = settle.summary(searched.epochs_run)
    found = [(name, searched.arch, searched.inherited)]
    if searched.derived is not None:
        found.append((name + DERIVED, *searched.derived))
    shared = {**_search_fields(name, strategy, searched, timer, setup), "search_resumed_from": resumed}
    return [{**shared, **_evaluate(work, n, space_spec, a, inherited)} for n, a, inherited in found]


def _worker_main(job_path: str) -> int:
    """Entry of the per-strategy process: read the job, run it, write the result (or the failure) as JSON."""
    from nni_bsn.compat import quiet_library_logs, quiet_library_warnings

    quiet_library_warnings()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_library_logs()
    job = json.loads(Path(job_path).read_text())
    cfg = CompareConfig.from_dict(job["config"])
    result_path = Path(job["result"])
    try:
        saved = (Path(job["checkpoints"]), job["identity"]) if job.get("checkpoints") else None
        rows = search_and_evaluate(
            cfg, job["strategy"], job["budget"], Path(job["workdir"]), job.get("arch"), saved
        )
    except Exception as e:
        import traceback

        traceback.print_exc()
        rows = [failed_row(job["strategy"], cfg.seed, _one_line(e))]
    if is_worker_process():  # a DDP rank other than 0: rank 0 writes the row
        return 0 if all(r["status"] == "ok" for r in rows) else 1
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rows": rows}, indent=2, default=str))
    os.replace(tmp, result_path)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1]))
