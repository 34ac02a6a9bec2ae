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
from collections.abc import Callable, Collection, Mapping, Sequence
from operator import itemgetter
from typing import Any

from evaluators.counting.covering import (
    Grid,
    all_combos,
    covering_rows,
    masked_combos,
    required_combos,
)
from evaluators.counting.derived_labels import DerivedLabels
from evaluators.counting.table_extremes import DecompositionError, extreme, hashable_value

__all__ = ["LabelTables", "DecompositionError", "fit_tables", "hashable_value", "own_costs"]

_log = logging.getLogger(__name__)

_FIRST, _NEAR = 4, 10  # the prior labels a module count most likely depends on

Measure = Callable[[dict[str, Any]], Mapping[str, float] | None]


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
    """``cost(arch) = constant + sum_g table_g[arch values of labels_g]``, with exact max / min over architectures.

    A label set may hold derived labels (:class:`~evaluators.counting.derived_labels.DerivedLabels`): one derived from a
    single choice is replaced by that choice once, here (a table over its values); one derived from several is
    computed from the architecture before the lookups.
    """

    def __init__(
        self,
        grid: Mapping[str, Sequence[Any]],
        tables: Mapping[tuple[str, ...], Mapping[Any, float]],
        constant: float,
        derived: Sequence[DerivedLabels] = (),
    ) -> None:
        self.grid = {label: list(values) for label, values in grid.items()}
        self.constant = constant
        self.tables = _rekeyed(tables, derived, Grid(grid, derived).domain)
        used = {x for labels in self.tables for x in labels}
        self.derived = [d for d in derived if used & set(d.names)]
        self._lookups = [(itemgetter(*labels), t) for labels, t in self.tables.items()]

    def __call__(self, arch: Mapping[str, Any]) -> float:
        a = {k: (tuple(v) if type(v) is list else v) for k, v in arch.items()}
        for d in self.derived:
            a.update(zip(d.names, d.values(a)))
        return self.constant + sum(t[get(a)] for get, t in self._lookups)

    def extreme(self, best: Callable[[Sequence[float]], float] = max) -> tuple[float, dict[str, Any]]:
        """The largest (``best=max``) or smallest (``min``) cost over the grid, and an architecture reaching it
        (see :func:`~evaluators.counting.table_extremes.extreme`)."""
        return extreme(self.grid, self.tables, self.constant, self.derived, best)


def _rekeyed(
    tables: Mapping[tuple[str, ...], Mapping[Any, float]],
    derived: Sequence[DerivedLabels],
    domain: Mapping[str, Sequence[Any]],
) -> dict[tuple[str, ...], dict[Any, float]]:
    """``tables`` with each label derived from a single choice replaced by that choice (tables that end up over the
    same labels are summed): nothing to derive for them at each call. A table over one label is keyed by the value,
    over several by the tuple of values."""
    single = {n: (d, i) for d in derived if len(d.sources) == 1 for i, n in enumerate(d.names)}
    out: dict[tuple[str, ...], dict[Any, float]] = {}
    for labels, t in tables.items():
        if not any(x in single for x in labels):
            scope, new = labels, dict(t)
        else:
            scope = tuple(sorted({single[x][0].sources[0] if x in single else x for x in labels}))
            new = {}
            for combo in itertools.product(*(domain[x] for x in scope)):
                env = dict(zip(scope, combo))
                key = tuple(single[x][0].values(env)[single[x][1]] if x in single else env[x] for x in labels)
                key = key if len(labels) > 1 else key[0]
                if key in t:  # a joint value with a label derived from several choices may be unreachable
                    new[combo if len(scope) > 1 else combo[0]] = t[key]
        if scope in out:  # summed where both tables hold the joint value (a value one lacks, no one reaches)
            out[scope] = {k: v + out[scope][k] for k, v in new.items() if k in out[scope]}
        else:
            out[scope] = new
    return out


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
    sizes: Mapping[str, int],
    max_labels: int = 5,
) -> tuple[str, ...]:
    """A small label set on which ``ys`` is a function of the rows: the first exact single label, pair or triple of
    the first 4 ``prior`` labels, then single to quadruple of the first 10 (an exhaustive search: a count that
    exists only for one value of one label and one of another, like an operator's stride that depends on its input,
    misleads a greedy pick), else of all labels (singles and pairs), then greedy forward from the set with the
    fewest conflicts, then backward pruning.

    Ties go to smaller tables (fewer architectures to measure), then to earlier ``prior`` labels.
    """
    rank = {x: i for i, x in enumerate(prior)}

    def key(labels: Sequence[str]) -> tuple:
        last = max((rank.get(x, len(rank)) for x in labels), default=0)
        return (_conflicts(rows, ys, labels), math.prod(sizes[x] for x in labels), last)

    if not _conflicts(rows, ys, []):
        return ()
    near = [x for x in prior[:_NEAR] if x in sizes]
    first = near[:_FIRST]
    searches = [(first, 1), (first, 2), (first, 3), (near, 1), (near, 2), (near, 3), (near, 4), (labels, 1)]
    searches.append((labels, 2))
    best: list[str] = []
    for pool, k in searches:
        if len(pool) >= k:
            chosen = list(min(itertools.combinations(pool, k), key=key))
            if not _conflicts(rows, ys, chosen):
                return tuple(sorted(chosen))
            best = min(best, chosen, key=key) if best else chosen
    chosen = best  # the fewest conflicts so far, not the last pair tried
    while _conflicts(rows, ys, chosen):
        if len(chosen) >= max_labels:
            raise DecompositionError(f"a module count depends on more than {max_labels} choices")
        chosen.append(min((x for x in labels if x not in chosen), key=lambda x: key([*chosen, x])))
    for x in list(chosen):  # an early pick that later ones made redundant was a coincidence of the sample
        if len(chosen) > 1 and not _conflicts(rows, ys, [y for y in chosen if y != x]):
            chosen.remove(x)
    return tuple(sorted(chosen))


def _masked_conflicts(
    rows: Sequence[dict], ys: Sequence[float], labels: Sequence[str], live: str | None
) -> int:
    """:func:`_conflicts`, where a row in which ``live`` is False must count 0 and is otherwise left out."""
    if live is None:
        return _conflicts(rows, ys, labels)
    dead = sum(1 for r, y in zip(rows, ys) if not r[live] and y)
    kept = [(r, y) for r, y in zip(rows, ys) if r[live]]
    return dead + _conflicts([r for r, _ in kept], [y for _, y in kept], labels)


def fit_tables(
    measure: Measure,
    grid: Mapping[str, Sequence[Any]],
    *,
    prior: Callable[[str], Sequence[str]] | None = None,
    known: Callable[[str], Sequence[str] | None] | None = None,
    masks: Collection[str] = (),
    mask_of: Callable[[str], str | None] | None = None,
    derived: Sequence[DerivedLabels] = (),
    pairs: Sequence[tuple[str, ...]] = (),
    cross: bool = True,
    screen: int = 8,
    verify: int = 3,
    rounds: int = 8,
    max_rows: int = 80,
    seed: int = 0,
) -> LabelTables:
    """Decompose ``measure`` (arch -> {path: own count}, or ``None`` when the architecture cannot run) into tables.

    ``grid`` gives every label's values in NNI's format; ``prior(path)`` optionally ranks the labels likely to
    matter to a module path (those of the mutables above it), to break ties, and ``known(path)`` the labels its
    count is known to be a function of (used while no measured architecture contradicts them); ``masks`` boolean
    derived labels without which a module counts 0 (it reaches nothing, or is not in the architecture), and
    ``mask_of(path)`` the one of a path (by default, one of ``masks`` among its ``known`` labels): only
    architectures where it is True need measuring (the first architectures show the joint values of ``pairs``
    there only), and the path's table is 0 where it is False (while no measured architecture contradicts it).
    ``derived`` adds labels computed from several choices (see :mod:`~evaluators.counting.derived_labels`) that tables may
    be keyed on, and ``pairs`` label sets (pairs or more) whose every joint value the first architectures show; ``cross`` screens every value of a label derived from several
    choices beside every value of every other label (not needed where ``known`` covers what depends on them).
    Raises :class:`DecompositionError` when a count depends on too many choices, an architecture cannot be
    measured, or the check on ``verify`` fresh random architectures fails after ``rounds`` refinements.
    """
    rng = random.Random(seed)
    if mask_of is None and known is not None:  # by default, a mask among the labels a path is known to follow

        def mask_of(path: str) -> str | None:
            return next((x for x in known(path) or () if x in masks), None)

    space = Grid(grid, derived)
    labels = sorted(space.domain)
    sizes = {x: len(vs) for x, vs in space.domain.items()}
    seen = _Measurements(measure, grid, space, masks, max_rows, rng)
    screening = masked_combos(all_combos(_screening(space, pairs, cross, masks), space), masks)
    for row in covering_rows(screening, space, [], rng):
        seen.run(row)
    for _ in range(screen):
        seen.run(seen.random_row())
    ranks: dict[str, tuple[str, ...]] = {}
    for _ in range(rounds):
        deps, masked = _find_deps(seen.rows, seen.counts, labels, sizes, ranks, prior, known, mask_of)
        cover = covering_rows(required_combos(deps, masked, space), space, seen.rows, rng)
        _log.debug(
            "fit_tables: %d architectures measured, %d label sets (largest %d labels), %d more to cover them",
            len(seen.rows),
            len(set(deps.values())),
            max(map(len, deps.values()), default=0),
            len(cover),
        )
        for row in cover:
            seen.run(row)
        tables = _verified_tables(seen, deps, masked, space, verify)
        if tables is not None:
            constant = sum(tables.pop((), {(): 0.0}).values())
            return LabelTables(
                grid,
                {g: {(k[0] if len(g) == 1 else k): v for k, v in t.items()} for g, t in tables.items()},
                constant,
                derived,
            )
    raise DecompositionError(f"the per-module decomposition did not check out after {rounds} refinements")


class _Measurements:
    """The architectures measured so far (every label, derived ones included) and their per-module counts."""

    def __init__(
        self,
        measure: Measure,
        grid: Mapping[str, Sequence[Any]],
        space: Grid,
        masks: Collection[str],
        max_rows: int,
        rng: random.Random,
    ) -> None:
        self.measure, self.space, self.max_rows, self.rng = measure, space, max_rows, rng
        self.back = {x: dict(zip(space.hgrid[x], grid[x])) for x in space.hgrid}
        self.rows: list[dict] = []
        self.counts: list[Mapping[str, float]] = []
        self.every = [n for n in masks if n in space.domain]
        self.alive = space.place({}, self.every, [True] * len(self.every)) if self.every else None

    def run(self, row: dict) -> None:
        if len(self.rows) >= self.max_rows:
            raise DecompositionError(f"more than {self.max_rows} architectures would have to be measured")
        out = self.measure({x: self.back[x][row[x]] for x in self.space.hgrid})
        if out is None:
            raise DecompositionError(f"an architecture of the space cannot be counted: {row}")
        self.rows.append(row)
        self.counts.append(out)

    def random_row(self, masked_on: bool = False) -> dict:
        """A random architecture; with ``masked_on``, one where every mask is True (where they can all be: a
        module that exists only with a Repeat's largest depth is then checked half the time, not rarely)."""
        hgrid = self.space.hgrid
        row = self.space.complete({x: self.rng.choice(vs) for x, vs in hgrid.items()})
        if masked_on and self.alive is not None and not all(row[n] for n in self.every):
            row = self.space.complete(
                {**{x: row[x] for x in hgrid}, **{x: v for x, v in self.alive.items() if x in hgrid}}
            )
        return row


def _verified_tables(
    seen: _Measurements,
    deps: Mapping[str, tuple[str, ...]],
    masked: Mapping[str, str],
    space: Grid,
    verify: int,
) -> dict[tuple[str, ...], dict[tuple, float]] | None:
    """The tables, when no measured row contradicts ``deps`` and they predict ``verify`` fresh random
    architectures exactly (measured here, and kept); else ``None`` (another refinement is needed)."""
    rows, counts = seen.rows, seen.counts
    if any(_masked_conflicts(rows, [c.get(p, 0) for c in counts], g, masked.get(p)) for p, g in deps.items()):
        return None
    tables = _tabulate(rows, counts, deps, masked, space)
    before = len(rows)
    for i in range(verify):
        seen.run(seen.random_row(masked_on=i % 2 == 1))
    if all(_predict(tables, rows[i]) == sum(counts[i].values()) for i in range(before, len(rows))) and all(
        p in deps for c in counts[before:] for p in c
    ):
        return tables
    return None


def _screening(
    space: Grid, pairs: Sequence[tuple[str, ...]], cross: bool, masks: Collection[str]
) -> set[tuple[str, ...]]:
    """What the first architectures show: every value of every label, the joint values of ``pairs``, every value of
    every label where each mask is True (a module that exists only there must be seen to vary), and with ``cross``
    every value of a label derived from several choices beside every value of every other label (a rare derived
    value, e.g. a cell's predecessor that no node reads, which makes fvcore drop the cells upstream of it as dead
    code, must be seen to be found)."""
    labels = set(space.domain)
    out = {(x,) for x in labels} | {tuple(p) for p in pairs if set(p) <= labels}
    groups = [n for n in masks if n in labels]
    if cross:
        groups += [n for d in space.derived if len(d.sources) > 1 for n in d.names if n not in masks]
    out |= {(n, x) for n in groups for x in space.hgrid if x not in space.owner[n].sources}
    return out


def _find_deps(
    rows: Sequence[dict],
    counts: Sequence[Mapping[str, float]],
    labels: Sequence[str],
    sizes: Mapping[str, int],
    ranks: dict[str, tuple[str, ...]],
    prior: Callable[[str], Sequence[str]] | None,
    known: Callable[[str], Sequence[str] | None] | None,
    mask_of: Callable[[str], str | None] | None,
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Per measured module path, the labels its count is a function of (``known`` where the rows agree, else
    found by :func:`_dependencies` on the rows where its mask is True), and the paths' masks where the rows agree
    that a path counts 0 wherever its mask is False (the mask is then one of its labels)."""
    deps: dict[str, tuple[str, ...]] = {}
    masked: dict[str, str] = {}
    found: dict[tuple, tuple[str, ...]] = {}  # paths whose counts split the rows alike share their labels
    for p in sorted({p for c in counts for p in c}):
        ys = [c.get(p, 0) for c in counts]
        mask = mask_of(p) if mask_of is not None else None
        if mask not in labels or any(y for r, y in zip(rows, ys) if not r[mask]):
            mask = None  # it counts where its mask says it cannot: no mask
        structural = known(p) if known is not None else None
        if structural and set(structural) <= set(labels):
            inner = mask if mask in structural else None
            if not _masked_conflicts(rows, ys, structural, inner):
                deps[p] = tuple(sorted(structural))
                if inner is not None:
                    masked[p] = inner
                continue
        if p not in ranks:
            ranks[p] = tuple(prior(p)) if prior is not None else ()
        first: dict[float, int] = {}
        key = (tuple(first.setdefault(y, len(first)) for y in ys), mask, ranks[p])
        if key not in found:
            live = [(r, y) for r, y in zip(rows, ys) if mask is None or r[mask]]
            found[key] = _dependencies([r for r, _ in live], [y for _, y in live], labels, ranks[p], sizes)
        deps[p] = found[key] if mask is None else tuple(sorted({*found[key], mask}))
        if mask is not None:
            masked[p] = mask
    return deps, masked


def _tabulate(
    rows: Sequence[dict],
    counts: Sequence[Mapping[str, float]],
    deps: Mapping[str, tuple[str, ...]],
    masked: Mapping[str, str],
    space: Grid,
) -> dict[tuple[str, ...], dict[tuple, float]]:
    """Per label set, the summed count of its module paths for every combination (all combinations were seen, or
    are where the path's mask is False: 0)."""
    per_path: dict[str, dict[tuple, float]] = {}
    for row, c in zip(rows, counts):
        for p, g in deps.items():
            per_path.setdefault(p, {})[tuple(row[x] for x in g)] = c.get(p, 0)
    for p, m in masked.items():
        g = deps[p]
        at = g.index(m)
        for combo in all_combos([g], space)[g]:
            if not combo[at]:
                per_path[p].setdefault(combo, 0)
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
