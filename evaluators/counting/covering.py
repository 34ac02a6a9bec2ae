"""Which architectures to measure: a greedy covering design over the labels' values.

A table keyed on a few labels is known once every joint value of those labels has been seen in a measured
architecture. :func:`covering_rows` places architectures so that few of them show every required joint value
(labels derived from several choices included, through :class:`Grid`), then improves each one label at a time.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from evaluators.counting.derived_labels import DerivedLabels
from evaluators.counting.table_extremes import hashable_value

__all__ = ["Grid", "Required", "all_combos", "covering_rows", "masked_combos", "required_combos"]


class Grid:
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


def all_combos(groups: Sequence[tuple[str, ...]], grid: Grid) -> Required:
    return {g: set(itertools.product(*(grid.domain[x] for x in g))) for g in groups}


def covering_rows(required: Required, grid: Grid, seen: Sequence[dict], rng: random.Random) -> list[dict]:
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


def _greedy_row(missing: Required, grid: Grid, strict: bool, rng: random.Random) -> dict[str, Any]:
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


def _improved(row: dict[str, Any], missing: Required, grid: Grid, sweeps: int = 2) -> dict[str, Any]:
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


def masked_combos(required: Required, masks: Collection[str]) -> Required:
    """``required`` without the joint values where a mask label of the set is False."""
    out: Required = {}
    for g, combos in required.items():
        at = [i for i, x in enumerate(g) if x in masks]
        out[g] = {c for c in combos if all(c[i] for i in at)}
    return out


def required_combos(deps: Mapping[str, tuple[str, ...]], masked: Mapping[str, str], space: Grid) -> Required:
    """Per label set, the joint values to measure: all of them, but those where a path's mask is False when every
    path keyed on the set has that mask (such a path counts 0 there)."""
    out: Required = {}
    for p, g in deps.items():
        combos = masked_combos(all_combos([g], space), [masked[p]] if p in masked else [])[g]
        out[g] = out.get(g, set()) | combos
    return out
