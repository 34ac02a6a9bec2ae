"""A cost as a sum of small tables over a few choices each, read from per-module counts of frozen architectures.

On a generic NNI space, the count of one module of the frozen model (its own operations, children excluded)
depends on a few choices only: the LayerChoice / Repeat / Cell choices that decide whether it exists, the widths and
kernel sizes it is built with, and the choices upstream that change its input shape. ``fit_tables`` measures a
handful of frozen architectures, finds for each module path the smallest set of labels its count is a function of,
measures more architectures until every combination of every such set has been seen (a greedy covering design),
and checks the result on fresh random architectures. ``cost(arch)`` is then a constant plus one dictionary lookup
per distinct label set, and the cheapest and the dearest architectures follow exactly by max-sum variable
elimination over the tables.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

__all__ = ["LabelTables", "DecompositionError", "fit_tables", "hashable_value", "own_costs"]

_log = logging.getLogger(__name__)

Measure = Callable[[dict[str, Any]], Mapping[str, float] | None]


class DecompositionError(RuntimeError):
    """The cost is not a sum of small per-label-set tables (or could not be measured) on this space."""


def hashable_value(value: Any) -> Any:
    """A dictionary key for an architecture value (InputChoice values are lists in NNI's format)."""
    return tuple(value) if isinstance(value, list) else value


def own_costs(cumulative: Mapping[str, float]) -> dict[str, float]:
    """Per-module counts without their children, from per-module counts that include them (fvcore's by_module)."""
    own = dict(cumulative)
    for path, value in cumulative.items():
        if path:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            if parent in own:
                own[parent] -= value
    return {path: v for path, v in own.items() if v}


class LabelTables:
    """``cost(arch) = constant + sum_g table_g[arch values of labels_g]``, with exact max / min over architectures."""

    def __init__(
        self,
        grid: Mapping[str, Sequence[Any]],
        tables: Mapping[tuple[str, ...], Mapping[Any, float]],
        constant: float,
    ) -> None:
        self.grid = {label: list(values) for label, values in grid.items()}
        self.constant = constant
        self.tables = {labels: dict(t) for labels, t in tables.items()}
        self._lookups = [(itemgetter(*labels), t) for labels, t in self.tables.items()]

    def __call__(self, arch: Mapping[str, Any]) -> float:
        a = {k: (tuple(v) if type(v) is list else v) for k, v in arch.items()}
        return self.constant + sum(t[get(a)] for get, t in self._lookups)

    def extreme(self, best: Callable[[Sequence[float]], float] = max) -> tuple[float, dict[str, Any]]:
        """The largest (``best=max``) or smallest (``min``) cost over the grid, and an architecture reaching it.

        Max-sum variable elimination: eliminating a label merges the tables that hold it into one over their other
        labels; exact, and cheap while those merged tables stay small (chains, trees, disjoint groups).
        """
        factors = [
            (labels, {k if len(labels) > 1 else (k,): v for k, v in t.items()})
            for labels, t in self.tables.items()
        ]
        choices: list[tuple[str, tuple[str, ...], dict]] = []
        remaining = {label for labels, _ in factors for label in labels}
        while remaining:

            def merged_size(label: str, factors: list = factors) -> int:
                scope = {x for labels, _ in factors if label in labels for x in labels} - {label}
                return math.prod(len(self.grid[x]) for x in scope)

            label = min(sorted(remaining), key=merged_size)
            if merged_size(label) > 1_000_000:
                raise DecompositionError(
                    f"eliminating {label!r} needs a table over more than 10^6 combinations"
                )
            remaining.discard(label)
            holding = [f for f in factors if label in f[0]]
            factors = [f for f in factors if label not in f[0]]
            scope = tuple(sorted({x for labels, _ in holding for x in labels} - {label}))
            table, argbest = {}, {}
            for combo in itertools.product(*(map(hashable_value, self.grid[x]) for x in scope)):
                env = dict(zip(scope, combo))
                scores = []
                for value in map(hashable_value, self.grid[label]):
                    env[label] = value
                    scores.append(sum(t[tuple(env[x] for x in labels)] for labels, t in holding))
                table[combo] = best(scores)
                argbest[combo] = self.grid[label][scores.index(table[combo])]
            factors.append((scope, table))
            choices.append((label, scope, argbest))
        total = self.constant + sum(t[()] for _, t in factors)
        arch: dict[str, Any] = {}
        for label, scope, argbest in reversed(choices):
            arch[label] = argbest[tuple(hashable_value(arch[x]) for x in scope)]
        for label, values in self.grid.items():
            arch.setdefault(label, values[0])  # labels no cost depends on
        return total, arch


def _conflicts(rows: Sequence[dict[str, Any]], ys: Sequence[float], labels: Sequence[str]) -> int:
    seen: dict[tuple, float] = {}
    bad = 0
    for row, y in zip(rows, ys):
        key = tuple(row[x] for x in labels)
        if seen.setdefault(key, y) != y:
            bad += 1
    return bad


def _dependencies(
    rows: Sequence[dict],
    ys: Sequence[float],
    labels: Sequence[str],
    prior: Sequence[str],
    max_labels: int = 5,
) -> tuple[str, ...]:
    """A small label set on which ``ys`` is a function of the rows (greedy forward, then backward pruning).

    Ties go to the ``prior`` labels.
    """
    chosen: list[str] = []
    while _conflicts(rows, ys, chosen):
        if len(chosen) >= max_labels:
            raise DecompositionError(f"a module count depends on more than {max_labels} choices")
        rank = {x: i for i, x in enumerate(prior)}
        candidates = [x for x in labels if x not in chosen]
        chosen.append(
            min(candidates, key=lambda x: (_conflicts(rows, ys, [*chosen, x]), rank.get(x, len(rank))))
        )
    for x in list(chosen):  # an early pick that later ones made redundant was a coincidence of the sample
        if len(chosen) > 1 and not _conflicts(rows, ys, [y for y in chosen if y != x]):
            chosen.remove(x)
    return tuple(sorted(chosen))


def _covering_rows(
    groups: set[tuple[str, ...]], grid: Mapping[str, Sequence[Any]], seen: Sequence[dict], rng: random.Random
) -> list[dict]:
    """Architectures that, with ``seen``, show every combination of values of every label set in ``groups``."""
    hgrid = {x: [hashable_value(v) for v in vs] for x, vs in grid.items()}
    missing = {
        g: set(itertools.product(*(hgrid[x] for x in g))) - {tuple(r[x] for x in g) for r in seen}
        for g in groups
    }
    rows = []
    while any(missing.values()):
        row: dict[str, Any] = {}
        for g in sorted(missing, key=lambda g: -len(missing[g])):
            for combo in sorted(missing[g], key=repr):
                if all(row.get(x, v) == v for x, v in zip(g, combo)):
                    row.update(zip(g, combo))
                    break
        for x, vs in hgrid.items():
            row.setdefault(x, rng.choice(vs))
        for g in missing:
            missing[g].discard(tuple(row[x] for x in g))
        rows.append(row)
    return rows


def fit_tables(
    measure: Measure,
    grid: Mapping[str, Sequence[Any]],
    *,
    prior: Callable[[str], Sequence[str]] | None = None,
    screen: int = 8,
    verify: int = 3,
    rounds: int = 8,
    max_rows: int = 80,
    seed: int = 0,
) -> LabelTables:
    """Decompose ``measure`` (arch -> {path: own count}, or ``None`` when the architecture cannot run) into tables.

    ``grid`` gives every label's values in NNI's format; ``prior(path)`` optionally ranks the labels likely to
    matter to a module path (those of the mutables above it), to break ties. Raises :class:`DecompositionError` when a
    count depends on too many choices, an architecture cannot be measured, or the check on ``verify`` fresh random
    architectures fails after ``rounds`` refinements.
    """
    rng = random.Random(seed)
    labels = sorted(grid)
    hgrid = {x: [hashable_value(v) for v in grid[x]] for x in labels}
    back = {x: dict(zip(hgrid[x], grid[x])) for x in labels}
    rows: list[dict] = []
    counts: list[Mapping[str, float]] = []

    def run(row: dict) -> None:
        if len(rows) >= max_rows:
            raise DecompositionError(f"more than {max_rows} architectures would have to be measured")
        out = measure({x: back[x][v] for x, v in row.items()})
        if out is None:
            raise DecompositionError(f"an architecture of the space cannot be counted: {row}")
        rows.append(row)
        counts.append(out)

    for k in range(max(len(v) for v in hgrid.values())):  # every value of every label at least once
        run({x: vs[k % len(vs)] for x, vs in hgrid.items()})
    for _ in range(screen):
        run({x: rng.choice(vs) for x, vs in hgrid.items()})
    deps: dict[str, tuple[str, ...]] = {}
    ranks: dict[str, Sequence[str]] = {}
    for _ in range(rounds):
        paths = sorted({p for c in counts for p in c})
        for p in paths:
            ys = [c.get(p, 0) for c in counts]
            if p not in ranks:
                ranks[p] = prior(p) if prior is not None else ()
            deps[p] = _dependencies(rows, ys, labels, ranks[p])
        cover = _covering_rows(set(deps.values()), hgrid, rows, rng)
        _log.debug(
            "fit_tables: %d architectures measured, %d label sets (largest %d labels), %d more to cover them",
            len(rows),
            len(set(deps.values())),
            max(map(len, deps.values()), default=0),
            len(cover),
        )
        _log.debug("fit_tables: largest label sets: %s", sorted(set(deps.values()), key=len)[-3:])
        for row in cover:
            run(row)
        if all(not _conflicts(rows, [c.get(p, 0) for c in counts], deps[p]) for p in paths):
            checks = [{x: rng.choice(vs) for x, vs in hgrid.items()} for _ in range(verify)]
            tables = _tabulate(rows, counts, deps)
            before = len(rows)
            for row in checks:
                run(row)
            if all(
                _predict(tables, rows[i]) == sum(counts[i].values()) for i in range(before, len(rows))
            ) and all(p in deps for c in counts[before:] for p in c):
                constant = sum(tables.pop((), {(): 0.0}).values())
                return LabelTables(
                    grid,
                    {g: {(k[0] if len(g) == 1 else k): v for k, v in t.items()} for g, t in tables.items()},
                    constant,
                )
    raise DecompositionError(f"the per-module decomposition did not check out after {rounds} refinements")


def _tabulate(
    rows: Sequence[dict], counts: Sequence[Mapping[str, float]], deps: Mapping[str, tuple[str, ...]]
) -> dict[tuple[str, ...], dict[tuple, float]]:
    """Per label set, the summed count of its module paths for every combination (all combinations were seen)."""
    per_path: dict[str, dict[tuple, float]] = {}
    for row, c in zip(rows, counts):
        for p, g in deps.items():
            per_path.setdefault(p, {})[tuple(row[x] for x in g)] = c.get(p, 0)
    tables: dict[tuple[str, ...], dict[tuple, float]] = {}
    for p, g in deps.items():
        t = tables.setdefault(g, {})
        for key, v in per_path[p].items():
            t[key] = t.get(key, 0) + v
    return tables


def _predict(tables: Mapping[tuple[str, ...], Mapping[tuple, float]], row: Mapping[str, Any]) -> float | None:
    try:
        return sum(t[tuple(row[x] for x in g)] for g, t in tables.items())
    except KeyError:
        return None
