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

from .derived_labels import DerivedLabels
from .table_extremes import DecompositionError, extreme, hashable_value

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

    A label set may hold derived labels (:class:`~evaluators.derived_labels.DerivedLabels`): one derived from a
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
        self.tables = _rekeyed(tables, derived, _Grid(grid, derived).domain)
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
        (see :func:`~evaluators.table_extremes.extreme`)."""
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


class _Grid:
    """The labels' values (hashable) and the derived labels computed from them."""

    def __init__(self, grid: Mapping[str, Sequence[Any]], derived: Sequence[DerivedLabels]) -> None:
        self.hgrid = {x: [hashable_value(v) for v in grid[x]] for x in sorted(grid)}
        self.derived = list(derived)
        self.owner = {n: d for d in self.derived for n in d.names}
        self.domain = dict(self.hgrid)
        for d in self.derived:
            self.domain.update(d.domains())

    def complete(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` (every label) with its derived labels."""
        out = dict(row)
        for d in self.derived:
            out.update(zip(d.names, d.values(out)))
        return out

    def place(
        self, row: Mapping[str, Any], g: Sequence[str], combo: Sequence[Any], strict: bool = True
    ) -> dict[str, Any] | None:
        """``row`` (some labels) extended so that the labels ``g`` take ``combo``, or ``None`` when no architecture
        agreeing with ``row`` does. A label derived from several choices fixes all its sources, so later placements
        keep its value; ``strict=False`` leaves such labels to chance (they fix nothing)."""
        new = dict(row)
        allowed: dict[str, set] = {}
        wanted: dict[int, tuple[DerivedLabels, dict[str, Any]]] = {}
        for x, v in zip(g, combo):
            d = self.owner.get(x)
            if d is None:
                if new.setdefault(x, v) != v:
                    return None
            elif len(d.sources) == 1:
                src, at = d.sources[0], d.names.index(x)
                ok = {u for u in self.hgrid[src] if d.values({src: u})[at] == v}
                allowed[src] = allowed.get(src, ok) & ok
            elif strict:
                wanted.setdefault(id(d), (d, {}))[1][x] = v
        if any(src in new and new[src] not in ok for src, ok in allowed.items()):
            return None
        for d, want in wanted.values():
            allow = {x: {new[x]} if x in new else allowed.get(x, set(self.hgrid[x])) for x in d.sources}
            picked = d.realize(allow, want)
            if picked is None:
                return None
            new.update(picked)
        for src, ok in allowed.items():
            if src not in new:
                if not ok:
                    return None
                new[src] = next(u for u in self.hgrid[src] if u in ok)
        return new


Required = dict[tuple[str, ...], set[tuple]]  # per label set, the joint values the measured rows must show


def _all_combos(groups: Sequence[tuple[str, ...]], grid: _Grid) -> Required:
    return {g: set(itertools.product(*(grid.domain[x] for x in g))) for g in groups}


def _covering_rows(required: Required, grid: _Grid, seen: Sequence[dict], rng: random.Random) -> list[dict]:
    """Architectures that, with ``seen``, show every required joint value of every label set that some
    architecture reaches (a combination of derived labels may be unreachable). Each row is placed greedily, then
    improved one label at a time while that shows more of what is missing (fewer architectures to measure)."""
    missing = {g: set(c) - {tuple(r[x] for x in g) for r in seen} for g, c in required.items()}
    rows = []
    while any(missing.values()):
        # placed strictly, and with the labels derived from several choices left to chance (placing one fixes
        # all its sources, which then cannot show the other label sets' values): the row showing more
        candidates = [
            _improved(_greedy_row(missing, grid, strict, rng), missing, grid) for strict in (True, False)
        ]
        shown = [sum(tuple(r[x] for x in g) in m for g, m in missing.items()) for r in candidates]
        if not max(shown):  # no architecture reaches the combinations left
            break
        row = candidates[shown.index(max(shown))]
        for g in missing:
            missing[g].discard(tuple(row[x] for x in g))
        rows.append(row)
    return rows


def _greedy_row(missing: Required, grid: _Grid, strict: bool, rng: random.Random) -> dict[str, Any]:
    """A row (every label) placing, label set by label set (most missing first), a missing value (at random)
    agreeing with the labels placed so far; the labels left free at random."""
    row: dict[str, Any] = {}
    for g in sorted(missing, key=lambda g: (-len(missing[g]), g)):
        combos = sorted(missing[g], key=repr)
        # in a fixed order, the labels of different sets would move together and look alike to the search
        for combo in rng.sample(combos, len(combos)):
            placed = grid.place(row, g, combo, strict)
            if placed is not None:
                row = placed
                break
    return {x: row[x] if x in row else rng.choice(vs) for x, vs in grid.hgrid.items()}


def _improved(row: dict[str, Any], missing: Required, grid: _Grid, sweeps: int = 2) -> dict[str, Any]:
    """``row`` (every label) with its derived labels, after coordinate ascent on how many missing values it shows
    (a change of one label rescored on the label sets it reaches only)."""
    reach: dict[str, list[tuple[tuple[str, ...], set[tuple]]]] = {x: [] for x in grid.hgrid}
    for g, m in missing.items():
        if m:
            sources = {y for x in g for y in (grid.owner[x].sources if x in grid.owner else (x,))}
            for y in sources:
                reach[y].append((g, m))

    def shown(r: dict[str, Any], x: str) -> int:
        return sum(tuple(r[y] for y in g) in m for g, m in reach[x])

    best = grid.complete(row)
    for _ in range(sweeps):
        moved = False
        for x, values in grid.hgrid.items():
            if not reach[x]:
                continue
            here = shown(best, x)
            for v in values:
                if v != best[x]:
                    cand = grid.complete({**{y: best[y] for y in grid.hgrid}, x: v})
                    if (s := shown(cand, x)) > here:
                        best, here, moved = cand, s, True
        if not moved:
            break
    return best


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
    ``derived`` adds labels computed from several choices (see :mod:`~evaluators.derived_labels`) that tables may
    be keyed on, and ``pairs`` label sets (pairs or more) whose every joint value the first architectures show; ``cross`` screens every value of a label derived from several
    choices beside every value of every other label (not needed where ``known`` covers what depends on them).
    Raises :class:`DecompositionError` when a count depends on too many choices, an architecture cannot be
    measured, or the check on ``verify`` fresh random architectures fails after ``rounds`` refinements.
    """
    rng = random.Random(seed)
    if mask_of is None and known is not None:  # by default, a mask among the labels a path is known to follow

        def mask_of(path: str) -> str | None:
            return next((x for x in known(path) or () if x in masks), None)

    space = _Grid(grid, derived)
    hgrid = space.hgrid
    labels = sorted(space.domain)
    sizes = {x: len(vs) for x, vs in space.domain.items()}
    back = {x: dict(zip(hgrid[x], grid[x])) for x in hgrid}
    rows: list[dict] = []
    counts: list[Mapping[str, float]] = []

    def run(row: dict) -> None:
        if len(rows) >= max_rows:
            raise DecompositionError(f"more than {max_rows} architectures would have to be measured")
        out = measure({x: back[x][row[x]] for x in hgrid})
        if out is None:
            raise DecompositionError(f"an architecture of the space cannot be counted: {row}")
        rows.append(row)
        counts.append(out)

    every = [n for n in masks if n in space.domain]
    alive = space.place({}, every, [True] * len(every)) if every else None

    def random_row(masked_on: bool = False) -> dict:
        """A random architecture; with ``masked_on``, one where every mask is True (where they can all be: a
        module that exists only with a Repeat's largest depth is then checked half the time, not rarely)."""
        row = space.complete({x: rng.choice(vs) for x, vs in hgrid.items()})
        if masked_on and alive is not None and not all(row[n] for n in every):
            row = space.complete(
                {**{x: row[x] for x in hgrid}, **{x: v for x, v in alive.items() if x in hgrid}}
            )
        return row

    screening = _masked(_all_combos(_screening(space, pairs, cross, masks), space), masks)
    for row in _covering_rows(screening, space, [], rng):
        run(row)
    for _ in range(screen):
        run(random_row())
    ranks: dict[str, tuple[str, ...]] = {}
    for _ in range(rounds):
        deps, masked = _find_deps(rows, counts, labels, sizes, ranks, prior, known, mask_of)
        cover = _covering_rows(_required(deps, masked, space), space, rows, rng)
        _log.debug(
            "fit_tables: %d architectures measured, %d label sets (largest %d labels), %d more to cover them",
            len(rows),
            len(set(deps.values())),
            max(map(len, deps.values()), default=0),
            len(cover),
        )
        for row in cover:
            run(row)
        if all(
            not _masked_conflicts(rows, [c.get(p, 0) for c in counts], g, masked.get(p))
            for p, g in deps.items()
        ):
            tables = _tabulate(rows, counts, deps, masked, space)
            before = len(rows)
            for i in range(verify):
                run(random_row(masked_on=i % 2 == 1))
            if all(
                _predict(tables, rows[i]) == sum(counts[i].values()) for i in range(before, len(rows))
            ) and all(p in deps for c in counts[before:] for p in c):
                constant = sum(tables.pop((), {(): 0.0}).values())
                return LabelTables(
                    grid,
                    {g: {(k[0] if len(g) == 1 else k): v for k, v in t.items()} for g, t in tables.items()},
                    constant,
                    derived,
                )
    raise DecompositionError(f"the per-module decomposition did not check out after {rounds} refinements")


def _screening(
    space: _Grid, pairs: Sequence[tuple[str, ...]], cross: bool, masks: Collection[str]
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


def _masked(required: Required, masks: Collection[str]) -> Required:
    """``required`` without the joint values where a mask label of the set is False."""
    out: Required = {}
    for g, combos in required.items():
        at = [i for i, x in enumerate(g) if x in masks]
        out[g] = {c for c in combos if all(c[i] for i in at)}
    return out


def _required(deps: Mapping[str, tuple[str, ...]], masked: Mapping[str, str], space: _Grid) -> Required:
    """Per label set, the joint values to measure: all of them, but those where a path's mask is False when every
    path keyed on the set has that mask (such a path counts 0 there)."""
    out: Required = {}
    for p, g in deps.items():
        combos = _masked(_all_combos([g], space), [masked[p]] if p in masked else [])[g]
        out[g] = out.get(g, set()) | combos
    return out


def _tabulate(
    rows: Sequence[dict],
    counts: Sequence[Mapping[str, float]],
    deps: Mapping[str, tuple[str, ...]],
    masked: Mapping[str, str],
    space: _Grid,
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
        for combo in _all_combos([g], space)[g]:
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
