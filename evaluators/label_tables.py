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

from .derived_labels import DerivedLabels

__all__ = ["LabelTables", "DecompositionError", "fit_tables", "hashable_value", "own_costs"]

_log = logging.getLogger(__name__)

_FIRST, _NEAR = 4, 10  # the prior labels a module count most likely depends on

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
    """``cost(arch) = constant + sum_g table_g[arch values of labels_g]``, with exact max / min over architectures.

    A label set may hold derived labels (:class:`~evaluators.derived_labels.DerivedLabels`), computed from the
    architecture before the lookups.
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
        self.tables = {labels: dict(t) for labels, t in tables.items()}
        used = {x for labels in self.tables for x in labels}
        self.derived = [d for d in derived if used & set(d.names)]
        self._lookups = [(itemgetter(*labels), t) for labels, t in self.tables.items()]

    def __call__(self, arch: Mapping[str, Any]) -> float:
        a = {k: (tuple(v) if type(v) is list else v) for k, v in arch.items()}
        for d in self.derived:
            a.update(zip(d.names, d.values(a)))
        return self.constant + sum(t[get(a)] for get, t in self._lookups)

    def extreme(self, best: Callable[[Sequence[float]], float] = max) -> tuple[float, dict[str, Any]]:
        """The largest (``best=max``) or smallest (``min``) cost over the grid, and an architecture reaching it.

        Max-sum variable elimination: eliminating a label merges the tables that hold it into one over their other
        labels; exact, and cheap while those merged tables stay small (chains, trees, disjoint groups). A derived
        label of one source is re-keyed on that source; the sources of a derived group are eliminated together, by
        dynamic programming over their union (:meth:`DerivedLabels.best`).
        """
        sign = 1.0 if best is max else -1.0  # maximise sign * cost
        single = {d.names[0]: d for d in self.derived if len(d.sources) == 1}
        groups = [d for d in self.derived if len(d.sources) > 1]
        domain = {x: [hashable_value(v) for v in vs] for x, vs in self.grid.items()}
        for d in groups:
            domain.update({n: vs for n, vs in d.domains().items()})
        factors = []
        for labels, t in self.tables.items():
            keyed = {(k if len(labels) > 1 else (k,)): sign * v for k, v in t.items()}
            factors.append(_substitute(labels, keyed, single, domain))
        held = {x for d in groups for x in (*d.sources, *d.names)}
        variables = {x for labels, _ in factors for x in labels}
        factors, steps = _eliminate(factors, domain, variables - held)
        for d in groups:
            factors, step = _eliminate_group(d, factors, domain)
            steps.append(step)
        factors, more = _eliminate(factors, domain, {x for labels, _ in factors for x in labels})
        steps += more
        total = self.constant + sign * sum(t[()] for _, t in factors)
        arch: dict[str, Any] = {}
        for scope, chosen in reversed(steps):
            arch.update(chosen[tuple(arch[x] for x in scope)])
        back = {x: dict(zip(domain[x], vs)) for x, vs in self.grid.items()}
        out = {x: back[x][arch[x]] if x in arch else vs[0] for x, vs in self.grid.items()}
        return total, out  # labels no cost depends on take their first value


Factor = tuple[tuple[str, ...], dict[tuple, float]]
Step = tuple[tuple[str, ...], dict[tuple, dict[str, Any]]]


def _substitute(
    labels: tuple[str, ...], table: dict[tuple, float], single: Mapping[str, DerivedLabels], domain: Mapping
) -> Factor:
    """A factor keyed on derived labels of one source each, re-keyed on those sources."""
    if not any(x in single for x in labels):
        return labels, table
    scope = tuple(sorted({single[x].sources[0] if x in single else x for x in labels}))
    out = {}
    for combo in itertools.product(*(domain[x] for x in scope)):
        env = dict(zip(scope, combo))
        key = tuple(single[x].values(env)[0] if x in single else env[x] for x in labels)
        out[combo] = table.get(key, -math.inf)
    return scope, out


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
    the first 4, then 10, ``prior`` labels (an exhaustive search: a count that exists only for one value of one label and one
    of another, like an operator's stride that depends on its input, misleads a greedy pick), else of all labels
    (singles and pairs), then greedy forward from the best pair, then backward pruning.

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
    searches = [(first, 1), (first, 2), (first, 3), (near, 1), (near, 2), (near, 3), (labels, 1), (labels, 2)]
    for pool, k in searches:
        if len(pool) >= k:
            chosen = list(min(itertools.combinations(pool, k), key=key))
            if not _conflicts(rows, ys, chosen):
                return tuple(sorted(chosen))
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

    def place(self, row: Mapping[str, Any], g: Sequence[str], combo: Sequence[Any]) -> dict[str, Any] | None:
        """``row`` (some labels) extended so that the labels ``g`` take ``combo``, or ``None`` when no architecture
        agreeing with ``row`` does. A derived label fixes all its sources, so later placements keep its value."""
        new = dict(row)
        allowed: dict[str, set] = {}
        wanted: dict[int, tuple[DerivedLabels, dict[str, Any]]] = {}
        for x, v in zip(g, combo):
            d = self.owner.get(x)
            if d is None:
                if new.setdefault(x, v) != v:
                    return None
            elif len(d.sources) == 1:
                src = d.sources[0]
                ok = {u for u in self.hgrid[src] if d.values({src: u})[0] == v}
                allowed[src] = allowed.get(src, ok) & ok
            else:
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


def _covering_rows(
    groups: set[tuple[str, ...]], grid: _Grid, seen: Sequence[dict], rng: random.Random
) -> list[dict]:
    """Architectures that, with ``seen``, show every combination of values of every label set in ``groups`` that
    some architecture reaches (a combination of derived labels may be unreachable)."""
    missing = {
        g: set(itertools.product(*(grid.domain[x] for x in g))) - {tuple(r[x] for x in g) for r in seen}
        for g in groups
    }
    rows = []
    while any(missing.values()):
        row: dict[str, Any] = {}
        for g in sorted(missing, key=lambda g: (-len(missing[g]), g)):
            for combo in sorted(missing[g], key=repr):
                placed = grid.place(row, g, combo)
                if placed is not None:
                    row = placed
                    break
        if not row:  # no architecture reaches the combinations left
            break
        row = grid.complete({x: row[x] if x in row else rng.choice(vs) for x, vs in grid.hgrid.items()})
        for g in missing:
            missing[g].discard(tuple(row[x] for x in g))
        rows.append(row)
    return rows


def fit_tables(
    measure: Measure,
    grid: Mapping[str, Sequence[Any]],
    *,
    prior: Callable[[str], Sequence[str]] | None = None,
    derived: Sequence[DerivedLabels] = (),
    pairs: Sequence[tuple[str, str]] = (),
    screen: int = 8,
    verify: int = 3,
    rounds: int = 8,
    max_rows: int = 80,
    seed: int = 0,
) -> LabelTables:
    """Decompose ``measure`` (arch -> {path: own count}, or ``None`` when the architecture cannot run) into tables.

    ``grid`` gives every label's values in NNI's format; ``prior(path)`` optionally ranks the labels likely to
    matter to a module path (those of the mutables above it), to break ties; ``derived`` adds labels computed from
    several choices (see :mod:`~evaluators.derived_labels`) that tables may be keyed on, and ``pairs`` label
    pairs whose every joint value the first architectures show. Raises
    :class:`DecompositionError` when a count depends on too many choices, an architecture cannot be measured, or
    the check on ``verify`` fresh random architectures fails after ``rounds`` refinements.
    """
    rng = random.Random(seed)
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

    def random_row() -> dict:
        return space.complete({x: rng.choice(vs) for x, vs in hgrid.items()})

    # Every value of every label at least once, and every value of a label derived from several choices beside
    # every value of every other label: a rare derived value (e.g. a cell's predecessor that no node reads, which
    # makes fvcore drop the cells upstream of it as dead code) must be seen to be found.
    groups = [n for d in space.derived if len(d.sources) > 1 for n in d.names]
    screening = {(x,) for x in labels} | {
        (n, x) for n in groups for x in hgrid if x not in space.owner[n].sources
    }
    screening |= {tuple(p) for p in pairs if set(p) <= set(labels)}
    for row in _covering_rows(screening, space, [], rng):
        run(row)
    for _ in range(screen):
        run(random_row())
    deps: dict[str, tuple[str, ...]] = {}
    ranks: dict[str, tuple[str, ...]] = {}
    for _ in range(rounds):
        paths = sorted({p for c in counts for p in c})
        found: dict[tuple, tuple[str, ...]] = {}  # paths whose counts split the rows alike share their labels
        for p in paths:
            ys = [c.get(p, 0) for c in counts]
            if p not in ranks:
                ranks[p] = tuple(prior(p)) if prior is not None else ()
            first: dict[float, int] = {}
            key = (tuple(first.setdefault(y, len(first)) for y in ys), ranks[p])
            if key not in found:
                found[key] = _dependencies(rows, ys, labels, ranks[p], sizes)
            deps[p] = found[key]
        cover = _covering_rows(set(deps.values()), space, rows, rng)
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
            checks = [random_row() for _ in range(verify)]
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
                    derived,
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
