"""Derived labels: quantities of an architecture that are functions of a group of choices, not of one.

An NNI ``Cell`` shows why a cost needs them. fvcore counts only what reaches the output, so a cell's preprocessor
of its k-th predecessor counts only when some node of the cell takes that predecessor as input; with
``merge_op='loose_end'`` the cell's output width (and so the next cells' preprocessors and the classifier) is the
number of nodes no other node takes as input. Both are functions of all the cell's InputChoice values jointly,
through one quantity: the set of states the cell's nodes read. A :class:`DerivedLabels` names such quantities; the
label tables (``label_tables.py``) key their tables on them like on any label, and find the extremes exactly by
dynamic programming over that set (a bitmask), whose states are few.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DerivedLabels", "cell_derived_labels", "cell_pairs", "cell_priors"]


@dataclass(frozen=True)
class DerivedLabels:
    """Labels ``names`` computed from the union of bitmasks contributed by source choices.

    ``bits[label][value]`` is what the (hashable) value of a source label adds to the union; ``derive(union)`` is
    the tuple of derived values, one per name.
    """

    names: tuple[str, ...]
    bits: Mapping[str, Mapping[Any, int]]
    derive: Callable[[int], tuple]

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.bits)

    def values(self, arch: Mapping[str, Any]) -> tuple:
        """The derived values of an architecture (hashable values)."""
        union = 0
        for label, bits in self.bits.items():
            union |= bits[arch[label]]
        return self.derive(union)

    def unions(
        self,
        score: Callable[[str, Any], float] | None = None,
        allowed: Mapping[str, Collection[Any]] | None = None,
    ) -> dict[int, tuple[float, dict[str, Any]]]:
        """Every reachable union, with the largest summed ``score(label, value)`` reaching it and source values that
        do; a source in ``allowed`` takes only those values. A dynamic programme over the sources."""
        states: dict[int, tuple[float, dict[str, Any]]] = {0: (0.0, {})}
        for label, bits in self.bits.items():
            choices = [v for v in bits if v in allowed[label]] if allowed and label in allowed else list(bits)
            new: dict[int, tuple[float, dict[str, Any]]] = {}
            for union, (value, chosen) in states.items():
                for v in choices:
                    s = value + (score(label, v) if score is not None else 0.0)
                    u = union | bits[v]
                    if u not in new or s > new[u][0]:
                        new[u] = (s, {**chosen, label: v})
            states = new
        return states

    def domains(self) -> dict[str, list[Any]]:
        """The values each derived label takes over every architecture."""
        seen = [self.derive(u) for u in self.unions()]
        return {name: sorted({d[i] for d in seen}) for i, name in enumerate(self.names)}

    def realize(
        self, allowed: Mapping[str, Collection[Any]], wanted: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Source values within ``allowed`` whose derived values agree with ``wanted``, or ``None``."""
        for union, (_, chosen) in self.unions(allowed=allowed).items():
            d = dict(zip(self.names, self.derive(union)))
            if all(d[n] == v for n, v in wanted.items()):
                return chosen
        return None


def _cells(space: Any) -> Iterable[tuple[str, Any]]:
    from nni.nas.nn.pytorch import Cell

    seen = set()
    for path, module in space.named_modules():
        if isinstance(module, Cell) and module.label not in seen:
            seen.add(module.label)  # cells sharing a label share their choices (e.g. DARTS's 'normal' cells)
            yield path, module


def cell_priors(space: Any) -> dict[str, list[str]]:
    """Per module path of ``space`` inside a Cell, the labels besides its own mutables that its count likely depends
    on: an operator's input choice (its stride may follow it), whether the cell's outputs are read, a
    preprocessor's use by the cell's nodes and the previous cells' widths (their loose ends)."""
    from nni.nas.nn.pytorch import Cell

    cells = [(path, m) for path, m in space.named_modules() if isinstance(m, Cell)]
    widths = [f"{m.label}/loose_ends" for _, m in _cells(space) if m.merge_op == "loose_end"]
    # fvcore drops what does not reach the output: a whole cell when the cells after it read none of its outputs
    reads = [f"{m.label}/reads_predecessor_{k}" for _, m in _cells(space) for k in range(m.num_predecessors)]
    out: dict[str, list[str]] = {}
    for path, cell in cells:
        prefix = f"{path}." if path else ""
        out[path] = reads + widths
        own = [f"{cell.label}/reads_predecessor_{k}" for k in range(cell.num_predecessors)]
        for j, row in enumerate(cell.inputs):
            for k, inp in enumerate(row):
                label = getattr(inp, "label", None)
                if label is not None:  # whether the cell is used at all comes before the exact input
                    out[f"{prefix}ops.{j}.{k}"] = [f"{label}/reads_predecessor", *own, label]
        for k in range(cell.num_predecessors):
            out[f"{prefix}preprocessor.pre{k}"] = [f"{cell.label}/reads_predecessor_{k}", *widths]
    return out


def cell_derived_labels(space: Any, grid: Mapping[str, Sequence[Any]]) -> list[DerivedLabels]:
    """The derived labels of each ``Cell`` of ``space`` (see the module docstring), plus, per InputChoice of a cell,
    whether it reads a predecessor of the cell (the operator's stride depends on it in reduction cells).

    Per cell labelled ``L``: ``L/reads_predecessor_k`` (some node takes predecessor ``k``) and, for loose-end cells,
    ``L/loose_ends`` (how many nodes are concatenated into the output).
    """
    out = []
    for _, cell in _cells(space):
        n_pred, n_nodes = cell.num_predecessors, cell.num_nodes
        inputs = [inp.label for row in cell.inputs for inp in row if getattr(inp, "label", None) in grid]
        if not inputs:
            continue
        bits = {label: {tuple(v): sum(1 << i for i in v) for v in grid[label]} for label in inputs}
        pred_mask = (1 << n_pred) - 1
        node_mask = ((1 << (n_pred + n_nodes)) - 1) & ~pred_mask
        names = tuple(f"{cell.label}/reads_predecessor_{k}" for k in range(n_pred))
        loose = cell.merge_op == "loose_end"
        if loose:
            names += (f"{cell.label}/loose_ends",)

        def derive(u: int, n_pred: int = n_pred, loose: bool = loose, node_mask: int = node_mask) -> tuple:
            reads = tuple(bool(u >> k & 1) for k in range(n_pred))
            return reads + ((bin(node_mask & ~u).count("1"),) if loose else ())

        out.append(DerivedLabels(names, bits, derive))
        for label in inputs:
            out.append(
                DerivedLabels(
                    (f"{label}/reads_predecessor",),
                    {label: bits[label]},
                    lambda u, m=pred_mask: (bool(u & m),),
                )
            )
    return out


def cell_pairs(space: Any) -> list[tuple[str, str]]:
    """Per operator of a Cell, its label with whether its input is a predecessor: a count that exists for one
    value of each (a stride-2 skip connection of a reduction cell) must be seen to be found."""
    out = []
    for _, cell in _cells(space):
        for ops, inputs in zip(cell.ops, cell.inputs):
            for op, inp in zip(ops, inputs):
                if hasattr(op, "label") and hasattr(inp, "label"):
                    out.append((op.label, f"{inp.label}/reads_predecessor"))
    return out
