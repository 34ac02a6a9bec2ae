"""The most probable architecture within a budget, exact on a cost's label tables.

Maximise ``sum_x log p_x(arch[x])`` subject to ``cost(arch) <= limit``, where the cost is a sum of small tables
(:class:`~evaluators.counting.label_tables.LabelTables`). The Lagrangian relaxation ``max log p - mu * (cost -
limit)`` is itself a max-sum over the same tables plus one table of log-probabilities per choice, solved exactly by
variable elimination (:func:`~evaluators.counting.table_extremes.extreme`); for any ``mu >= 0`` it bounds the
constrained optimum from above. A depth-first branch and bound over the choices (most probable value first) uses
that bound and the exact cheapest completion (the same elimination, minimising) to discard branches, so the answer
is exact when the search ends within ``max_nodes`` nodes and ``max_seconds``; otherwise it is the best found, and
says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evaluators.counting.label_tables import LabelTables
from evaluators.counting.table_extremes import extreme, hashable_value

__all__ = ["ConstrainedBest", "most_probable_within"]

Arch = dict[str, Any]


@dataclass
class ConstrainedBest:
    """The architecture found, its log-probability and cost, whether it is proven the best, and the nodes visited."""

    arch: Arch
    log_prob: float
    cost: float
    exact: bool
    nodes: int


class _Problem:
    """The tables, the log-probabilities (keyed by hashable value) and the limit, with the two eliminations."""

    def __init__(
        self, tables: LabelTables, log_probs: Mapping[str, Mapping[Any, float]], limit: float
    ) -> None:
        self.tables, self.limit = tables, limit
        self.logp = {
            x: {hashable_value(v): float(lp) for v, lp in values.items()}
            for x, values in log_probs.items()
            if x in tables.grid
        }

    def log_prob(self, arch: Arch) -> float:
        return sum(t.get(hashable_value(arch[x]), -math.inf) for x, t in self.logp.items())

    def _solve(self, unary: Mapping[str, Mapping[Any, float]], scale: float, best) -> tuple[float, Arch]:
        """The extreme (``best``) of ``scale * cost`` plus the ``unary`` tables; a value missing from a unary
        table is excluded (``extreme`` reads a missing entry as impossible)."""
        merged = {labels: {k: scale * v for k, v in t.items()} for labels, t in self.tables.tables.items()}
        for x, u in unary.items():
            own = merged.get((x,))
            merged[(x,)] = {k: v + (own[k] if own else 0.0) for k, v in u.items() if own is None or k in own}
        return extreme(self.tables.grid, merged, scale * self.tables.constant, self.tables.derived, best)

    def cheapest(self, fixed: Mapping[str, Any]) -> float:
        """The lowest cost of an architecture agreeing with ``fixed``."""
        return self._solve({x: {v: 0.0} for x, v in fixed.items()}, 1.0, min)[0]

    def relaxed(self, mu: float, fixed: Mapping[str, Any]) -> tuple[float, Arch]:
        """The Lagrangian bound ``max log p - mu * (cost - limit)`` over architectures agreeing with ``fixed``, and
        the architecture reaching it."""
        unary = {x: ({fixed[x]: t[fixed[x]]} if x in fixed else t) for x, t in self.logp.items()}
        unary.update({x: {v: 0.0} for x, v in fixed.items() if x not in self.logp})
        value, arch = self._solve(unary, -mu, max)
        return value + mu * self.limit, arch


def _multiplier(problem: _Problem, keep: Callable[[Arch], None], deadline: float) -> float:
    """The ``mu`` whose relaxed architecture just fits the limit (bisection: the relaxed architecture's cost falls
    as ``mu`` grows); every relaxed architecture met is offered to ``keep``."""
    lo, hi = 0.0, 1.0
    for _ in range(60):  # grow hi until its relaxed architecture fits
        if time.monotonic() > deadline:
            return hi
        arch = problem.relaxed(hi, {})[1]
        keep(arch)
        if problem.tables(arch) <= problem.limit:
            break
        lo, hi = hi, hi * 4.0
    for _ in range(24):
        if time.monotonic() > deadline:
            break
        mid = (lo + hi) / 2.0
        arch = problem.relaxed(mid, {})[1]
        keep(arch)
        lo, hi = (lo, mid) if problem.tables(arch) <= problem.limit else (mid, hi)
    return hi


def most_probable_within(
    tables: LabelTables,
    log_probs: Mapping[str, Mapping[Any, float]],
    limit: float,
    *,
    feasible: Callable[[Arch], bool] | None = None,
    max_nodes: int = 4000,
    max_seconds: float = 20.0,
) -> ConstrainedBest | None:
    """The architecture of highest ``sum_x log_probs[x][arch[x]]`` with ``tables(arch) <= limit`` (and
    ``feasible(arch)``, another condition checked on each candidate, e.g. other budgets), or ``None`` when no
    architecture fits. ``log_probs`` maps each choice to its values' log-probabilities, values as in an
    architecture; choices without one are free. Exact unless ``max_nodes`` branch-and-bound nodes or
    ``max_seconds`` were not enough (then ``exact`` is False and the answer is the best found)."""
    problem = _Problem(tables, log_probs, limit)
    if problem.cheapest({}) > limit * (1 + 1e-12):
        return None
    fits = feasible or (lambda arch: True)
    best: list[Any] = [-math.inf, None]

    def keep(arch: Arch) -> None:
        lp = problem.log_prob(arch)
        if lp > best[0] and problem.tables(arch) <= limit * (1 + 1e-12) and fits(arch):
            best[:] = [lp, arch]

    deadline = time.monotonic() + max_seconds
    mu = _multiplier(problem, keep, deadline)
    order = [x for x in tables.grid if x in problem.logp] + [x for x in tables.grid if x not in problem.logp]
    stack: list[dict[str, Any]] = [{}]
    nodes = 0
    while stack and nodes < max_nodes and time.monotonic() < deadline:
        fixed = stack.pop()
        nodes += 1
        if problem.cheapest(fixed) > limit * (1 + 1e-12):
            continue
        bound, arch = problem.relaxed(mu, fixed)
        if bound <= best[0] + 1e-9:
            continue
        keep(arch)
        if (best[1] is arch and best[0] >= bound - 1e-9) or len(fixed) == len(order):
            continue  # the bound is reached: nothing better below
        x = order[len(fixed)]
        values = sorted(problem.logp.get(x, {}).items(), key=lambda kv: kv[1]) or [
            (hashable_value(v), 0.0) for v in reversed(tables.grid[x])
        ]
        stack += [{**fixed, x: v} for v, _ in values]  # the most probable value is popped first
    if best[1] is None:
        return None
    return ConstrainedBest(best[1], best[0], problem.tables(best[1]), not stack, nodes)
