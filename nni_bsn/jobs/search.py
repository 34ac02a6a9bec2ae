"""The search job behind ``nni-bsn search``: data, space, cost, BSN through NasExperiment, then the found network's
evaluation and every output (architecture, weights, ONNX, pictures, report)."""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nni_bsn.jobs.builders import JobData, all_costs, build_cost, build_space, load_job_data, rebuild_space
from nni_bsn.jobs.checkpoints import (
    RotatingCheckpointIO,
    checkpoint_callbacks,
    keep_final,
    load_resumable,
    require_checkpoint,
    start_fresh,
)
from nni_bsn.jobs.config import SearchConfig, UsageError, distributed_devices
from nni_bsn.jobs.found import ONNX_PREPROCESSING_KEY, report_preprocessing
from nni_bsn.jobs.outputs import partial_dir, versions, write_json
from nni_bsn.jobs.ranks import check_devices, ddp_strategy, is_worker_process
from nni_bsn.network.evaluation import evaluate_accuracy, finetune, recalibrate_batchnorm

__all__ = ["run_search", "run_search_as_worker", "check_devices", "is_worker_process", "RESUMABLE_CHANGES"]


@dataclass
class _Found:
    """What the search returned: the exported model, BSN's report and the run's figures."""

    arch: dict[str, Any]
    model: Any
    bsn_report: dict[str, Any]
    final_metrics: dict[str, float]
    seconds: float


def run_search(cfg: SearchConfig, workdir: Path, progress=print) -> dict[str, Any]:
    """Run BSN on ``cfg`` writing every output into ``workdir``; returns the report."""
    import pytorch_lightning as pl

    from nni_bsn.network.training import StepTimer

    started = time.time()
    gpus, cores = torch.cuda.device_count(), os.cpu_count() or 1
    note = check_devices(cfg.accelerator, cfg.devices, gpus, cores, cfg.num_nodes)
    if note:
        progress(note)
    partial = partial_dir(cfg.out)
    if not is_worker_process():  # rank 0 owns the checkpoints (the workers start while it trains)
        if cfg.resume:
            require_checkpoint(partial)  # before anything is written beside it
            _check_resumed_config(cfg, partial)
        else:
            start_fresh(partial, cfg.force)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_job_data(cfg)
    space, space_spec = build_space(cfg, data.in_channels, data.info.num_classes, data.info.image_size)
    strategy = _make_bsn(cfg, data.input_shape)
    timer = StepTimer()
    evaluator = _evaluator(
        cfg, data.train, data.val, data.info.num_classes, workdir, cfg.epochs, extra_callbacks=[timer]
    )
    _resume_from_checkpoint(cfg, evaluator, progress)
    if not is_worker_process():  # once the resume is accepted: a refused one keeps the interrupted search's
        _save_config(cfg, partial)
    progress(
        f"searching {cfg.space} on {cfg.dataset} ({data.info.sizes['train']} training images) with a "
        f"{cfg.cost} budget of {cfg.budget}, {cfg.epochs} epochs"
    )
    found = _search(space, evaluator, strategy, started)
    rank = strategy.oneshot_module.trainer.global_rank
    if rank != 0:
        return {"rank": rank}  # a DDP worker: rank 0 writes the outputs
    progress(f"found an architecture ({found.bsn_report['method']}); evaluating it")
    model, accuracy = _evaluate_found(cfg, found.model, data)
    costs = all_costs(space_spec, found.arch, data.input_shape, distributed_devices(cfg.cost) or 2)
    _write_network(found.arch, model, workdir)
    preprocessing = report_preprocessing(data.info, data.in_channels)
    onnx_info = _export_onnx(model, data, workdir, preprocessing) if cfg.onnx else None
    if onnx_info:
        costs["latency_ms"] = onnx_info["latency_ms"]
    _draw(space_spec, found.arch, strategy, workdir)
    report = _report(cfg, strategy, found, space_spec, data, costs, accuracy, onnx_info, timer)
    report["preprocessing"] = preprocessing
    report.update(_findings(strategy, found, space_spec, accuracy, data.info.num_classes))
    write_json(workdir / "report.json", report)
    keep_final(partial, workdir)  # <out>.partial goes once the output folder is in place
    return report


def run_search_as_worker(cfg: SearchConfig) -> None:
    """A DDP worker's part of the search (any rank but global rank 0): it trains beside rank 0, which writes."""
    with tempfile.TemporaryDirectory(prefix="nni-bsn-rank-") as tmp:
        run_search(cfg, Path(tmp), progress=lambda message: None)


#: The options a resumed search may change; any other difference from the checkpoint's is refused.
RESUMABLE_CHANGES = (
    "epochs",
    "resume",
    "force",
    "out",
    "accelerator",
    "devices",
    "num_nodes",
    "ddp_timeout",
    "onnx",
    "finetune_epochs",
    "extra",
)
_CONFIG_FILE = "search_config.json"


def _save_config(cfg: SearchConfig, partial: Path) -> None:
    """Keep the configuration beside the checkpoints, so that ``--resume`` can tell what changed."""
    partial.mkdir(parents=True, exist_ok=True)
    write_json(partial / _CONFIG_FILE, cfg.as_dict())


def _saved_config(partial: Path) -> dict[str, Any]:
    """The interrupted search's configuration, kept beside its checkpoints ({} if none or unreadable)."""
    try:
        saved = json.loads((partial / _CONFIG_FILE).read_text())
    except (OSError, ValueError):  # a checkpoint from before the configuration was kept, or a damaged file
        return {}
    return saved if isinstance(saved, dict) else {}


def _check_resumed_config(cfg: SearchConfig, partial: Path) -> None:
    """Raise :class:`UsageError` naming the first option that differs from the interrupted search's."""
    saved = _saved_config(partial)
    now = cfg.as_dict()
    for name, value in saved.items():
        if name not in RESUMABLE_CHANGES and name in now and now[name] != value:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"--resume: the checkpoint in {partial} was written with {flag} {value!r}, this command gives "
                f"{now[name]!r}; resume with the same options (only the epochs may grow), or start anew "
                f"without --resume"
            )


def _make_bsn(cfg: SearchConfig, input_shape: tuple[int, ...]):
    """BSN with ``cfg``'s cost, budget and options; a bad option is a usage error."""
    from nni_bsn.strategy.bsn import BSN

    cost = build_cost(cfg.cost, input_shape)
    try:
        return BSN(cost=cost, budget=cfg.budget, **cfg.bsn_options())
    except (TypeError, ValueError) as e:
        raise UsageError(str(e).removeprefix("BSN: ")) from None


def _evaluator(
    cfg: SearchConfig,
    train,
    val,
    num_classes: int,
    workdir: Path,
    epochs: int,
    logger=True,
    extra_callbacks=(),
):
    """NNI's Lightning evaluator of the search: the training recipe, checkpoints to resume from, DDP if asked."""
    from nni.nas.evaluator.pytorch import Lightning, Trainer
    from pytorch_lightning.loggers import TensorBoardLogger

    from nni_bsn.network.training import ScheduledClassificationModule, progress_options

    optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer]
    strategy = ddp_strategy(cfg.accelerator, cfg.devices, cfg.num_nodes, cfg.ddp_timeout)
    ddp: dict[str, Any] = {"strategy": strategy} if strategy is not None else {}
    # A checkpoint every 10 batches and at every epoch end, in <out>.partial where --resume looks.
    partial = partial_dir(cfg.out)
    callbacks = [
        *checkpoint_callbacks(partial),
        *extra_callbacks,
    ]
    module = ScheduledClassificationModule(
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        optimizer=optimizer,
        num_classes=num_classes,
        momentum=cfg.momentum,
        lr_milestones=cfg.lr_milestones,
    )
    trainer = Trainer(
        max_epochs=epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        **ddp,
        logger=TensorBoardLogger(str(workdir), name="tensorboard", version="") if logger else False,
        **progress_options("nni-bsn", callbacks),  # a bar on a terminal, else one line per epoch
        enable_checkpointing=True,
        plugins=[RotatingCheckpointIO()],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    return Lightning(module, trainer, train_dataloaders=train, val_dataloaders=val)


def _resume_from_checkpoint(cfg: SearchConfig, evaluator, progress) -> None:
    """With ``--resume``, start the fit from the interrupted search's last checkpoint."""
    if not cfg.resume:
        return
    partial = partial_dir(cfg.out)
    ckpt, state = load_resumable(partial, progress)
    done = _epochs_trained(state)
    if done > cfg.epochs:
        asked = _saved_config(partial).get("epochs")  # the interrupted search's own --epochs
        hint = (
            f"--epochs {asked} as it was, or any number from {done} up"
            if isinstance(asked, int) and asked >= done
            else f"--epochs {done} or more"
        )
        raise UsageError(
            f"--resume --epochs {cfg.epochs}: the checkpoint in {partial} has already trained {done} epoch(s); "
            f"resume with {hint}"
        )
    evaluator.fit_kwargs["ckpt_path"] = str(ckpt)
    if done == cfg.epochs:  # killed after training, while exporting or writing: only that is done again
        progress(f"resuming from {ckpt}: its {done} epoch(s) are trained; selecting and writing the result")
    else:
        progress(f"resuming from {ckpt} (epoch {done + 1} of {cfg.epochs})")


def _epochs_trained(checkpoint: dict[str, Any]) -> int:
    """The epochs a Lightning checkpoint has fully trained: its epoch, plus one if it was saved at the epoch's end.

    A checkpoint written after the last batch of epoch ``e`` still says ``epoch: e``; resumed with
    ``max_epochs = e + 1`` it would train nothing (and never validate).
    """
    batches = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    current = batches.get("current", {})
    # The checkpoint written when training ends has counted its last batch and epoch already.
    last_batch_pending = current.get("completed", 0) < current.get("ready", 1)
    return int(checkpoint.get("epoch", 0)) + int(bool(batches.get("is_last_batch")) and last_batch_pending)


def _search(space, evaluator, strategy, started: float) -> _Found:
    """Run the experiment; a budget no architecture can meet is a usage error."""
    from nni.nas.experiment import NasExperiment

    from nni_bsn.compat import quiet_experiment_config

    nni_dir = Path(tempfile.mkdtemp(prefix="nni-bsn-experiment-"))
    exp = NasExperiment(space, evaluator, strategy, config=quiet_experiment_config(nni_dir))
    try:
        exp.run()
        seconds = time.time() - started
        models = list(strategy.list_models())
        bsn_report = strategy.report()
        metrics = strategy.oneshot_module.trainer.callback_metrics
        final_metrics = {k: round(float(v), 6) for k, v in metrics.items()}
    except ValueError as e:
        if "budget" in str(e) or "cheapest" in str(e):
            raise UsageError(str(e).removeprefix("BSN: ")) from None
        raise
    finally:
        exp.stop()  # NNI would otherwise save its experiment checkpoint at interpreter exit
        shutil.rmtree(nni_dir, ignore_errors=True)
    model = copy.deepcopy(models[0].executable_model())  # freeze shares weights with the supernet
    return _Found(models[0].sample, model, bsn_report, final_metrics, seconds)


def _evaluate_found(cfg: SearchConfig, model, data: JobData):
    """The found network with its own BatchNorm statistics (fine-tuned if asked) and its accuracy."""
    recalibrate_batchnorm(model, data.train)
    if cfg.finetune_epochs > 0:
        model = finetune(
            model,
            data.train,
            data.val,
            data.info.num_classes,
            cfg.finetune_epochs,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            accelerator=cfg.accelerator,
        )
        recalibrate_batchnorm(model, data.train)
    return model, {"val": evaluate_accuracy(model, data.val), "test": evaluate_accuracy(model, data.test)}


def _write_network(arch: dict[str, Any], model, workdir: Path) -> None:
    from nni_bsn.network.export import save_weights

    (workdir / "arch.json").write_text(json.dumps(arch, indent=2))
    save_weights(model, workdir / "weights.pt")


def _export_onnx(model, data: JobData, workdir: Path, preprocessing: dict) -> dict[str, Any]:
    """``model.onnx``, proved in ONNX Runtime and timed, its input's ``preprocessing`` in its metadata (JSON under
    ``nni_bsn.preprocessing``); paths relative to the output folder."""
    from nni_bsn.network.export import export_and_time, write_metadata

    example = next(iter(data.test))[0][:8]
    info, latency = export_and_time(model, example, workdir / "model.onnx", data.input_shape)
    write_metadata(workdir / "model.onnx", {ONNX_PREPROCESSING_KEY: preprocessing})
    info["path"] = "model.onnx"
    info["files"] = [Path(f).name for f in info.get("files", [])]
    info["latency_ms"] = latency["median_ms"]
    return info


def _draw(space_spec: dict, arch: dict, strategy, workdir: Path) -> None:
    from nni_bsn.jobs.findings import kept_gates
    from nni_bsn.plots import draw_architecture, plot_gate_probabilities

    module = strategy.oneshot_module
    labels = module.distribution.gate_labels
    probs = dict(zip(labels, module.distribution.keep_probs().tolist()))
    probs.update(_chosen_probs(module.distribution, arch))
    space = rebuild_space(space_spec)
    draw_architecture(space, arch, workdir / "architecture.png", probs=probs or None)
    if module.keep_prob_history and labels:
        plot_gate_probabilities(
            module.keep_prob_history,
            labels,
            workdir / "gate_probabilities.png",
            kept=kept_gates(space, arch, labels),  # counted as architecture.png counts them
            start=strategy.start_keep_prob,  # where every gate started, drawn at epoch 0
        )


def _chosen_probs(distribution, arch: dict) -> dict[str, float]:
    """For each non-gate choice, the probability the search gave the value ``arch`` chose."""
    probs = distribution.probs()  # {label: {value: p}}, its values in choice_options()'s order
    return {
        label: list(probs[label].values())[values.index(arch[label])]
        for label, values in zip(distribution.choice_labels, distribution.choice_options())
        if arch.get(label) in values
    }


def _trained(trainer) -> dict[str, int]:
    """The epochs and batches the super network trained, over this run and the interrupted ones it resumed."""
    return {
        "epochs": int(trainer.current_epoch),
        "batches": int(trainer.fit_loop.epoch_loop.batch_progress.total.completed),
    }


def _findings(strategy, found: _Found, space_spec: dict, accuracy: dict, num_classes: int) -> dict[str, Any]:
    """The report's ``kept_gates`` and ``warnings`` (:mod:`nni_bsn.jobs.findings`)."""
    from nni_bsn.jobs.findings import kept_gates, search_warnings

    labels = strategy.oneshot_module.distribution.gate_labels
    kept = kept_gates(rebuild_space(space_spec), found.arch, labels)
    warnings = search_warnings(strategy.budgets, accuracy, num_classes, kept, len(labels))
    return {"kept_gates": {"kept": kept, "of": len(labels)}, "warnings": warnings}


def _report(
    cfg: SearchConfig,
    strategy,
    found: _Found,
    space_spec: dict,
    data: JobData,
    costs: dict[str, Any],
    accuracy: dict[str, float],
    onnx_info: dict[str, Any] | None,
    timer,
) -> dict[str, Any]:
    """``report.json``: what was searched, what was found, what it costs and how well it does."""
    bsn = found.bsn_report
    return {
        "strategy": "BSN",
        "strategy_args": repr(strategy),
        "space": space_spec,
        "dataset": {
            "name": getattr(data.info, "name", cfg.dataset),
            "sizes": data.info.sizes,
            "image_size": data.info.image_size,
        },
        "budgets": [
            {"cost": b.name, "unit": b.unit, "spec": str(b.spec), "limit": b.limit, "full": b.full}
            for b in strategy.budgets
        ],
        "arch": found.arch,
        "selection": {
            k: bsn[k]
            for k in (
                "method",
                "within_budget",
                "connected",
                "log_prob",
                "costs",
                "candidates_checked",
                "notes",
            )
        },
        "start_keep_prob": bsn["start_keep_prob"],
        "skipped_samples": bsn.get("skipped_samples", 0),
        "ranks": bsn.get("ranks"),  # each DDP rank's logits and architecture digests, and whether they agree
        "costs": costs,
        "accuracy": accuracy,
        "search_seconds": round(found.seconds + timer.earlier_seconds, 2),  # with the interrupted runs' time
        "search_timing": timer.summary(),  # this run's steps (a resumed search's earlier ones are not timed)
        "trained": _trained(strategy.oneshot_module.trainer),
        "final_epoch_metrics": found.final_metrics,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "onnx": onnx_info,
        "versions": versions(),
        "config": cfg.as_dict(),
    }
