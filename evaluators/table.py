"""Costs read from a table measured once at bind: a fixed part plus one entry per chosen candidate.

``TableCost`` is what every such cost shares: the table, the exact memoised fallback for spaces the table cannot
describe, and, on a gate space, the per-gate entries and the cheapest-path lower bound read from ``space.graph``.
``AdditiveCost`` fills the table by reading a count per module path on a few frozen architectures (MACs,
parameters); ``LatencyCost`` (``latency.py``) fills it with ONNX Runtime measurements and adds node entries.
"""

from __future__ import annotations

import logging
import random
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from evaluators.base import Arch, CostEvaluator
from evaluators.blocks import GATE_OFF, GATE_ON, arch_key, choice_modules, choice_values, is_gate_space

__all__ = ["TableCost", "AdditiveCost"]

_log = logging.getLogger(__name__)


class TableCost(CostEvaluator):
    """A cost that is ``fixed`` plus table entries ``table[label][value]`` measured at bind, or measured exactly.

    ``mode`` says which: ``'additive'`` when bind filled the table (on a gate space, every gate has an ``'on'``
    and an ``'off'`` entry), ``'exact'`` when it could not: then ``cost(arch)`` freezes ``space.prune(arch)`` and
    measures it with ``_exact(model)``, memoised by architecture (the first call of each architecture is slow),
    and ``expected_cost`` and ``min_cost`` are not available.

    Subclasses implement ``_exact(model)`` and a ``_bind`` that starts with ``_reset(space)``, fills ``table`` and
    ``fixed``, and calls ``_use_gates(space.graph)`` once the gate table is complete.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mode: str = "unbound"
        self._gated = False

    @abstractmethod
    def _exact(self, model: Any) -> float:
        """Total cost of a frozen model."""

    # binding ----------------------------------------------------------------------------------------------------
    def _reset(self, space: Any) -> None:
        """An empty table in exact mode, before bind fills it."""
        self._prune: Callable[[Arch], dict] | None = getattr(space, "prune", None)
        self._memo: dict[tuple, float] = {}
        self.table: dict[str, dict[Any, float]] = {}
        self.fixed: float = 0.0
        self.mode = "exact"
        self._gated = False

    def _use_gates(self, graph: Any) -> None:
        """Answer from the gate table from now on (``graph`` is ``space.graph``)."""
        self._graph = graph
        self._gated = True
        self.mode = "additive"

    # queries -----------------------------------------------------------------------------------------------------
    def _exact_cost(self, arch: Arch) -> float:
        """Measured cost of ``space.freeze(space.prune(arch))``, memoised by architecture."""
        self._require_bound()
        if self._prune is not None:
            arch = self._prune(arch)
        key = arch_key(arch)
        if key not in self._memo:
            self._memo[key] = float(self._exact(self.space.freeze(dict(arch))))
        return self._memo[key]

    def full_cost(self) -> float:
        """Cost with every gate on; on other spaces, with every choice at its most expensive candidate."""
        self._require_bound()
        if is_gate_space(self.space):
            return super().full_cost()
        arch = {
            label: max(v) if all(isinstance(x, (int, float)) for x in v) else v[-1]
            for label, v in choice_values(self.space).items()
        }
        return self.cost(arch)

    def min_cost(self) -> float | None:
        """Cheapest connected architecture: ``fixed`` plus the cheapest input -> output path of the gate graph,
        with each gate weighing its on-entry minus its off-entry (gate table only, else ``None``)."""
        self._require_bound()
        if not self._gated:
            return None
        return self._cheapest()[0]

    def min_arch(self) -> dict[str, Any] | None:
        """The cheapest connected architecture (its cost is ``min_cost()``): a shortest input -> output path of the
        gate graph, only its gates on (gate table only, else ``None``)."""
        self._require_bound()
        return self._cheapest()[1] if self._gated else None

    def _cheapest(self) -> tuple[float, dict[str, Any]]:
        graph, table = self._graph, self.table
        off = sum(table[label][GATE_OFF] for label in graph.labels)
        dist, arch = graph.cheapest_path(
            {label: table[label][GATE_ON] - table[label][GATE_OFF] for label in table}
        )
        return float(self.fixed + off + dist), arch

    def per_gate(self) -> dict[str, float]:
        """Cost of each gate when on (gate table only, else empty)."""
        self._require_bound()
        return {label: self.table[label][GATE_ON] for label in self.table} if self._gated else {}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(mode=self.mode, pruned=self.is_bound and getattr(self, "_prune", None) is not None)
        if self.is_bound and self.mode == "additive":
            d["fixed"] = self.fixed
        return d


class AdditiveCost(TableCost):
    """A cost that is a fixed part plus one contribution per chosen candidate, read per module path at bind.

    Subclasses implement ``_measure(model)`` -> ``(total, {module path: cost})`` on a frozen model (and
    ``_exact(model)`` -> total when it can be counted more cheaply than by ``_measure``).

    How ``bind`` decomposes the space: when every mutable is a ``LayerChoice``, a few architectures are frozen
    (architecture ``k`` takes the ``k``-th candidate of every choice), each candidate's cost is read at its
    choice's module path(s) and the fixed part is what is left; the decomposition must give the same fixed part
    for every frozen architecture and predict ``verify`` random (pruned) architectures exactly. Otherwise the
    evaluator falls back to the *exact* mode of ``TableCost``.

    On a gate space, ``cost(arch)`` is ``fixed + sum(on-cost of alive gates) + sum(off-cost of the others)``
    with the alive mask of ``space.graph``: no trace, no freeze, tens of microseconds.
    """

    def __init__(self, verify: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.verify, self.seed = verify, seed

    # subclasses -----------------------------------------------------------------------------------------------
    @abstractmethod
    def _measure(self, model: Any) -> tuple[float, dict[str, float]]:
        """``(total, {module path: cost of that module})`` of a frozen model."""

    def _exact(self, model: Any) -> float:
        return self._measure(model)[0]

    # binding ----------------------------------------------------------------------------------------------------
    def _bind(self, space: Any) -> None:
        self._reset(space)
        self._labels = frozenset(space.simplify())
        values = choice_values(space)
        modules = choice_modules(space)
        if values and set(values) == set(modules) and self._decompose_checked(space, values, modules):
            self.mode = "additive"
        else:
            _log.info(
                "%s: space is not additive over LayerChoices; counting each architecture exactly (memoised)",
                type(self).__name__,
            )
        if self.mode == "additive" and is_gate_space(space):
            graph = space.graph
            self._use_gates(graph)
            self._on = [self.table[label][GATE_ON] for label in graph.labels]
            self._off = [self.table[label][GATE_OFF] for label in graph.labels]
            self._off_zero = not any(self._off)

    def _decompose_checked(self, space: Any, values: dict[str, list], modules: dict[str, list]) -> bool:
        """:meth:`_decompose`; an input that the space cannot run is a ``ValueError`` naming ``input_shape``."""
        try:
            return self._decompose(space, values, modules)
        except (RuntimeError, ValueError, IndexError) as e:
            shape = getattr(self, "input_shape", None)
            if shape is None:
                raise
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"{type(self).__name__}: input_shape={tuple(shape)} does not fit this space ({first_line}); "
                "give the shape of one input batch the space takes, e.g. (1, in_channels, size, size)"
            ) from None

    def _decompose(self, space: Any, values: dict[str, list], modules: dict[str, list]) -> bool:
        k_max = max(len(v) for v in values.values())
        fixed: list[float] = []
        for k in range(k_max):
            arch = {label: v[k % len(v)] for label, v in values.items()}
            total, per_path = self._measure(space.freeze(arch))
            chosen = 0.0
            for label, mods in modules.items():
                c = sum(per_path.get(path, 0) for path, _ in mods)
                if self.table.setdefault(label, {}).setdefault(arch[label], c) != c:
                    return False
                chosen += c
            fixed.append(total - chosen)
        if any(f != fixed[0] for f in fixed):
            return False
        self.fixed = fixed[0]
        rng = random.Random(self.seed)
        for _ in range(self.verify):
            arch = {label: rng.choice(v) for label, v in values.items()}
            if self._prune is not None:
                arch = self._prune(arch)
            if self._additive(arch) != self._exact(space.freeze(arch)):
                self.table = {}
                return False
        return True

    def _additive(self, arch: Arch) -> float:
        return self.fixed + sum(
            self.table[label][value] for label, value in arch.items() if label in self.table
        )

    # queries -----------------------------------------------------------------------------------------------------
    def cost(self, arch: Arch) -> float:
        """Cost of ``arch`` counted on ``space.prune(arch)`` (see the class docstring for how)."""
        self._require_bound()
        if len(arch) > len(self._labels):  # cheap on the hot path: only an oversized dict is checked
            unknown = sorted(map(str, set(arch) - self._labels))
            raise KeyError(
                f"{type(self).__name__}: architecture has labels this space does not have: {unknown[:5]}"
            )
        if self._gated:
            mask = self._graph.alive_mask(arch)
            total = self.fixed + sum(c for c, alive in zip(self._on, mask) if alive)
            if not self._off_zero:
                total += sum(c for c, alive in zip(self._off, mask) if not alive)
            return float(total)
        if self.mode != "additive":
            return self._exact_cost(arch)
        self._require_bound()
        if self._prune is not None:
            arch = self._prune(arch)
        return float(self._additive(arch))

    def expected_cost(self, probabilities: Mapping[str, Mapping[Any, Any]]) -> Any:
        """``fixed + sum_label sum_value p(value) * cost(value)``; works with floats or torch tensors.

        On a gate space this is the expected cost of the *sampled* (unpruned) architecture, an upper bound of
        the expected pruned cost (pruning only removes non-negative contributions); the exact expectation of
        the pruned cost is a network-reliability sum with no closed form.
        """
        self._require_bound()
        if self.mode != "additive":
            return super().expected_cost(probabilities)
        total: Any = self.fixed
        for label, costs in self.table.items():
            if label not in probabilities:
                raise KeyError(f"expected_cost: no probabilities for choice {label!r}")
            for value, p in probabilities[label].items():
                total = total + p * costs[value]
        return total

    def full_cost(self) -> float:
        """Cost with every gate on; on other spaces, with every choice at its most expensive candidate."""
        self._require_bound()
        if self.mode == "additive" and not is_gate_space(self.space):
            return float(self.fixed + sum(max(c.values()) for c in self.table.values()))
        return super().full_cost()

    def min_cost(self) -> float | None:
        """Cheapest connected architecture: a shortest input -> output path of the gate graph (gate spaces), or
        every choice at its cheapest candidate (other additive spaces); ``None`` in exact mode."""
        self._require_bound()
        if self.mode == "additive" and not self._gated:
            return float(self.fixed + sum(min(c.values()) for c in self.table.values()))
        return super().min_cost()
