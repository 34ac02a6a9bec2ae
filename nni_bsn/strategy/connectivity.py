"""Whether an architecture's input reaches its output, for the search, the random baseline and compare: the
space's own ``is_connected`` (the fabrics'), else a structural check of the cells NNI builds out of zero-able
edges (NasBench201's, where the ``'none'`` candidate is a zero: a cell whose output node no path of other
operations reaches ignores its input). A microsecond check, so BSN can charge such architectures every step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["space_connectivity"]


@dataclass(frozen=True)
class _Edge:
    source: int
    target: int
    label: str
    zeros: frozenset[str]  # the candidates that output zeros


def _cell_edges(cell) -> tuple[_Edge, ...]:
    """The edges of a NasBench201 cell: node ``tid`` sums one choice per earlier node ``j``."""
    from nni.nas.hub.pytorch.nasbench201 import Zero

    edges = []
    for tid, node_ops in enumerate(cell.layers, start=1):
        for j, choice in enumerate(node_ops):
            zeros = frozenset(name for name in choice.names if isinstance(choice[name], Zero))
            edges.append(_Edge(j, tid, choice.label, zeros))
    return tuple(edges)


def _cell_connected(edges: tuple[_Edge, ...], arch: dict[str, Any]) -> bool:
    reached = {0}
    for edge in edges:  # in order of the target node: every source comes before
        if edge.source in reached and arch.get(edge.label) not in edge.zeros:
            reached.add(edge.target)
    return max(e.target for e in edges) in reached


def space_connectivity(space) -> Callable[[dict[str, Any]], bool] | None:
    """The check that an architecture of ``space`` connects its input to its output, or None if none is known."""
    own = getattr(space, "is_connected", None)
    if own is not None:
        return own
    from nni.nas.hub.pytorch.nasbench201 import NasBench201Cell

    cells = {_cell_edges(m) for m in space.modules() if isinstance(m, NasBench201Cell)}
    if not cells:
        return None
    return lambda arch: all(_cell_connected(edges, arch) for edges in cells)
