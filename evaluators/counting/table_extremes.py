"""The exact largest and smallest value of a sum of small tables over an architecture's choices.

Max-sum variable elimination (a table per label set, see ``label_tables.py``), with derived labels
(``derived_labels.py``): one of a single source is re-keyed on it, the sources of a group are eliminated together
by dynamic programming over their union.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evaluators.counting.derived_labels import DerivedLabels

__all__ = ["DecompositionError", "extreme", "hashable_value"]


class DecompositionError(RuntimeError):
    """The cost is not a sum of small per-label-set tables (or could not be measured) on this space."""


def hashable_value(value: Any) -> Any:
    """A dictionary key for an architecture value (InputChoice values are lists in NNI's format)."""
    return tuple(value) if isinstance(value, list) else value


def extreme(
    grid: Mapping[str, Sequence[Any]],
    tables: Mapping[tuple[str, ...], Mapping[Any, float]],
    constant: float,
    derived: Sequence[DerivedLabels] = (),
    best: Callable[[Sequence[float]], float] = max,
) -> tuple[float, dict[str, Any]]:
    """The largest (``best=max``) or smallest (``min``) cost over the grid, and an architecture reaching it.

    Max-sum variable elimination: eliminating a label merges the tables that hold it into one over their other
    labels; exact, and cheap while those merged tables stay small (chains, trees, disjoint groups). The tables
    hold choices and labels derived from several choices (:class:`~evaluators.counting.label_tables.LabelTables` re-keys a
    label derived from one choice on that choice); the sources of a derived group are eliminated together, by
    dynamic programming over their union (:func:`_group_best`).
    """
    sign = 1.0 if best is max else -1.0  # maximise sign * cost
    groups = [d for d in derived if len(d.sources) > 1]
    domain = {x: [hashable_value(v) for v in vs] for x, vs in grid.items()}
    for d in groups:
        domain.update({n: vs for n, vs in d.domains().items()})
    factors = [
        (labels, {(k if len(labels) > 1 else (k,)): sign * v for k, v in t.items()})
        for labels, t in tables.items()
    ]
    held = {x for d in groups for x in (*d.sources, *d.names)}
    variables = {x for labels, _ in factors for x in labels}
    factors, steps = _eliminate(factors, domain, variables - held)
    for d in groups:
        factors, step = _eliminate_group(d, factors, domain)
        steps.append(step)
    factors, more = _eliminate(factors, domain, {x for labels, _ in factors for x in labels})
    steps += more
    total = constant + sign * sum(t[()] for _, t in factors)
    arch: dict[str, Any] = {}
    for scope, chosen in reversed(steps):
        arch.update(chosen[tuple(arch[x] for x in scope)])
    back = {x: dict(zip(domain[x], vs)) for x, vs in grid.items()}
    out = {x: back[x][arch[x]] if x in arch else vs[0] for x, vs in grid.items()}
    return total, out  # labels no cost depends on take their first value


Factor = tuple[tuple[str, ...], dict[tuple, float]]
Step = tuple[tuple[str, ...], dict[tuple, dict[str, Any]]]


def _eliminate(
    factors: list[Factor], domain: Mapping, variables: set[str]
) -> tuple[list[Factor], list[Step]]:
    """Max-sum elimination of ``variables``, cheapest merge first; the remaining factors and the argmax steps."""
    steps: list[Step] = []
    remaining = set(variables)
    while remaining:

        def merged_size(label: str, factors: list = factors) -> int:
            scope = {x for labels, _ in factors if label in labels for x in labels} - {label}
            return math.prod(len(domain[x]) for x in scope)

        label = min(sorted(remaining), key=merged_size)
        if merged_size(label) > 1_000_000:
            raise DecompositionError(f"eliminating {label!r} needs a table over more than 10^6 combinations")
        remaining.discard(label)
        holding = [f for f in factors if label in f[0]]
        factors = [f for f in factors if label not in f[0]]
        scope = tuple(sorted({x for labels, _ in holding for x in labels} - {label}))
        table, chosen = {}, {}
        for combo in itertools.product(*(domain[x] for x in scope)):
            env = dict(zip(scope, combo))
            scores = []
            for value in domain[label]:
                env[label] = value
                scores.append(sum(t.get(tuple(env[x] for x in labels), -math.inf) for labels, t in holding))
            table[combo] = max(scores)
            chosen[combo] = {label: domain[label][scores.index(table[combo])]}
        factors.append((scope, table))
        steps.append((scope, chosen))
    return factors, steps


def _eliminate_group(d: DerivedLabels, factors: list[Factor], domain: Mapping) -> tuple[list[Factor], Step]:
    """Eliminate the sources of ``d`` together: a factor over its derived labels and the other labels of the factors
    that held its sources."""
    sources = set(d.sources)
    holding = [f for f in factors if sources & set(f[0])]
    factors = [f for f in factors if not sources & set(f[0])]
    context = tuple(sorted({x for labels, _ in holding for x in labels} - sources))
    scope = tuple(sorted(set(context) | set(d.names)))
    table, chosen = {}, {}
    for combo in itertools.product(*(domain[x] for x in context)):
        env = dict(zip(context, combo))
        for derived, (value, picked) in _group_best(d, holding, env).items():
            if all(env.get(n, v) == v for n, v in zip(d.names, derived)):
                key = tuple({**env, **dict(zip(d.names, derived))}[x] for x in scope)
                table[key], chosen[key] = value, picked
    for combo in itertools.product(*(domain[x] for x in scope)):
        table.setdefault(combo, -math.inf)  # derived values no architecture reaches with this context
        chosen.setdefault(combo, {x: domain[x][0] for x in d.sources})
    factors.append((scope, table))
    return factors, (scope, chosen)


def _group_best(
    d: DerivedLabels, holding: Sequence[Factor], env: Mapping[str, Any]
) -> dict[tuple, tuple[float, dict[str, Any]]]:
    """Per tuple of derived values, the largest sum of the ``holding`` factors (other labels fixed by ``env``) over
    the sources of ``d``, and the source values reaching it: a dynamic programme over the sources in order, whose
    state is the union so far and the values of the sources a factor not yet complete still needs."""
    pos = {x: i for i, x in enumerate(d.sources)}
    due: dict[int, list[Factor]] = {}
    forget: dict[str, int] = {}
    for labels, t in holding:
        last = max(pos[x] for x in labels if x in pos)
        due.setdefault(last, []).append((labels, t))
        for x in labels:
            if x in pos:
                forget[x] = max(forget.get(x, -1), last)
    states: dict[tuple, tuple[float, dict[str, Any]]] = {(0, ()): (0.0, {})}
    for i, (x, bits) in enumerate(d.bits.items()):
        new: dict[tuple, tuple[float, dict[str, Any]]] = {}
        for (union, kept), (value, picked) in states.items():
            for v, bit in bits.items():
                known = {**env, **dict(kept), x: v}
                s = value + sum(
                    t.get(tuple(known[y] for y in labels), -math.inf) for labels, t in due.get(i, ())
                )
                key = (union | bit, tuple((y, w) for y, w in (*kept, (x, v)) if forget.get(y, -1) > i))
                if key not in new or s > new[key][0]:
                    new[key] = (s, {**picked, x: v})
        states = new
    out: dict[tuple, tuple[float, dict[str, Any]]] = {}
    for (union, _), (value, picked) in states.items():
        derived = d.derive(union)
        if derived not in out or value > out[derived][0]:
            out[derived] = (value, picked)
    return out
