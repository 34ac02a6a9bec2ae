"""Filling an architecture towards its budget: gates switched on while every budget holds, one at a time or, on a
space that describes its gates as a graph (``GateGraph``), each with the most probable path through it, so that
what is added is live. Used by ``select='filled'`` (:func:`~nni_bsn.strategy.selection.fill_to_budget`) and by the
candidates of ``select='supernet'`` (:class:`~nni_bsn.strategy.evolution.Candidates`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from evaluators.blocks import GATE_OFF, GATE_ON

__all__ = ["fill_most_probable", "switch_on"]

Arch = dict[str, Any]


def switch_on(
    arch: Arch,
    gates: Iterable[str],
    fits: Callable[[Arch], bool],
    paths: Callable[[Arch], dict[str, tuple[str, ...]]] | None = None,
) -> Arch:
    """``arch`` with each gate of ``gates`` that is off switched on, in that order, where the result still ``fits``
    (the fill of a candidate and of ``select='filled'``; not pruned: a dead gate may be made live by a later one).
    With ``paths`` (``arch -> {gate: the off gates of a path through it}``, ``GateGraph.paths_through``) each gate
    comes with the rest of its path, so that it is live when added and whole paths fill the budget."""
    options = paths(arch) if paths is not None else None
    for g in gates:
        if arch.get(g) != GATE_OFF or (options is not None and g not in options):
            continue
        added = options[g] if options is not None else (g,)
        if fits(trial := {**arch, **dict.fromkeys(added, GATE_ON)}):
            arch = trial
            options = paths(arch) if paths is not None else None
    return arch


def fill_most_probable(
    arch: Arch, probs: dict[str, float], fits: Callable[[Arch], bool], graph: Any = None
) -> Arch:
    """``arch`` filled with the gates of ``probs`` (keep-probabilities), the most probable first, where the result
    ``fits``; with ``graph``, each with the most probable path through it (its gates weigh ``-log p``)."""
    weight = {g: -math.log(max(p, 1e-12)) for g, p in probs.items()}
    paths = (lambda a: graph.paths_through(a, weight)) if hasattr(graph, "paths_through") else None
    return switch_on(arch, sorted(probs, key=probs.get, reverse=True), fits, paths)
