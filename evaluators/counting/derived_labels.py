"""Derived labels: quantities of an architecture that are functions of a group of choices, not of one.

An NNI ``Cell`` shows why a cost needs them. fvcore counts only what reaches the output, so a cell's preprocessor
of its k-th predecessor counts only when some node of the cell takes that predecessor as input; with
``merge_op='loose_end'`` the cell's output width (and so the next cells' preprocessors and the classifier) is the
number of nodes no other node takes as input. Both are functions of all the cell's InputChoice values jointly,
through one quantity: the set of states the cell's nodes read. In NNI's NDS spaces a whole cell is dropped when
the cells after it read none of its outputs: ``<cell path>/live``, a function of every cell's reads. A Repeat's
block exists only for some depths: ``<block path>/exists``. A :class:`DerivedLabels` names such quantities; the
label tables (``label_tables.py``) key their tables on them like on any label (``live`` and ``exists`` as masks:
a module counts 0 where they are False), and find the extremes exactly by dynamic programming over that set (a
bitmask), whose states are few.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DerivedLabels",
    "cell_derived_labels",
    "cell_pairs",
    "cell_priors",
    "cell_structure",
    "repeat_blocks",
    "repeat_derived_labels",
]


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
    chained = _chained_cells(space) is not None
    out: dict[str, list[str]] = {}
    for path, cell in cells:
        prefix = f"{path}." if path else ""
        live = [f"{path}{LIVE}"] if chained else []
        out[path] = live + reads + widths
        own = [f"{cell.label}/reads_predecessor_{k}" for k in range(cell.num_predecessors)]
        for j, row in enumerate(cell.inputs):
            for k, inp in enumerate(row):
                label = getattr(inp, "label", None)
                if label is not None:  # whether the cell is used at all comes before the exact input
                    out[f"{prefix}ops.{j}.{k}"] = [f"{label}/reads_predecessor", *live, *own, label]
        for k in range(cell.num_predecessors):
            out[f"{prefix}preprocessor.pre{k}"] = [f"{cell.label}/reads_predecessor_{k}", *live, *widths]
    return out


LIVE = "/live"  # the derived label ``<cell path>/live``: whether the cell's output reaches the classifier


def _chained_cells(space: Any) -> list[tuple[str, Any]] | None:
    """The cells of an NNI NDS space (DARTS, ENAS, NASNet, AmoebaNet, PNAS) in order, or ``None``: there each cell
    reads the outputs of the two cells before it (the stem's for the first two) and the classifier reads the
    last one's, so which cells reach the output is known from the cells' reads alone."""
    from nni.nas.hub.pytorch.nasnet import NDS
    from nni.nas.nn.pytorch import Cell

    if not isinstance(space, NDS):
        return None
    cells = [(path, m) for path, m in space.named_modules() if isinstance(m, Cell)]
    return cells if cells and all(m.num_predecessors == 2 for _, m in cells) else None


def cell_structure(space: Any) -> dict[str, tuple[str, ...]]:
    """Per space path of an operator or a preprocessor of a chained cell (:func:`_chained_cells`), the labels its
    count is a function of, read from the structure rather than found from samples (a rare joint value, such as
    no later cell reading this one, would be missed by the search): an operator, its own label, whether its input
    is a predecessor (its stride in a reduction cell) and whether the cell is live; a preprocessor of predecessor
    ``k``, whether the cell reads ``k``, whether the cell is live and the width of the cell ``k`` feeds from."""
    cells = _chained_cells(space) or []
    out: dict[str, tuple[str, ...]] = {}
    for i, (path, cell) in enumerate(cells):
        live = f"{path}{LIVE}"
        for j, (ops, inputs) in enumerate(zip(cell.ops, cell.inputs)):
            for k, (op, inp) in enumerate(zip(ops, inputs)):
                if hasattr(op, "label") and hasattr(inp, "label"):
                    out[f"{path}.ops.{j}.{k}"] = (op.label, f"{inp.label}/reads_predecessor", live)
        for k in range(2):
            feeder = i - 2 + k  # predecessor 0 is the cell two before, 1 the one before; the stem below 0
            loose = feeder >= 0 and cells[feeder][1].merge_op == "loose_end"
            width = (f"{cells[feeder][1].label}/loose_ends",) if loose else ()
            out[f"{path}.preprocessor.pre{k}"] = (f"{cell.label}/reads_predecessor_{k}", live, *width)
    return out


def _liveness_labels(
    cells: Sequence[tuple[str, Any]], grid: Mapping[str, Sequence[Any]]
) -> DerivedLabels | None:
    """``<path>/live`` of each chained cell (:func:`_chained_cells`), from whether each cell label's nodes read
    predecessor 0 or 1: the last cell is live; cell ``i`` is when cell ``i + 1`` is live and reads predecessor 1,
    or cell ``i + 2`` is live and reads predecessor 0."""
    labels = list(dict.fromkeys(m.label for _, m in cells))
    bits: dict[str, dict[Any, int]] = {}
    for _, cell in cells:
        at = 2 * labels.index(cell.label)
        for inp in (inp for row in cell.inputs for inp in row):
            if getattr(inp, "label", None) in grid:
                bits[inp.label] = {tuple(v): sum(1 << (at + k) for k in v if k < 2) for v in grid[inp.label]}
    if not bits:
        return None
    order = [2 * labels.index(m.label) for _, m in cells]

    def derive(u: int) -> tuple:
        live = [False] * len(order)
        for i in reversed(range(len(order))):
            nxt = [(i + 1, 1), (i + 2, 0)]
            live[i] = i == len(order) - 1 or any(
                j < len(order) and live[j] and u >> (order[j] + k) & 1 for j, k in nxt
            )
        return tuple(live)

    return DerivedLabels(tuple(f"{path}{LIVE}" for path, _ in cells), bits, derive)


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
    chained = _chained_cells(space)
    live = _liveness_labels(chained, grid) if chained is not None else None
    return out if live is None else [*out, live]


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


EXISTS = (
    "/exists"  # the derived label ``<block path>/exists``: whether a Repeat's block is in the architecture
)


def repeat_blocks(space: Any, grid: Mapping[str, Sequence[Any]]) -> dict[str, str]:
    """Per space path of a ``Repeat`` block that some depth leaves out, the label ``<block path>/exists``."""
    return {path: f"{path}{EXISTS}" for path, _, _ in _optional_blocks(space, grid)}


def _optional_blocks(space: Any, grid: Mapping[str, Sequence[Any]]) -> Iterable[tuple[str, str, int]]:
    """``(block path, depth label, block index)`` of every Repeat block that some depth of a plain depth choice
    (``nni.choice`` or a range) leaves out."""
    from nni.mutable import Categorical
    from nni.nas.nn.pytorch import Repeat

    for path, module in space.named_modules():
        depth = getattr(module, "depth_choice", None) if isinstance(module, Repeat) else None
        if isinstance(depth, Categorical) and depth.label in grid:
            prefix = f"{path}.blocks." if path else "blocks."
            for i in range(min(grid[depth.label]), len(module.blocks)):
                yield f"{prefix}{i}", depth.label, i


def repeat_derived_labels(space: Any, grid: Mapping[str, Sequence[Any]]) -> list[DerivedLabels]:
    """Per ``Repeat`` with a depth choice, whether each block some depth leaves out is in the architecture
    (``<block path>/exists``, from the depth): a block's modules count only where it exists, which a table keyed
    on this label rather than on the depth says in half the entries or fewer."""
    by_depth: dict[str, list[tuple[str, int]]] = {}
    for path, label, i in _optional_blocks(space, grid):
        by_depth.setdefault(label, []).append((path, i))
    out = []
    for label, blocks in by_depth.items():
        index = [i for _, i in blocks]
        bits = {d: (1 << d) - 1 for d in grid[label]}  # depth d keeps blocks 0 .. d-1

        def derive(u: int, index: list[int] = index) -> tuple:
            return tuple(bool(u >> i & 1) for i in index)

        out.append(DerivedLabels(tuple(f"{p}{EXISTS}" for p, _ in blocks), {label: bits}, derive))
    return out
