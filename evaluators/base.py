"""The cost-evaluator protocol, user callables and composites (tables of per-gate costs: ``table.py``).

A cost evaluator is built with its options, bound once to a raw (unmutated) NNI model space with
``bind(space)`` -- which returns a new, bound evaluator and leaves the unbound one reusable -- and then
answers ``cost(arch)`` for architecture dicts, every training step. Everything expensive (tracing, export,
timing) happens in ``bind``; ``cost`` is a masked sum or a small schedule.

Costs are counted on the *pruned* architecture when the space offers ``prune(arch)``: a gate that lies on no
input -> output path computes nothing that reaches the prediction and costs nothing.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from evaluators.blocks import all_gates, is_gate_space

__all__ = ["CostEvaluator", "CallableCost", "CompositeCost", "as_evaluator"]

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
            return self.cost(all_gates(self.space))
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
