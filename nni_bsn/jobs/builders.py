"""What the jobs build from a configuration: the model space (and again from a report), the cost evaluator, the
costs of a found architecture, the data (as RGB views where a space needs them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nni_bsn.jobs.config import COSTS, SPACES, SearchConfig, UsageError, distributed_devices

__all__ = [
    "SPACE_KINDS",
    "build_space",
    "rebuild_space",
    "build_cost",
    "all_costs",
    "needs_rgb",
    "to_rgb",
    "RepeatChannels",
    "JobData",
    "load_job_data",
]


@dataclass(frozen=True)
class SpaceKind:
    """One entry of the space table: the class, its arguments from a configuration, and which are tuples."""

    factory: Callable[[], type]  # imports lazily: NNI's hub spaces are heavy
    arguments: Callable[
        [SearchConfig, int, int, int], dict[str, Any]
    ]  # (cfg, in_channels, classes, image size)
    tuples: tuple[str, ...] = ()  # arguments a report stores as lists
    any_channels: bool = True  # takes grey images (NNI's hub spaces take 3 channels)


def _fabric(name: str) -> Callable[[], type]:
    def factory() -> type:
        import search_spaces

        return getattr(search_spaces, name)

    return factory


def _hub(name: str) -> Callable[[], type]:
    def factory() -> type:
        from nni.nas.hub import pytorch as hub

        return getattr(hub, name)

    return factory


SPACE_KINDS: dict[str, SpaceKind] = {
    "cnf": SpaceKind(
        _fabric("ConvolutionalNeuralFabric"),
        lambda c, i, n, s: dict(
            layers=c.layers, channels=c.channels, image_size=s, in_channels=i, num_classes=n
        ),
    ),
    "resnet-fabric": SpaceKind(
        _fabric("ResNetFabric"),
        lambda c, i, n, s: dict(
            units=c.units, maps=tuple(c.maps), shortcuts=c.shortcuts, in_channels=i, num_classes=n
        ),
        ("maps",),
    ),
    "nasbench201": SpaceKind(
        _hub("NasBench201"),
        lambda c, i, n, s: dict(
            stem_out_channels=c.channels, num_modules_per_stack=max(1, c.units), num_labels=n
        ),
        any_channels=False,
    ),
    "mobilenetv3": SpaceKind(
        _hub("MobileNetV3Space"),
        lambda c, i, n, s: dict(num_labels=n, width_multipliers=(0.25, 0.5), expand_ratios=(3.0, 6.0)),
        ("width_multipliers", "expand_ratios"),
        any_channels=False,
    ),
    "two-conv": SpaceKind(  # a fixed network (compare's two-conv row), not a space to search
        _fabric("TwoConv"), lambda c, i, n, s: dict(image_size=s, in_channels=i, num_classes=n)
    ),
    "proxylessnas": SpaceKind(
        _hub("ProxylessNAS"), lambda c, i, n, s: dict(num_labels=n, width_mult=0.25), any_channels=False
    ),
}


def _kind(name: str, where: str = "") -> SpaceKind:
    if name not in SPACE_KINDS:
        raise UsageError(f"unknown space {name!r}{where}; choose one of {', '.join(SPACES)}")
    return SPACE_KINDS[name]


def build_space(
    cfg: SearchConfig, in_channels: int, num_classes: int, image_size: int
) -> tuple[nn.Module, dict]:
    """The model space named by ``cfg.space`` and the arguments that rebuild it (the report's ``space``)."""
    kind = _kind(cfg.space)
    args = kind.arguments(cfg, in_channels, num_classes, image_size)
    spec = {"name": cfg.space, **{k: list(v) if k in kind.tuples else v for k, v in args.items()}}
    return kind.factory()(**args), spec


def rebuild_space(spec: dict) -> nn.Module:
    """A fresh model space from the ``space`` entry of a report."""
    kind = _kind(spec["name"], " in the report")
    args = {k: tuple(v) if k in kind.tuples else v for k, v in spec.items() if k != "name"}
    return kind.factory()(**args)


def needs_rgb(space: str, in_channels: int) -> bool:
    """Whether grey images must be seen as RGB for ``space`` (NNI's hub spaces take 3 channels)."""
    return not _kind(space).any_channels and in_channels != 3


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """A grey image (``C, H, W``) or batch (``N, C, H, W``) repeated over 3 channels (a view, no copy)."""
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:])


class RepeatChannels(torch.utils.data.Dataset):
    """Grey images seen as RGB (NNI's hub spaces take 3 channels)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return to_rgb(x), y


def build_cost(name: str, input_shape: tuple[int, ...], cache_dir: str | None = None):
    """The cost evaluator named ``macs``, ``params``, ``latency`` or ``distributed:N``."""
    from evaluators import DistributedCost, LatencyCost, MacsCost, ParamsCost

    if name == "macs":
        return MacsCost(input_shape=input_shape)
    if name == "params":
        return ParamsCost()
    if name == "latency":
        return LatencyCost(input_shape=input_shape, cache_dir=cache_dir)
    devices = distributed_devices(name)
    if devices is not None:
        return DistributedCost(devices=devices, input_shape=input_shape)
    raise UsageError(f"unknown cost {name!r}; choose one of {', '.join(COSTS)}")


def all_costs(space_spec: dict, arch: dict, input_shape: tuple[int, ...], devices: int = 2) -> dict[str, Any]:
    """MACs, parameters and the makespan over ``devices`` devices of ``arch``, counted on a fresh space."""
    from evaluators import DistributedCost, MacsCost, ParamsCost

    space = rebuild_space(space_spec)
    costs: dict[str, Any] = {
        "macs": MacsCost(input_shape=input_shape).bind(space).cost(arch),
        "params": ParamsCost().bind(space).cost(arch),
    }
    try:
        dc = DistributedCost(devices=devices, input_shape=input_shape).bind(space)
        costs["distributed"] = {"devices": devices, "makespan_ms": dc.cost(arch), "unit": "ms"}
    except TypeError:  # not a gated space: no block DAG to schedule
        costs["distributed"] = None
    return costs


@dataclass
class JobData:
    """The loaders of a search and what the space needs to know about the images."""

    train: Any
    val: Any
    test: Any
    info: Any
    in_channels: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.in_channels, self.info.image_size, self.info.image_size)


def load_job_data(cfg: SearchConfig) -> JobData:
    """The loaders, as RGB where the space needs 3 channels; a missing dataset is a usage error."""
    from nni_bsn.data import DataError, get_dataloaders

    try:
        train, val, test, info = get_dataloaders(
            cfg.dataset, cfg.data_dir, cfg.batch_size, cfg.image_size, cfg.seed, train_size=cfg.train_size
        )
    except DataError as e:
        raise UsageError(str(e)) from None
    if not needs_rgb(cfg.space, info.in_channels):
        return JobData(train, val, test, info, info.in_channels)
    from nni.nas.evaluator.pytorch import DataLoader

    train = DataLoader(
        RepeatChannels(train.dataset),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    val = DataLoader(RepeatChannels(val.dataset), batch_size=cfg.batch_size)
    test = DataLoader(RepeatChannels(test.dataset), batch_size=cfg.batch_size)
    return JobData(train, val, test, info, 3)
