"""The cost-evaluator protocol, pruning-aware additive sums, user callables and composites.

A cost evaluator is built with its options, bound once to a raw (unmutated) NNI model space with
``bind(space)`` -- which returns a new, bound evaluator and leaves the unbound one reusable -- and then
answers ``cost(arch)`` for architecture dicts, every training step. Everything expensive (tracing, export,
timing) happens in ``bind``; ``cost`` is a masked sum or a small schedule.

Costs are counted on the *pruned* architecture when the space offers ``prune(arch)``: a gate that lies on no
input -> output path computes nothing that reaches the prediction and costs nothing.
"""

from __future__ import annotations

import copy
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .blocks import GATE_OFF, GATE_ON, arch_key, choice_modules, choice_values, is_gate_space

__all__ = ["CostEvaluator", "AdditiveCost", "CallableCost", "CompositeCost", "as_evaluator"]

_log = logging.getLogger(__name__)

Arch = Mapping[str, Any]


class CostEvaluator(ABC):
    """What an architecture of an NNI model space costs.

    Subclasses set ``name`` and ``unit`` and implement ``_bind`` (measure once) and ``cost``.

    Protocol
    --------
    ``bind(space)``
        A new evaluator bound to the raw model space (this one stays unbound and reusable).
    ``cost(arch)`` / ``evaluator(arch)``
        Cost of an architecture dict (``{label: value}``), counted on ``space.prune(arch)`` when the space has it.
    ``expected_cost(probabilities)``
        Expectation under independent choices ``{label: {value: prob}}``, where the cost is additive;
        ``NotImplementedError`` otherwise.
    ``full_cost()``, ``min_cost()``
        Cost of the whole super network (every gate on), and of the cheapest connected architecture
        (``None`` when not cheap to know).
    ``describe()``
        A dict saying what is counted, in which unit, with which backend and versions.
    """

    name: str = "cost"
    unit: str = ""

    def __init__(self) -> None:
        self.space: Any = None

    # -- binding ---------------------------------------------------------------------------------------------
    def bind(self, space: Any) -> CostEvaluator:
        """A copy of this evaluator bound to ``space`` (a raw NNI ``ModelSpace``); measurements happen here."""
        bound = copy.copy(self)
        bound.space = space
        bound._bind(space)
        return bound

    def _bind(self, space: Any) -> None:  # noqa: B027  (optional hook)
        """Measure what ``cost`` needs; called on the copy returned by ``bind``."""

    @property
    def is_bound(self) -> bool:
        """Whether ``bind`` produced this evaluator."""
        return self.space is not None

    def _require_bound(self) -> None:
        if self.space is None:
            raise RuntimeError(
                f"{type(self).__name__} is not bound to a model space: use `evaluator = evaluator.bind(space)` first"
            )

    # -- queries ---------------------------------------------------------------------------------------------
    @abstractmethod
    def cost(self, arch: Arch) -> float:
        """Cost of ``arch`` (counted on the pruned architecture when the space can prune)."""

    def __call__(self, arch: Arch) -> float:
        return self.cost(arch)

    def expected_cost(self, probabilities: Mapping[str, Mapping[Any, Any]]) -> Any:
        """Expected cost under independent choices; only for additive costs."""
        raise NotImplementedError(
            f"{type(self).__name__} ({self.name}) is not additive over choices, so it has no closed-form expected "
            "cost: sample architectures and average cost(arch) instead"
        )

    def full_cost(self) -> float:
        """Cost of the super network with every gate on (the reference for percentage budgets)."""
        self._require_bound()
        if is_gate_space(self.space):
            return self.cost({label: GATE_ON for label in self.space.graph.labels})
        raise NotImplementedError(f"{type(self).__name__}: full_cost is only defined for gated spaces")

    def min_cost(self) -> float | None:
        """Cost of the cheapest connected architecture, or ``None`` when it is not cheap to compute."""
        return None

    def describe(self) -> dict[str, Any]:
        """What is counted, in which unit, with which backend."""
        return {"name": self.name, "unit": self.unit, "evaluator": type(self).__name__}

    def __repr__(self) -> str:
        state = "bound" if self.is_bound else "unbound"
        return f"{type(self).__name__}(name={self.name!r}, unit={self.unit!r}, {state})"


class AdditiveCost(CostEvaluator):
    """A cost that is a fixed part plus one contribution per chosen candidate, measured once at bind.

    Subclasses implement ``_measure(model)`` -> ``(total, {module path: cost})`` on a frozen model and
    ``_exact(model)`` -> total.

    How ``bind`` decomposes the space: when every mutable is a ``LayerChoice``, a few architectures are frozen
    (architecture ``k`` takes the ``k``-th candidate of every choice), each candidate's cost is read at its
    choice's module path(s) and the fixed part is what is left; the decomposition must give the same fixed part
    for every frozen architecture and predict ``verify`` random (pruned) architectures exactly. Otherwise the
    evaluator falls back to the *exact* mode: ``cost(arch)`` freezes and counts ``arch`` itself, memoised by
    architecture (the first call of each architecture is slow: a freeze and a count), and ``expected_cost``
    and ``min_cost`` are not available.

    On a gate space, ``cost(arch)`` is ``fixed + sum(on-cost of alive gates) + sum(off-cost of the others)``
    with the alive mask of ``space.graph``: no trace, no freeze, tens of microseconds.
    """

    def __init__(self, verify: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.verify, self.seed = verify, seed
        self.mode: str = "unbound"
        self._gated = False

    # subclasses -----------------------------------------------------------------------------------------------
    @abstractmethod
    def _measure(self, model: Any) -> tuple[float, dict[str, float]]:
        """``(total, {module path: cost of that module})`` of a frozen model."""

    def _exact(self, model: Any) -> float:
        """Total cost of a frozen model."""
        return self._measure(model)[0]

    # binding ----------------------------------------------------------------------------------------------------
    def _bind(self, space: Any) -> None:
        self._prune: Callable[[Arch], dict] | None = getattr(space, "prune", None)
        self._labels = frozenset(space.simplify())
        self._memo: dict[tuple, float] = {}
        self.table: dict[str, dict[Any, float]] = {}
        self.fixed: float = 0.0
        self.mode = "exact"
        values = choice_values(space)
        modules = choice_modules(space)
        if values and set(values) == set(modules) and self._decompose(space, values, modules):
            self.mode = "additive"
        else:
            _log.info(
                "%s: space is not additive over LayerChoices; counting each architecture exactly (memoised)",
                type(self).__name__,
            )
        self._gated = self.mode == "additive" and is_gate_space(space)
        if self._gated:
            graph = space.graph
            self._graph = graph
            self._on = [self.table[label][GATE_ON] for label in graph.labels]
            self._off = [self.table[label][GATE_OFF] for label in graph.labels]
            self._off_zero = not any(self._off)

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
        self._require_bound()
        if self._prune is not None:
            arch = self._prune(arch)
        if self.mode == "additive":
            return float(self._additive(arch))
        key = arch_key(arch)
        if key not in self._memo:
            self._memo[key] = float(self._exact(self.space.freeze(dict(arch))))
        return self._memo[key]

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
        if self._gated or is_gate_space(self.space):
            return super().full_cost()
        if self.mode == "additive":
            return float(self.fixed + sum(max(c.values()) for c in self.table.values()))
        arch = {
            label: max(v) if all(isinstance(x, (int, float)) for x in v) else v[-1]
            for label, v in choice_values(self.space).items()
        }
        return self.cost(arch)

    def min_cost(self) -> float | None:
        """Cheapest connected architecture: a shortest input -> output path of the gate graph (additive mode)."""
        self._require_bound()
        if self.mode != "additive":
            return None
        if not self._gated:
            return float(self.fixed + sum(min(c.values()) for c in self.table.values()))
        graph = self._graph
        dist = [float("inf")] * len(graph.nodes)
        dist[graph.source] = 0.0
        # Edges come in a topological order of their sources: one relaxation sweep is a DAG shortest path.
        for s, t, label in graph.edges:
            w = 0.0 if label is None else self.table[label][GATE_ON] - self.table[label][GATE_OFF]
            dist[t] = min(dist[t], dist[s] + w)
        return float(self.fixed + sum(self._off) + dist[graph.sink])

    def per_gate(self) -> dict[str, float]:
        """Cost of each gate when on (gate spaces, additive mode)."""
        self._require_bound()
        return {label: self.table[label][GATE_ON] for label in self.table} if self._gated else {}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(mode=self.mode, pruned=self.is_bound and getattr(self, "_prune", None) is not None)
        if self.is_bound and self.mode == "additive":
            d["fixed"] = self.fixed
        return d


class CallableCost(CostEvaluator):
    """A user function ``arch -> float`` wrapped into the protocol (binding does nothing).

    The function receives the architecture as given (it decides itself whether to prune).
    """

    def __init__(self, fn: Callable[[Arch], float], name: str | None = None, unit: str = "") -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"a cost must be a CostEvaluator or a callable arch -> float, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__
        self.unit = unit

    def bind(self, space: Any) -> CallableCost:
        bound = copy.copy(self)
        bound.space = space
        return bound

    def cost(self, arch: Arch) -> float:
        return float(self.fn(arch))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "evaluator": "user callable", "callable": repr(self.fn)}


def as_evaluator(obj: Any, name: str | None = None) -> CostEvaluator | CompositeCost:
    """``obj`` itself if it already follows the protocol, else a plain callable wrapped as ``CallableCost``."""
    if isinstance(obj, (CostEvaluator, CompositeCost)):
        return obj
    return CallableCost(obj, name=name)


class CompositeCost:
    """Several costs at once: ``cost(arch)`` returns ``{name: cost}``.

    Parameters
    ----------
    evaluators
        Evaluators or callables, as a list (named after each evaluator's ``name``) or a ``{name: evaluator}`` dict.

    Example
    -------
    >>> costs = CompositeCost([MacsCost(input_shape=(1, 1, 8, 8)), ParamsCost()]).bind(space)  # doctest: +SKIP
    >>> costs(arch)  # doctest: +SKIP
    {'macs': 123456.0, 'params': 7890.0}
    """

    def __init__(self, evaluators: Iterable[Any] | Mapping[str, Any]) -> None:
        items = evaluators.items() if isinstance(evaluators, Mapping) else [(None, e) for e in evaluators]
        self.evaluators: dict[str, CostEvaluator] = {}
        for key, e in items:
            ev = as_evaluator(e)
            if isinstance(ev, CompositeCost):
                raise TypeError("CompositeCost cannot nest another CompositeCost")
            key = key or ev.name
            base, i = key, 2
            while key in self.evaluators:
                key, i = f"{base}_{i}", i + 1
            self.evaluators[key] = ev
        if not self.evaluators:
            raise ValueError("CompositeCost needs at least one evaluator")
        self.name = "+".join(self.evaluators)
        self.unit = {k: e.unit for k, e in self.evaluators.items()}

    def bind(self, space: Any) -> CompositeCost:
        bound = copy.copy(self)
        bound.evaluators = {k: e.bind(space) for k, e in self.evaluators.items()}
        return bound

    def cost(self, arch: Arch) -> dict[str, float]:
        return {k: e.cost(arch) for k, e in self.evaluators.items()}

    __call__ = cost

    def expected_cost(self, probabilities: Mapping[str, Mapping[Any, Any]]) -> dict[str, Any]:
        return {k: e.expected_cost(probabilities) for k, e in self.evaluators.items()}

    def full_cost(self) -> dict[str, float]:
        return {k: e.full_cost() for k, e in self.evaluators.items()}

    def min_cost(self) -> dict[str, float | None]:
        return {k: e.min_cost() for k, e in self.evaluators.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "evaluator": "CompositeCost",
            "costs": {k: e.describe() for k, e in self.evaluators.items()},
        }

    def __getitem__(self, key: str) -> CostEvaluator:
        return self.evaluators[key]

    def __iter__(self):
        return iter(self.evaluators.items())

    def __len__(self) -> int:
        return len(self.evaluators)

    def __repr__(self) -> str:
        return f"CompositeCost({list(self.evaluators.values())!r})"
