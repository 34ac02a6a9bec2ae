"""Compatibility fixes for NNI 3.0 on today's stack (torch 2.14, Lightning 2.6, numpy 2).

- the filters for NNI's and Lightning's noise, from :mod:`nni_bsn.quiet` (``import nni_bsn`` sets the import-time
  ones before this module imports NNI);
- :func:`apply_filelock_guard`: with filelock >= 3.12 every ``NasExperiment`` spins forever on NNI's
  experiment lock; the guard swaps NNI's lock for a plain OS file lock (applied at import, only then);
- :class:`TaggedENAS`: NNI's ENAS on Lightning >= 2.1, which stopped passing the ``dataloader_idx`` that
  ENAS uses to tell training batches from validation batches;
- :func:`make_differentiable_penalty` and :class:`DartsWithPenalty` / :class:`GumbelDartsWithPenalty` /
  :class:`ProxylessWithPenalty`: NNI 3.0's DARTS-family ``penalty`` receives probabilities as Python floats,
  so it never reaches the architecture parameters; these give it live tensors;
- :func:`quiet_experiment_config`: a one-shot ``NasExperimentConfig`` without the
  "``training_service`` will be ignored" warnings, writing its files under a folder of your choice;
- :func:`quiet_library_warnings`, :func:`quiet_library_logs`: the command line's filters for NNI's and
  Lightning's warnings and logs of every run;
- :func:`fabric_flops_profiler`: NNI's ``FlopsProfiler`` on the fabrics, whose modules it has no formulas for.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from nni.nas.experiment import NasExperimentConfig
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule
from nni.nas.strategy import DARTS, ENAS, GumbelDARTS, Proxyless
from packaging.version import Version

from nni_bsn.quiet import NOISY_MODULES, quiet_library_logs, quiet_library_warnings  # noqa: F401

__all__ = [
    "apply_filelock_guard",
    "TaggedENAS",
    "live_arch_probs",
    "make_differentiable_penalty",
    "DartsWithPenalty",
    "GumbelDartsWithPenalty",
    "ProxylessWithPenalty",
    "quiet_experiment_config",
    "quiet_library_warnings",
    "quiet_library_logs",
    "fabric_flops_profiler",
]

_logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# filelock

FILELOCK_BROKEN_FROM = Version("3.12")


def _filelock_version() -> Version | None:
    try:
        return Version(importlib.metadata.version("filelock"))
    except importlib.metadata.PackageNotFoundError:
        return None


def _os_file_lock(path: str, stale: float = -1):
    import filelock

    # An OS lock is released when its process dies, so a stale lock cannot block later experiments.
    return filelock.FileLock(path + ".lock", timeout=60)


def apply_filelock_guard(force: bool = False) -> bool:
    """Replace NNI's experiment-manifest lock when filelock >= 3.12 is installed (or ``force``).

    NNI's ``SimplePreemptiveLock`` keeps its state where filelock < 3.12 kept it; with a newer filelock it
    never reports "locked", and ``NasExperiment.run()`` waits forever. Returns whether the guard was applied.
    """
    version = _filelock_version()
    if not force and (version is None or version < FILELOCK_BROKEN_FROM):
        return False
    from nni.tools.nnictl import common_utils, config_utils

    config_utils.get_file_lock = _os_file_lock
    common_utils.get_file_lock = _os_file_lock
    _logger.debug("filelock %s: NNI's experiment lock replaced by an OS file lock", version)
    return True


apply_filelock_guard()

# ---------------------------------------------------------------------------------------------------------------
# ENAS on Lightning >= 2.1


class _Tagged:
    """Iterate ``loader`` as ``(batch, tag)`` pairs: the packing ENAS reads to tell train from val batches."""

    def __init__(self, loader: Any, tag: str):
        self.loader, self.tag = loader, tag

    def __iter__(self):
        # A generator function, so the DataLoader iterator (and its RNG draw) is created lazily, as Lightning would.
        for batch in self.loader:
            yield batch, self.tag

    def __len__(self) -> int:
        return len(self.loader)


class TaggedENAS(ENAS):
    """NNI's :class:`~nni.nas.strategy.ENAS`, working on pytorch-lightning >= 2.1.

    Lightning 2.1 stopped passing ``(batch, batch_idx, dataloader_idx)`` to ``training_step`` for a combined
    loader, so ENAS took every batch for a validation batch. This version tags each batch with ``'train'`` or
    ``'val'`` itself, which ENAS's ``training_step`` already understands. Arguments are those of ENAS; pass
    ``reward_metric_name='val_acc'`` with NNI's ``Classification`` evaluator.

    Example
    -------
    >>> strategy = TaggedENAS(reward_metric_name="val_acc")
    """

    def train_dataloader(self, train_dataloader_fn, val_dataloader_fn):
        from nni.nas.oneshot.pytorch._dataloader import ConcatLoader

        return ConcatLoader(
            {"train": _Tagged(train_dataloader_fn(), "train"), "val": _Tagged(val_dataloader_fn(), "val")}
        )


# ---------------------------------------------------------------------------------------------------------------
# DARTS-family penalty


def live_arch_probs(module: BaseOneShotLightningModule) -> dict[str, dict[Any, torch.Tensor]]:
    """``{label: {value: probability}}`` of a DARTS/GumbelDARTS/Proxyless module, as tensors attached to α.

    Same content as ``module.export_probs()``, which returns Python floats. Labels shared by several
    super-modules appear once (the first one wins, as in NNI's own ``export_probs``).
    """
    probs: dict[str, dict[Any, Any]] = {}
    for m in module.supernet_modules():
        alpha, softmax = getattr(m, "_arch_alpha", None), getattr(m, "_softmax", None)
        if alpha is None or softmax is None:
            probs.update({k: v for k, v in m.export_probs(dict(probs)).items() if k not in probs})
            continue
        if isinstance(alpha, torch.Tensor):
            label = m.label
            if label in probs:
                continue
            names = m.names if hasattr(m, "names") else range(len(alpha))  # LayerChoice / InputChoice
            probs[label] = dict(zip(names, softmax(alpha)))
        elif hasattr(m, "op_names"):  # cell: one α per input node, over op names
            for label, a in alpha.items():
                probs.setdefault(label, dict(zip(m.op_names, softmax(a))))
        else:  # mixed operation (nni.choice arguments) or repeat (mutable depth)
            specs = (m.depth_choice if hasattr(m, "depth_choice") else m).simplify()
            for label, a in alpha.items():
                if label not in probs and label in specs:
                    probs[label] = dict(zip(specs[label].values, softmax(a)))
    return probs


class _LiveProbsPenalty(torch.nn.Module):
    """Calls ``penalty(loss, live_arch_probs(module))`` whatever (float) probabilities it is given.

    A module, like NNI's penalties (the Lightning module registers its penalty as a child). The owner is
    held through a weak reference so that it does not become its own grandchild.
    """

    def __init__(self, penalty: torch.nn.Module, module: BaseOneShotLightningModule):
        super().__init__()
        self.penalty = penalty
        self._owner = weakref.ref(module)

    def forward(self, loss: torch.Tensor, _float_probs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        loss, details = self.penalty(loss, live_arch_probs(self._owner()))
        return loss, {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in details.items()}

    def extra_repr(self) -> str:
        return "probabilities: live tensors"


def make_differentiable_penalty(module: BaseOneShotLightningModule) -> BaseOneShotLightningModule:
    """Make the ``penalty`` of a DARTS/GumbelDARTS/Proxyless Lightning module reach the architecture parameters.

    NNI 3.0 computes the penalty on ``export_probs()``, i.e. on floats: it changes the reported loss but
    never α (microsoft/nni#4699). After this call it gets tensors attached to α. A module without a penalty
    is returned unchanged. Returns ``module``.
    """
    penalty = getattr(module, "penalty", None)
    if penalty is not None and not isinstance(penalty, _LiveProbsPenalty):
        module.penalty = _LiveProbsPenalty(penalty, module)
    return module


class _LivePenaltyMixin:
    def configure_oneshot_module(self, training_module):
        return make_differentiable_penalty(super().configure_oneshot_module(training_module))


class DartsWithPenalty(_LivePenaltyMixin, DARTS):
    """NNI's :class:`~nni.nas.strategy.DARTS` whose ``penalty`` really acts on α (see :func:`make_differentiable_penalty`).

    Example
    -------
    >>> strategy = DartsWithPenalty(penalty={"profiler": profiler, "baseline": full_cost, "scale": 0.1})
    """


class GumbelDartsWithPenalty(_LivePenaltyMixin, GumbelDARTS):
    """NNI's :class:`~nni.nas.strategy.GumbelDARTS` whose ``penalty`` really acts on α."""


class ProxylessWithPenalty(_LivePenaltyMixin, Proxyless):
    """NNI's :class:`~nni.nas.strategy.Proxyless` whose ``penalty`` really acts on α."""


# ---------------------------------------------------------------------------------------------------------------
# experiment config


def quiet_experiment_config(working_dir: str | os.PathLike, **fields: Any) -> NasExperimentConfig:
    """A ``NasExperimentConfig`` for one-shot strategies that keeps its files in ``working_dir``.

    Sequential engine, raw model format and no training service: NNI's default config names a 'local'
    training service and then warns, at every step, that a sequential engine ignores it. NNI writes
    ``<working_dir>/<experiment id>/{checkpoint,log}`` there (its manifest still goes to ``~/nni-experiments``).
    Extra ``fields`` are set on the config (e.g. ``experiment_name``).
    """
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = os.fspath(os.path.abspath(os.fspath(working_dir)))
    for key, value in fields.items():
        setattr(config, key, value)
    return config


# ---------------------------------------------------------------------------------------------------------------
# NNI's FlopsProfiler on the fabrics

_FORMULAS_REGISTERED = False


def _register_fabric_formulas() -> None:
    """Shape and FLOPs formulas for the fabric modules NNI's profiler does not know (once per process).

    ``Zero`` (an 'off' gate: zeros of the gated op's output shape, no compute) and ``UpConvBN`` (nearest x2
    upsampling, then conv-BN at the output resolution: ``F.interpolate`` has no NNI shape formula). Results are
    floats, like NNI's BatchNorm formula without normalisation counting, because NNI's expectation cannot sum
    ints with floats across the candidates of a choice.
    """
    global _FORMULAS_REGISTERED
    if _FORMULAS_REGISTERED:
        return
    from nni.nas.profiler.pytorch.flops import FlopsResult, register_flops_formula
    from nni.nas.profiler.pytorch.utils import profiler_leaf_module, register_shape_inference_formula
    from nni.nas.profiler.pytorch.utils.shape import MutableShape

    from search_spaces.ops import UpConvBN, Zero

    def zero_shape(module, x):
        n, _, h, w = x.real_shape
        if module.stride > 1:
            h, w = (h - 1) // module.stride + 1, (w - 1) // module.stride + 1
        return MutableShape(n, module.out_channels, h * module.upsample, w * module.upsample)

    def up_shape(module, x):
        n, _, h, w = x.real_shape
        return MutableShape(n, module.conv[0].out_channels, 2 * h, 2 * w)

    def up_flops(module, inputs, output, count_bias=True):
        conv = module.conv[0]
        kernel = conv.kernel_size[0] * conv.kernel_size[1]
        bias = conv.bias is not None
        resolution = int(output[-2]) * int(output[-1])
        return FlopsResult(
            float(conv.out_channels * resolution * (kernel * conv.in_channels + (bias and count_bias))),
            float(conv.out_channels * (conv.in_channels * kernel + bias)),
        )

    for cls, formula in ((Zero, zero_shape), (UpConvBN, up_shape)):
        profiler_leaf_module(cls)
        register_shape_inference_formula(cls, formula)
    register_flops_formula(Zero, lambda module, inputs, output: FlopsResult(0.0, 0.0))
    register_flops_formula(UpConvBN, up_flops)
    _FORMULAS_REGISTERED = True


def fabric_flops_profiler(space: Any, input_shape: Sequence[int]):
    """NNI's ``FlopsProfiler`` on a raw fabric space, counting multiply-accumulates of convolutions and linears.

    Bias, normalisation and activation counts are off, so the figure is comparable to fvcore's MACs. NNI counts
    every 'on' gate (dead or not), so on a pruned architecture it is above :class:`evaluators.MacsCost`.
    """
    from nni.nas.profiler.pytorch.flops import FlopsProfiler

    _register_fabric_formulas()
    # Batch 2: BatchNorm in training mode rejects one value per channel at 1x1 maps; FLOPs ignore the batch.
    example = torch.randn(2, *tuple(input_shape)[1:])
    was_training = space.training
    try:
        return FlopsProfiler(
            space, example, count_bias=False, count_normalization=False, count_activation=False
        )
    finally:
        space.train(was_training)
