"""Multiply-accumulates (fvcore) and parameter counts of an architecture, exact and per-gate cached."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from typing import Any

import torch
from torch import nn

from .table import AdditiveCost

__all__ = ["MacsCost", "ParamsCost", "fvcore_macs"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _analysis(model: nn.Module, inputs: torch.Tensor) -> Any:
    with _quiet():
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model.eval(), inputs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        analysis.total()  # run the trace now, inside the warning filter
    return analysis


def fvcore_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """fvcore's count of ``model`` (in eval mode) on a zero input of ``input_shape``: the reference count."""
    with torch.no_grad():
        return int(_analysis(model, torch.zeros(*input_shape)).total())


class MacsCost(AdditiveCost):
    """Multiply-accumulates of the pruned architecture, counted by fvcore (``FlopCountAnalysis``).

    fvcore's numbers are MACs (one per multiply-add; a FLOP count would be about twice as large). What it counts:
    convolutions and linear layers (weights only: conv/linear biases are not counted), batch norm in eval mode
    (2 per element when affine), adaptive average pooling (1 per input element), nearest upsampling (1 per output
    element). What it skips, and so this cost skips too: element-wise additions (the fabric's node sums and the
    residual additions), ReLU, ``mul``/``div``, max pooling, and the zeros produced by 'off' gates (nothing is
    computed). The model is counted in eval mode on one input of ``input_shape`` (batch 1 by default; counts
    scale linearly with the batch).

    Per-choice counts are read once at bind from fvcore's ``by_module()`` on a few frozen architectures (for a
    gate space: all gates off, all gates on), so ``cost(arch)`` equals fvcore's count of
    ``space.freeze(space.prune(arch))`` exactly, without tracing. Spaces whose cost is not additive over their
    ``LayerChoice``s (e.g. width choices) are counted per architecture, memoised (see ``AdditiveCost``).

    Parameters
    ----------
    input_shape
        Shape of the input tensor, batch included.
    verify
        How many random architectures check the per-choice decomposition against a direct count at bind.
    """

    name = "macs"
    unit = "MACs"

    def __init__(self, input_shape: Sequence[int] = (1, 3, 32, 32), verify: int = 3, seed: int = 0) -> None:
        super().__init__(verify=verify, seed=seed)
        self.input_shape = tuple(int(d) for d in input_shape)

    def _measure(self, model: Any) -> tuple[float, dict[str, float]]:
        with torch.no_grad():
            analysis = _analysis(model, torch.zeros(*self.input_shape))
            return int(analysis.total()), {k: int(v) for k, v in analysis.by_module().items()}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            counted="multiply-accumulates of conv/linear weights (no bias), BN (2/elt, eval), adaptive avg-pool "
            "and upsampling (1/elt); additions, ReLU and 'off' gates count 0",
            backend=f"fvcore {version('fvcore')}, torch {torch.__version__}",
            input_shape=list(self.input_shape),
        )
        return d


class ParamsCost(AdditiveCost):
    """Number of parameters of the pruned architecture: ``sum(p.numel() for p in frozen.parameters())``.

    Buffers (BN running statistics) are not parameters and are not counted. Exact integer, per-gate cached.
    """

    name = "params"
    unit = "parameters"

    def _measure(self, model: Any) -> tuple[float, dict[str, float]]:
        total = sum(p.numel() for p in model.parameters())
        per_path = {path: sum(p.numel() for p in m.parameters()) for path, m in model.named_modules()}
        return total, per_path

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            counted="numel of the parameters of the frozen pruned model (buffers excluded)",
            backend=f"torch {torch.__version__}",
        )
        return d
