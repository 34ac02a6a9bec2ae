"""Which gates of an architecture lie on an input -> output path (pruning).

A gated space describes itself as a DAG of nodes and edges; an edge is either always present
(``label=None``: a stem, an identity skip) or present when its gate is ``'on'``. A gate is *alive*
when it is on, its source is reachable from the input and its target reaches the output through
present edges. Everything else computes nothing that reaches the prediction.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from .ops import GATE_OFF, GATE_ON

__all__ = ["GateGraph"]


class GateGraph:
    """A DAG of nodes with gated edges; answers ``alive``, ``prune`` and ``is_connected`` in O(edges).

    Parameters
    ----------
    edges
        ``(source, target, label)`` triples, in an order where every edge's source is produced
        before the edge is used (a topological order of sources). ``label=None`` marks an edge that is
        always present.
    source, sink
        The input node and the output node.
    """

    def __init__(
        self, edges: Iterable[tuple[Hashable, Hashable, str | None]], source: Hashable, sink: Hashable
    ):
        edges = list(edges)
        nodes: dict[Hashable, int] = {source: 0}
        for s, t, _ in edges:
            if s not in nodes:
                raise ValueError(f"edge {s}->{t} uses node {s} before it is produced")
            nodes.setdefault(t, len(nodes))
        if sink not in nodes:
            raise ValueError(f"output node {sink} is not produced by any edge")
        self.nodes = nodes
        self.source, self.sink = nodes[source], nodes[sink]
        self.edges = [(nodes[s], nodes[t], label) for s, t, label in edges]
        self.labels = [label for _, _, label in self.edges if label is not None]
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("each gate label must appear on exactly one edge")

    def _present(self, arch: Mapping[str, Any]) -> list[bool]:
        try:
            return [label is None or arch[label] == GATE_ON for _, _, label in self.edges]
        except KeyError as e:
            raise KeyError(f"architecture has no value for gate {e.args[0]!r}") from None

    def _reach(self, present: list[bool]) -> tuple[list[bool], list[bool]]:
        n = len(self.nodes)
        fwd = [False] * n
        fwd[self.source] = True
        for (s, t, _), p in zip(self.edges, present):
            if p and fwd[s]:
                fwd[t] = True
        bwd = [False] * n
        bwd[self.sink] = True
        for (s, t, _), p in zip(reversed(self.edges), reversed(present)):
            if p and bwd[t]:
                bwd[s] = True
        return fwd, bwd

    def alive(self, arch: Mapping[str, Any]) -> set[str]:
        """Labels of the gates that are on and on some input -> output path."""
        present = self._present(arch)
        fwd, bwd = self._reach(present)
        return {
            label
            for (s, t, label), p in zip(self.edges, present)
            if label is not None and p and fwd[s] and bwd[t]
        }

    def alive_mask(self, arch: Mapping[str, Any]) -> list[bool]:
        """Alive flag of every gate, in ``self.labels`` order."""
        present = self._present(arch)
        fwd, bwd = self._reach(present)
        return [p and fwd[s] and bwd[t] for (s, t, label), p in zip(self.edges, present) if label is not None]

    def sensitive(self, arch: Mapping[str, Any]) -> set[str]:
        """Labels of the gates whose flip would change the pruned architecture.

        These are the alive gates, and the off gates whose source is reachable from the input and whose target
        reaches the output. Flipping any other gate (a dead 'on' gate, or an 'off' gate that would be dead) leaves
        ``prune(arch)`` and ``is_connected(arch)`` unchanged.
        """
        present = self._present(arch)
        fwd, bwd = self._reach(present)
        return {label for (s, t, label) in self.edges if label is not None and fwd[s] and bwd[t]}

    def prune(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """The architecture with every dead gate turned off (other labels are kept as they are)."""
        alive = self.alive(arch)
        out = dict(arch)
        for label in self.labels:
            out[label] = GATE_ON if label in alive else GATE_OFF
        return out

    def is_connected(self, arch: Mapping[str, Any]) -> bool:
        """Whether the input reaches the output."""
        fwd, _ = self._reach(self._present(arch))
        return fwd[self.sink]
