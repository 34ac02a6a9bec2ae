"""The search job behind ``nni-bsn search``: space, data, costs, BSN through NasExperiment, evaluation, outputs."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["SearchConfig", "UsageError", "check_data_cost_budget", "SPACES", "COSTS", "PRESETS", "build_space", "build_cost", "run_search",
           "atomic_output_dir", "evaluate_accuracy", "recalibrate_batchnorm", "versions"]

_logger = logging.getLogger(__name__)

SPACES = ("cnf", "resnet-fabric", "nasbench201", "mobilenetv3", "proxylessnas")
COSTS = ("macs", "params", "latency", "distributed:N")

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's configurations (bsn_reference.md §4): meant for a GPU and CIFAR on disk.
    "paper-cnf": dict(space="cnf", layers=8, channels=128, dataset="cifar10", epochs=300, batch_size=64,
                      optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4, lr_milestones=(150, 225),
                      arc_optimizer="sgd", arc_learning_rate=1e-3, init_keep_prob=0.95),
    "paper-resnet-fabric": dict(space="resnet-fabric", units=3, maps=(16, 32, 64), shortcuts="slr",
                                dataset="cifar10", epochs=300, batch_size=64, optimizer="sgd", learning_rate=0.1,
                                momentum=0.9, weight_decay=1e-4, lr_milestones=(150, 225),
                                arc_optimizer="sgd", arc_learning_rate=1e-3, init_keep_prob=0.95),
}


class UsageError(ValueError):
    """Bad input from the user: the CLI prints it on one line and exits with code 2."""


@dataclass
class SearchConfig:
    """Everything ``nni-bsn search`` needs; the defaults are a few-minute run on digits with 2 CPU cores."""

    space: str = "cnf"
    dataset: str = "digits"
    data_dir: str | None = None
    cost: str = "macs"
    budget: str = "50%"
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    accelerator: str = "cpu"
    devices: int = 1
    out: str = "bsn-search"
    force: bool = False
    # space shape
    layers: int = 4
    channels: int = 16
    image_size: int | None = 16
    units: int = 2
    maps: tuple[int, ...] = (8, 16, 32)
    shortcuts: str = "slr"
    # optimisation
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()
    # BSN
    lam: float = 2.0
    num_samples: int = 1
    arc_optimizer: str = "adam"
    arc_learning_rate: float = 0.1
    init_keep_prob: float | str = "auto"
    warmup_epochs: int = 0
    allow_over_budget: bool = False
    # after the search
    finetune_epochs: int = 0
    onnx: bool = True
    resume: bool = False
    preset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_data_cost_budget(dataset: str, cost: str, budget: Any) -> None:
    """Raise :class:`UsageError` (one line) for an unknown dataset or cost, or a malformed budget."""
    from .budget import parse_budget

    if str(dataset).lower().replace("-", "") not in ("digits", "cifar10", "cifar100"):
        raise UsageError(f"unknown dataset {dataset!r}; choose digits, cifar10 or cifar100")
    if cost not in ("macs", "params", "latency") and not str(cost).startswith("distributed"):
        raise UsageError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
    try:
        parse_budget(budget)
    except ValueError as e:
        raise UsageError(str(e)) from None


def versions() -> dict[str, str]:
    import nni
    import onnxruntime
    import pytorch_lightning

    from . import __version__

    return {"nni-bsn": __version__, "nni": nni.__version__, "torch": torch.__version__,
            "pytorch_lightning": pytorch_lightning.__version__, "onnxruntime": onnxruntime.__version__}


# ----- building blocks ------------------------------------------------------------------------------------------


class _RepeatChannels(torch.utils.data.Dataset):
    """Grey images seen as RGB (NNI's hub spaces take 3 channels)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x.expand(3, *x.shape[1:]), y


def build_space(cfg: SearchConfig, in_channels: int, num_classes: int, image_size: int) -> tuple[nn.Module, dict]:
    """The model space named by ``cfg.space`` and the arguments that rebuild it."""
    from search_spaces import ConvolutionalNeuralFabric, ResNetFabric

    if cfg.space == "cnf":
        args = dict(layers=cfg.layers, channels=cfg.channels, image_size=image_size, in_channels=in_channels,
                    num_classes=num_classes)
        return ConvolutionalNeuralFabric(**args), {"name": "cnf", **args}
    if cfg.space == "resnet-fabric":
        args = dict(units=cfg.units, maps=tuple(cfg.maps), shortcuts=cfg.shortcuts, in_channels=in_channels,
                    num_classes=num_classes)
        return ResNetFabric(**args), {"name": "resnet-fabric", **args, "maps": list(cfg.maps)}
    from nni.nas.hub import pytorch as hub

    if cfg.space == "nasbench201":
        args = dict(stem_out_channels=cfg.channels, num_modules_per_stack=max(1, cfg.units), num_labels=num_classes)
        return hub.NasBench201(**args), {"name": "nasbench201", **args}
    if cfg.space == "mobilenetv3":
        args = dict(num_labels=num_classes, width_multipliers=(0.25, 0.5), expand_ratios=(3.0, 6.0))
        return hub.MobileNetV3Space(**args), {"name": "mobilenetv3", **args}
    if cfg.space == "proxylessnas":
        args = dict(num_labels=num_classes, width_mult=0.25)
        return hub.ProxylessNAS(**args), {"name": "proxylessnas", **args}
    raise UsageError(f"unknown space {cfg.space!r}; choose one of {', '.join(SPACES)}")


def rebuild_space(spec: dict) -> nn.Module:
    """A fresh model space from the ``space`` entry of a report."""
    cfg = SearchConfig(space=spec["name"])
    args = {k: v for k, v in spec.items() if k != "name"}
    from search_spaces import ConvolutionalNeuralFabric, ResNetFabric

    if cfg.space == "cnf":
        return ConvolutionalNeuralFabric(**args)
    if cfg.space == "resnet-fabric":
        return ResNetFabric(**{**args, "maps": tuple(args["maps"])})
    from nni.nas.hub import pytorch as hub

    factory = {"nasbench201": hub.NasBench201, "mobilenetv3": hub.MobileNetV3Space, "proxylessnas": hub.ProxylessNAS}
    if cfg.space not in factory:
        raise UsageError(f"unknown space {cfg.space!r} in the report")
    for key in ("width_multipliers", "expand_ratios"):
        if key in args:
            args[key] = tuple(args[key])
    return factory[cfg.space](**args)


def build_cost(name: str, input_shape: tuple[int, ...], cache_dir: str | None = None):
    """The cost evaluator named ``macs``, ``params``, ``latency`` or ``distributed:N``."""
    from evaluators import DistributedCost, LatencyCost, MacsCost, ParamsCost

    if name == "macs":
        return MacsCost(input_shape=input_shape)
    if name == "params":
        return ParamsCost()
    if name == "latency":
        return LatencyCost(input_shape=input_shape, cache_dir=cache_dir)
    if name.startswith("distributed"):
        _, _, n = name.partition(":")
        try:
            devices = int(n) if n else 2
        except ValueError:
            devices = 0
        if devices < 1:
            raise UsageError(f"cost {name!r}: write distributed:N with N a positive number of devices, e.g. distributed:4")
        return DistributedCost(devices=devices, input_shape=input_shape)
    raise UsageError(f"unknown cost {name!r}; choose one of {', '.join(COSTS)}")


def partial_dir(out: str | os.PathLike) -> Path:
    """Where the checkpoints of an interrupted search into ``out`` are kept."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` that becomes ``out`` only when the block succeeds.

    Nothing half-written is ever left at ``out``: on failure the temporary folder is removed (its checkpoints
    are kept in ``<out>.partial`` so a search can be resumed).
    """
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"output folder {out} already exists; pass --force to replace it or choose another --out")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as e:
        raise UsageError(f"cannot write the output folder {out}: {e.strerror or e}") from None
    try:
        yield tmp
    except BaseException:
        ckpt = tmp / "checkpoints"
        if ckpt.is_dir() and any(ckpt.iterdir()):
            partial = partial_dir(out)
            shutil.rmtree(partial, ignore_errors=True)
            shutil.move(str(ckpt), str(partial))
            _logger.warning("search interrupted: checkpoints kept in %s", partial)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def recalibrate_batchnorm(model: nn.Module, loader, batches: int = 20) -> None:
    """Re-estimate BatchNorm statistics of an exported sub-network on training batches.

    The super network's running statistics mix every sampled architecture; the exported one needs its own.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the recalibration batches
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x)
    model.eval()


def evaluate_accuracy(model: nn.Module, loader) -> float:
    """Top-1 accuracy of ``model`` on ``loader``."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(-1) == y).sum())
            total += int(y.numel())
    return correct / max(total, 1)


class StepTimer:
    """A Lightning callback recording the wall time of every training step and epoch."""

    def __new__(cls, *args, **kwargs):  # built lazily so importing this module does not import Lightning
        from pytorch_lightning.callbacks import Callback

        class _StepTimer(Callback):
            def __init__(self):
                self.steps: list[float] = []
                self.epochs: list[float] = []

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self._t = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.steps.append(time.perf_counter() - self._t)

            def on_train_epoch_start(self, trainer, pl_module):
                self._e = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                if getattr(self, "_e", None) is not None:  # not set when a search resumes mid-epoch
                    self.epochs.append(time.perf_counter() - self._e)

            def summary(self) -> dict[str, float]:
                import statistics

                return {"steps": len(self.steps),
                        "step_ms_median": round(1000 * statistics.median(self.steps), 3) if self.steps else None,
                        "epoch_s_median": round(statistics.median(self.epochs), 3) if self.epochs else None}

        return _StepTimer()


def _evaluator(cfg: SearchConfig, train, val, num_classes: int, workdir: Path, epochs: int, logger=True,
               extra_callbacks=()):
    from nni.nas.evaluator.pytorch import Lightning, Trainer
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    from .training import ScheduledClassificationModule

    optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer]
    ddp: dict[str, Any] = {}
    if cfg.devices > 1:  # path sampling leaves the unsampled blocks without gradient at each step
        from pytorch_lightning.strategies import DDPStrategy

        ddp["strategy"] = DDPStrategy(find_unused_parameters=True,
                                      process_group_backend="gloo" if cfg.accelerator == "cpu" else None)
    # A checkpoint every 10 batches (two optimizer steps a batch) and at every epoch end, so a killed search resumes.
    callbacks = [ModelCheckpoint(dirpath=workdir / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_train_steps=20),
                 ModelCheckpoint(dirpath=workdir / "checkpoints", save_last=True, save_top_k=0), *extra_callbacks]
    module = ScheduledClassificationModule(
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, optimizer=optimizer,
        num_classes=num_classes, momentum=cfg.momentum, lr_milestones=cfg.lr_milestones,
    )
    trainer = Trainer(
        max_epochs=epochs, accelerator=cfg.accelerator, devices=cfg.devices, **ddp,
        logger=TensorBoardLogger(str(workdir), name="tensorboard", version="") if logger else False,
        callbacks=callbacks, enable_checkpointing=True, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    ev = Lightning(module, trainer, train_dataloaders=train, val_dataloaders=val)
    return ev


def run_search(cfg: SearchConfig, workdir: Path, progress=print) -> dict[str, Any]:
    """Run BSN on ``cfg`` writing every output into ``workdir``; returns the report."""
    import pytorch_lightning as pl
    from nni.nas.experiment import NasExperiment

    from .compat import quiet_experiment_config
    from .data import DataError, get_dataloaders
    from .strategy import BSN

    started = time.time()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    image_size = cfg.image_size
    try:
        train, val, test, info = get_dataloaders(cfg.dataset, cfg.data_dir, cfg.batch_size, image_size, cfg.seed)
    except DataError as e:
        raise UsageError(str(e)) from None
    in_channels = info.in_channels
    if cfg.space not in ("cnf", "resnet-fabric") and in_channels != 3:
        from nni.nas.evaluator.pytorch import DataLoader

        train = DataLoader(_RepeatChannels(train.dataset), batch_size=cfg.batch_size, shuffle=True,
                           generator=torch.Generator().manual_seed(cfg.seed))
        val = DataLoader(_RepeatChannels(val.dataset), batch_size=cfg.batch_size)
        test = DataLoader(_RepeatChannels(test.dataset), batch_size=cfg.batch_size)
        in_channels = 3
    space, space_spec = build_space(cfg, in_channels, info.num_classes, info.image_size)
    input_shape = (1, in_channels, info.image_size, info.image_size)
    cost = build_cost(cfg.cost, input_shape)
    try:
        strategy = BSN(cost=cost, budget=cfg.budget, lam=cfg.lam, num_samples=cfg.num_samples,
                       arc_optimizer=cfg.arc_optimizer, arc_learning_rate=cfg.arc_learning_rate,
                       init_keep_prob=cfg.init_keep_prob, warmup_epochs=cfg.warmup_epochs,
                       allow_over_budget=cfg.allow_over_budget)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e).removeprefix("BSN: ")) from None
    timer = StepTimer()
    ev = _evaluator(cfg, train, val, info.num_classes, workdir, cfg.epochs, extra_callbacks=[timer])
    partial = partial_dir(cfg.out)
    if cfg.resume:
        ckpt = partial / "last.ckpt"
        if not ckpt.is_file():
            raise UsageError(f"nothing to resume: {ckpt} does not exist (it is written when a search is interrupted)")
        done = int(torch.load(ckpt, map_location="cpu", weights_only=False).get("epoch", 0))
        if done >= cfg.epochs:
            raise UsageError(f"the checkpoint in {partial} has reached epoch {done + 1}; resume with --epochs larger "
                             f"than {done + 1} (the interrupted search's --epochs)")
        ev.fit_kwargs["ckpt_path"] = str(ckpt)
        progress(f"resuming from {ckpt} (epoch {done + 1} of {cfg.epochs})")
    progress(f"searching {cfg.space} on {cfg.dataset} ({info.sizes['train']} training images) with a {cfg.cost} "
             f"budget of {cfg.budget}, {cfg.epochs} epochs")
    nni_dir = Path(tempfile.mkdtemp(prefix="nni-bsn-experiment-"))
    exp = NasExperiment(space, ev, strategy, config=quiet_experiment_config(nni_dir))
    try:
        exp.run()
        search_seconds = time.time() - started
        models = list(strategy.list_models())
        report_bsn = strategy.report()
        final_metrics = {k: round(float(v), 6) for k, v in strategy.oneshot_module.trainer.callback_metrics.items()}
    except ValueError as e:
        if "budget" in str(e) or "cheapest" in str(e):
            raise UsageError(str(e).removeprefix("BSN: ")) from None
        raise
    finally:
        exp.stop()  # NNI would otherwise save its experiment checkpoint at interpreter exit
        shutil.rmtree(nni_dir, ignore_errors=True)
    if strategy.oneshot_module.trainer.global_rank != 0:
        return {"rank": strategy.oneshot_module.trainer.global_rank}  # a DDP worker: rank 0 writes the outputs
    arch = models[0].sample
    model = copy.deepcopy(models[0].executable_model())  # freeze shares weights with the supernet
    progress(f"found an architecture ({report_bsn['method']}); evaluating it")
    recalibrate_batchnorm(model, train)
    if cfg.finetune_epochs > 0:
        model = _finetune(cfg, model, train, val, info.num_classes, workdir, cfg.finetune_epochs)
        recalibrate_batchnorm(model, train)
    accuracy = {"val": evaluate_accuracy(model, val), "test": evaluate_accuracy(model, test)}
    costs = _all_costs(space_spec, arch, input_shape)
    (workdir / "arch.json").write_text(json.dumps(arch, indent=2))
    torch.save(model.state_dict(), workdir / "weights.pt")
    onnx_info = None
    if cfg.onnx:
        from .export import export_onnx, measure_ort_latency

        example = next(iter(test))[0][:8]
        onnx_info = export_onnx(model, example, workdir / "model.onnx")
        onnx_info["path"] = "model.onnx"
        onnx_info["files"] = [Path(f).name for f in onnx_info.get("files", [])]  # relative to the output folder
        lat = measure_ort_latency(workdir / "model.onnx", input_shape)
        onnx_info["latency_ms"] = lat["median_ms"]
        costs["latency_ms"] = lat["median_ms"]
    _draw(space_spec, arch, strategy, workdir)
    report = {
        "strategy": "BSN",
        "strategy_args": repr(strategy),
        "space": space_spec,
        "dataset": {"name": info.name if hasattr(info, "name") else cfg.dataset, "sizes": info.sizes,
                    "image_size": info.image_size},
        "budgets": [{"cost": b.name, "unit": b.unit, "spec": str(b.spec), "limit": b.limit, "full": b.full}
                    for b in strategy.budgets],
        "arch": arch,
        "selection": {k: report_bsn[k] for k in ("method", "within_budget", "connected", "log_prob", "costs")},
        "start_keep_prob": report_bsn["start_keep_prob"],
        "costs": costs,
        "accuracy": accuracy,
        "search_seconds": round(search_seconds, 2),
        "search_timing": timer.summary(),
        "final_epoch_metrics": final_metrics,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "onnx": onnx_info,
        "versions": versions(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if cfg.resume:
        shutil.rmtree(partial, ignore_errors=True)
    return report


def _finetune(cfg, model, train, val, num_classes, workdir, epochs):
    from nni.nas.evaluator.pytorch import Classification

    ev = Classification(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, train_dataloaders=train,
                        val_dataloaders=val, num_classes=num_classes, max_epochs=epochs, accelerator=cfg.accelerator,
                        devices=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    ev.fit(model)
    return model


def _all_costs(space_spec: dict, arch: dict, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """MACs, parameters and the distributed makespan of the exported architecture, on a fresh space."""
    from evaluators import DistributedCost, MacsCost, ParamsCost

    space = rebuild_space(space_spec)
    costs: dict[str, Any] = {
        "macs": MacsCost(input_shape=input_shape).bind(space).cost(arch),
        "params": ParamsCost().bind(space).cost(arch),
    }
    try:
        dc = DistributedCost(devices=2, input_shape=input_shape).bind(space)
        costs["distributed"] = {"devices": 2, "makespan_ms": dc.cost(arch), "unit": "ms"}
    except TypeError:  # not a gated space: no block DAG to schedule
        costs["distributed"] = None
    return costs


def _draw(space_spec: dict, arch: dict, strategy, workdir: Path) -> None:
    from .plots import draw_architecture, plot_gate_probabilities

    module = strategy.oneshot_module
    probs = dict(zip(module.distribution.gate_labels, module.distribution.keep_probs().tolist()))
    draw_architecture(rebuild_space(space_spec), arch, workdir / "architecture.png", probs=probs or None)
    if module.keep_prob_history and module.distribution.gate_labels:
        plot_gate_probabilities(module.keep_prob_history, module.distribution.gate_labels,
                                workdir / "gate_probabilities.png")
