"""Which gates of an architecture lie on an input -> output path (pruning), and the cheapest such path.

A gated space describes itself as a DAG of nodes and edges; an edge is either always present
(``label=None``: a stem, an identity skip) or present when its gate is ``'on'``. An edge is *live*
when it is present, its source is reachable from the input and its target reaches the output through
present edges; a gate is *alive* when its edge is live. Everything else computes nothing that reaches
the prediction. This is the paper's accounting rule: every cost evaluator reads it from here.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import compress
from typing import Any

from .ops import GATE_OFF, GATE_ON

__all__ = ["GateGraph"]


class GateGraph:
    """A DAG of nodes with gated edges; answers ``live_edges``, ``prune`` and ``is_connected`` in O(edges).

    Parameters
    ----------
    edges
        ``(source, target, label)`` triples, in a topological order of their sources: every edge into a node
        comes before the edges out of it. ``label=None`` marks an edge that is always present.
    source, sink
        The input node and the output node.

    Nodes are numbered in ``nodes`` (``{node: index}``, the input node 0); ``edges`` holds ``(source index,
    target index, label)`` triples and ``labels`` the gate labels, both in the order given.
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
        self._is_gated = [label is not None for _, _, label in self.edges]

    # -- the one reachability sweep ------------------------------------------------------------------------------
    def _present(self, arch: Mapping[str, Any]) -> list[bool]:
        try:
            return [label is None or arch[label] == GATE_ON for _, _, label in self.edges]
        except KeyError as e:
            raise KeyError(f"architecture has no value for gate {e.args[0]!r}") from None

    def _reach(self, present: list[bool]) -> tuple[list[bool], list[bool]]:
        """Nodes reachable from the input, and nodes that reach the output, through present edges."""
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

    def live_edges(self, arch: Mapping[str, Any]) -> list[bool]:
        """Live flag of every edge (gated or not), in ``self.edges`` order: present and on an input -> output path.

        The input reaches the output exactly when some edge is live.
        """
        present = self._present(arch)
        fwd, bwd = self._reach(present)
        return [p and fwd[s] and bwd[t] for (s, t, _), p in zip(self.edges, present)]

    # -- what follows from it ---------------------------------------------------------------------------------------
    def alive_mask(self, arch: Mapping[str, Any]) -> list[bool]:
        """Alive flag of every gate, in ``self.labels`` order."""
        return list(compress(self.live_edges(arch), self._is_gated))

    def alive(self, arch: Mapping[str, Any]) -> set[str]:
        """Labels of the gates that are on and on some input -> output path."""
        return set(compress(self.labels, self.alive_mask(arch)))

    def sensitive(self, arch: Mapping[str, Any]) -> set[str]:
        """Labels of the gates whose flip would change the pruned architecture.

        These are the alive gates, and the off gates whose source is reachable from the input and whose target
        reaches the output. Flipping any other gate (a dead 'on' gate, or an 'off' gate that would be dead) leaves
        ``prune(arch)`` and ``is_connected(arch)`` unchanged.
        """
        fwd, bwd = self._reach(self._present(arch))
        return {label for (s, t, label) in self.edges if label is not None and fwd[s] and bwd[t]}

    def prune(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """The architecture with every dead gate turned off (other labels are kept as they are)."""
        out = dict(arch)
        for label, alive in zip(self.labels, self.alive_mask(arch)):
            out[label] = GATE_ON if alive else GATE_OFF
        return out

    def is_connected(self, arch: Mapping[str, Any]) -> bool:
        """Whether the input reaches the output."""
        fwd, _ = self._reach(self._present(arch))
        return fwd[self.sink]

    # -- the lightest path through each absent gate ----------------------------------------------------------------
    def paths_through(
        self, arch: Mapping[str, Any], weight: Mapping[str, float]
    ) -> dict[str, tuple[str, ...]]:
        """For each gate that is off and could be made live: the off gates (itself first) of the lightest input ->
        output path through its edge, where a present edge weighs nothing and an absent one ``weight[label]``
        (``-log`` of a keep-probability: the most probable path). Two sweeps serve every gate."""
        present = self._present(arch)
        w = [0.0 if p else weight[label] for (_, _, label), p in zip(self.edges, present)]
        to, via_to = self._lightest(w, from_sink=False)
        on, via_on = self._lightest(w, from_sink=True)
        out = {}
        for (s, t, label), p in zip(self.edges, present):
            if label is not None and not p and math.isfinite(to[s] + on[t]):
                out[label] = (label, *self._absent(via_to, s, present), *self._absent(via_on, t, present))
        return out

    def _lightest(
        self, w: list[float], from_sink: bool, node_cost: Sequence[float] | None = None
    ) -> tuple[list[float], list[int | None]]:
        """The lightest distance of every node from the input (or to the output, ``from_sink``) and the edge it
        comes by: edge ``i`` weighs ``w[i]``, every node reached adds ``node_cost`` (the first one included). Edges
        come in a topological order of their sources, so one relaxation sweep (reversed for the output) is a DAG
        shortest path; of equal distances the first found wins."""
        node = node_cost if node_cost is not None else [0.0] * len(self.nodes)
        dist: list[float] = [math.inf] * len(self.nodes)
        via: list[int | None] = [None] * len(self.nodes)
        start = self.sink if from_sink else self.source
        dist[start] = node[start]
        order = range(len(self.edges) - 1, -1, -1) if from_sink else range(len(self.edges))
        for i in order:
            s, t, _ = self.edges[i]
            a, b = (t, s) if from_sink else (s, t)
            if (d := dist[a] + w[i] + node[b]) < dist[b]:
                dist[b], via[b] = d, i
        return dist, via

    def _absent(self, via: list[int | None], node: int, present: list[bool]) -> list[str]:
        """The labels of the absent edges on the walk ``via`` gives from ``node`` (to the input or the output)."""
        labels = []
        while (i := via[node]) is not None:
            s, t, label = self.edges[i]
            if not present[i]:
                labels.append(label)
            node = s if node == t else t
        return labels

    # -- the cheapest path --------------------------------------------------------------------------------------------
    def cheapest_path(
        self, gate_cost: Mapping[str, float], node_cost: Sequence[float] | None = None
    ) -> tuple[float, dict[str, str]]:
        """The cheapest input -> output path: its cost, and the architecture with only its gates on.

        A gated edge costs ``gate_cost[label]``, an ungated edge nothing; with ``node_cost`` (by node index,
        ``self.nodes``) every node on the path adds its cost too, the input node included. Of paths that cost
        the same, the one found first in edge order wins. The architecture is connected and already pruned.
        """
        w = [0.0 if label is None else gate_cost[label] for _, _, label in self.edges]
        dist, via = self._lightest(w, from_sink=False, node_cost=node_cost)
        ungated = [label is None for _, _, label in self.edges]  # the walk's gated edges are the path's gates
        on = self._absent(via, self.sink, present=ungated)
        arch = {label: GATE_ON if label in on else GATE_OFF for label in self.labels}
        return dist[self.sink], arch
