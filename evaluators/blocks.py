"""The blocks of a model space that a cost is made of: its choices, their module paths and their tensor shapes.

Everything here works on any NNI ``ModelSpace``; a *gate space* (one that offers ``prune`` and a ``graph`` that
answers ``live_edges`` and ``cheapest_path``, like the fabrics of ``search_spaces`` and their ``GateGraph``) is
recognised by duck typing, never by import: every evaluator reads pruning and cheapest paths from ``space.graph``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "GATE_ON",
    "GATE_OFF",
    "choice_modules",
    "choice_values",
    "is_gate_values",
    "is_gate_space",
    "random_arch",
    "all_gates",
    "block_shapes",
    "arch_key",
]

# NNI's binary-gate convention, LayerChoice({'off': ..., 'on': ...}); search_spaces/ops.py spells it again to build
# gates, because the two floors never import each other.
GATE_ON = "on"
GATE_OFF = "off"


def _layer_choice_type() -> type:
    from nni.nas.nn.pytorch import LayerChoice

    return LayerChoice


def choice_modules(space: nn.Module) -> dict[str, list[tuple[str, nn.Module]]]:
    """Every ``LayerChoice`` of ``space`` by label: ``{label: [(module path, LayerChoice), ...]}``.

    A label can hold several modules (NNI hub spaces repeat cells with shared labels).
    """
    layer_choice = _layer_choice_type()
    out: dict[str, list[tuple[str, nn.Module]]] = {}
    for path, module in space.named_modules():
        if isinstance(module, layer_choice):
            out.setdefault(module.label, []).append((path, module))
    return out


def choice_values(space: nn.Module) -> dict[str, list[Any]]:
    """The values of every mutable of ``space`` (``space.simplify()``), by label."""
    return {label: list(mutable.values) for label, mutable in space.simplify().items()}


# What the evaluators ask of ``space.graph`` (search_spaces.GateGraph answers them all).
_GRAPH_METHODS = ("labels", "edges", "nodes", "live_edges", "alive_mask", "cheapest_path")


def is_gate_values(values: Sequence[Any]) -> bool:
    """Whether the candidate values of a choice are those of a binary gate: ``'off'`` and ``'on'``, in any order."""
    return len(values) == 2 and GATE_OFF in values and GATE_ON in values


def is_gate_space(space: Any) -> bool:
    """Whether ``space`` is a gated fabric: it has ``prune`` and a ``graph`` whose labels are binary gates."""
    graph = getattr(space, "graph", None)
    if not (callable(getattr(space, "prune", None)) and all(hasattr(graph, m) for m in _GRAPH_METHODS)):
        return False
    try:
        values = choice_values(space)
    except Exception:  # a duck that is not an NNI space
        return False
    return set(values) == set(graph.labels) and all(map(is_gate_values, values.values()))


def all_gates(space: Any, value: str = GATE_ON) -> dict[str, str]:
    """The architecture of a gate space with every gate set to ``value``."""
    return {label: value for label in space.graph.labels}


def random_arch(space: Any, rng: random.Random, p_on: float | None = None) -> dict[str, Any]:
    """A random architecture: uniform over each mutable's values, or gates on with probability ``p_on``."""
    values = choice_values(space)
    if p_on is not None:
        return {label: GATE_ON if rng.random() < p_on else GATE_OFF for label in values}
    return {label: rng.choice(v) for label, v in values.items()}


def arch_key(arch: Mapping[str, Any]) -> tuple:
    """A hashable key for an architecture dict."""
    return tuple(
        sorted((k, v if isinstance(v, (str, int, float, bool)) else repr(v)) for k, v in arch.items())
    )


def block_shapes(
    model: nn.Module, paths: Sequence[str], inputs: torch.Tensor
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Input and output shape of each module at ``paths`` when ``model`` runs on ``inputs`` (first call wins)."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for path in paths:
        module = model.get_submodule(path)

        def hook(mod: nn.Module, args: tuple, out: Any, path: str = path) -> None:
            if (
                path not in shapes
                and args
                and isinstance(args[0], torch.Tensor)
                and isinstance(out, torch.Tensor)
            ):
                shapes[path] = (tuple(args[0].shape), tuple(out.shape))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(inputs)
    finally:
        for h in handles:
            h.remove()
    return shapes
