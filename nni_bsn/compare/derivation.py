"""The DARTS paper's derivation of a discrete architecture from architecture weights, on any NNI space.

NNI's DARTS family exports the argmax of every choice. On a binary gate (``{'off', 'on'}``) the zero candidate
wins almost everywhere (the known drift of DARTS towards parameter-free operations), and the exported fabric is
disconnected. Liu et al. (DARTS, ICLR 2019, section 2.4) derive the discrete cell differently: the zero
operation never wins, and each intermediate node keeps its ``k = 2`` strongest incoming edges, an edge's strength
being the largest weight of its non-zero operations. :func:`derive_darts` applies that rule:

- on a gate space (one whose ``graph`` lists the gated edges, as the fabrics do), each node keeps its ``k``
  strongest gated incoming edges, strength = the weight of ``'on'``; always-present edges stay; every other gate
  is off. Each node then has an input, so the architecture is always connected.
- every other choice takes the argmax over its candidates that are not a zero operation (``'off'``, ``'none'``,
  ``'zero'``), or the plain argmax when all of them are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from evaluators.blocks import GATE_OFF, GATE_ON

__all__ = ["ZERO_CANDIDATES", "derive_darts", "strongest"]

ZERO_CANDIDATES = (GATE_OFF, "none", "zero")

Weights = Mapping[Any, float]


def strongest(weights: Weights) -> Any:
    """The candidate with the largest weight among those that are not a zero operation."""
    live = {value: w for value, w in weights.items() if str(value).lower() not in ZERO_CANDIDATES}
    pool = live or weights
    return max(pool, key=lambda value: pool[value])


def _gated_inputs(graph: Any) -> dict[int, list[str]]:
    """Gate labels of each node's incoming gated edges."""
    inputs: dict[int, list[str]] = defaultdict(list)
    for _, target, label in graph.edges:
        if label is not None:
            inputs[target].append(label)
    return inputs


def derive_darts(probs: Mapping[str, Weights], graph: Any = None, k: int = 2) -> dict[str, Any]:
    """The architecture the DARTS paper derives from ``probs`` (``{label: {candidate: weight}}``).

    ``graph`` is the space's gate graph (``space.graph``), or None for a space without gates. ``k`` is the number
    of incoming edges each node keeps (the paper's 2).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    gates = set(graph.labels) if graph is not None else set()
    missing = gates - set(probs)
    if missing:
        raise KeyError(f"no architecture weights for gate(s) {sorted(missing)[:3]}")
    arch = {label: strongest(weights) for label, weights in probs.items() if label not in gates}
    arch.update({label: GATE_OFF for label in gates})
    for labels in _gated_inputs(graph).values() if graph is not None else ():
        ranked = sorted(labels, key=lambda label: probs[label][GATE_ON], reverse=True)
        arch.update({label: GATE_ON for label in ranked[:k]})
    return arch
