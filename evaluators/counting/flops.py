"""Multiply-accumulates (fvcore) and parameter counts of an architecture, exact and per-gate cached."""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import random
import warnings
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from typing import Any

import torch
from torch import nn

from evaluators.base import Arch
from evaluators.blocks import arch_key, is_gate_space
from evaluators.counting.derived_labels import (
    cell_derived_labels,
    cell_pairs,
    repeat_derived_labels,
)
from evaluators.counting.frozen_build import only_chosen_candidates
from evaluators.counting.label_tables import (
    DecompositionError,
    LabelTables,
    fit_tables,
    hashable_value,
    own_costs,
)
from evaluators.counting.local_labels import LocalLabels
from evaluators.table import AdditiveCost

__all__ = ["MacsCost", "ParamsCost", "fvcore_macs", "space_grid"]

_log = logging.getLogger(__name__)

_ENUMERABLE = 512  # spaces with at most this many architectures get exact extremes by enumeration


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _analysis(model: nn.Module, inputs: torch.Tensor) -> Any:
    with _quiet():
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model.eval(), inputs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        analysis.total()  # run the trace now, inside the warning filter
    return analysis


def fvcore_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """fvcore's count of ``model`` (in eval mode) on a zero input of ``input_shape``: the reference count."""
    with torch.no_grad():
        return int(_analysis(model, torch.zeros(*input_shape)).total())


def space_grid(space: nn.Module) -> dict[str, list[Any]]:
    """Every label of ``space`` with its values in NNI's architecture format (an InputChoice value is ``[i]``).

    Raises ``TypeError`` (the error NNI's one-shot strategies raise) on a mutable no one-shot strategy samples:
    an InputChoice choosing several inputs, or a continuous distribution.
    """
    from nni.mutable import Categorical, CategoricalMultiple, MutableAnnotation

    grid: dict[str, list[Any]] = {}
    for label, mutable in space.simplify().items():
        if isinstance(mutable, MutableAnnotation):
            continue
        if isinstance(mutable, CategoricalMultiple) and mutable.n_chosen == 1:
            grid[label] = [[v] for v in mutable.values]
        elif isinstance(mutable, Categorical):
            grid[label] = list(mutable.values)
        else:
            raise TypeError(
                f"{mutable!r} is not supported: costs are counted on categorical choices "
                "(LayerChoice, InputChoice with n_chosen=1, Repeat depth, nni.choice)"
            )
    return grid


class _FrozenCount(AdditiveCost):
    """A count of the frozen model: per-gate sums on gate spaces, per-label-set tables on any other NNI space.

    On a space without gates, ``bind`` works on a deep copy of the space (NNI's ``mutate_model`` later turns the
    space itself into the super network, in place) and decomposes the count with
    :func:`~evaluators.counting.label_tables.fit_tables`: ``cost(arch)`` is then the count of ``space.freeze(arch)`` (as far
    as the checks see) in a few microseconds, and ``full_cost()`` / ``min_cost()`` are the exact maximum / minimum
    of the tables over every architecture (mode ``'tables'``, or ``'additive'`` when every table holds one label).
    A Cell's joint quantities (which predecessors its nodes read, how many loose ends it has) are derived labels
    the tables may be keyed on
    (:func:`~evaluators.counting.derived_labels.cell_derived_labels`); whether an NDS cell reaches the classifier (MACs:
    fvcore drops dead code) and whether a Repeat block exists are masks, so the fit measures each module only
    where it counts. Fresh architectures are built constructing only the chosen cell operators
    (:mod:`~evaluators.counting.frozen_build`). The fit is checked on fresh random architectures
    only: a rare architecture can still be off (see the README). When the count does not decompose within the
    measured architectures, the mode is ``'exact'``: each architecture is frozen
    and counted once (memoised), an architecture that cannot be frozen or run costs ``inf``, and the extremes are
    exact by enumeration on spaces of at most 512 architectures; beyond that ``full_cost()`` is the dearest of a few
    random architectures improved by one coordinate sweep on small grids (a lower bound, logged) and ``min_cost()``
    is ``None``.
    """

    _generic = False  # bound to a space without gates (tables or exact mode)
    _reached_only = False  # counts only what reaches the output (fvcore drops dead code: a cell no one reads)

    def _bind(self, space: Any) -> None:
        if is_gate_space(space):
            super()._bind(space)
            return
        self._generic = True
        self.space = space = copy.deepcopy(space)
        self.grid = space_grid(space)
        self._labels = frozenset(space.simplify())
        self._prune, self._gated, self._memo = None, False, {}
        self.table, self.fixed = {}, 0.0
        self._tables: LabelTables | None = None
        self._extremes: dict[str, tuple[float, dict[str, Any]] | None] = {}
        self._rebuild = False
        self._rebuild = self._can_rebuild()
        derived = cell_derived_labels(space, self.grid) + repeat_derived_labels(space, self.grid)
        local = LocalLabels(space, self.grid, self._reached_only)
        try:
            self._tables = fit_tables(
                self._own_counts,
                self.grid,
                prior=local,
                known=local.structural,
                masks=local.masks(derived),
                mask_of=local.mask_of,
                derived=derived,
                # every joint value of each structural label set shown from the start: a combination first seen
                # in a dead cell would leave its operator's modules unseen, and uncounted
                pairs=[*cell_pairs(space), *local.known.values()],
                # what a cell's choices decide jointly is known in its structure: only the stem and the head are
                # left to find, with fewer random architectures
                cross=not local.known,
                screen=2 if local.known else 8,
                verify=max(self.verify, 4 if derived else 2),
                max_rows=256 if derived else 80,  # a cell's counts hang on rare joint values (derived_labels)
                seed=self.seed,
            )
        except DecompositionError as e:
            _log.info("%s: %s; counting each architecture exactly (memoised)", type(self).__name__, e)
            self.mode = "exact"
            return
        self.mode = "tables"
        if all(len(labels) == 1 for labels in self._tables.tables):
            self.mode = "additive"
            self.fixed = self._tables.constant
            # keyed like expected_cost's probabilities: an InputChoice by the index it chooses
            self.table = {
                labels[0]: {
                    (v[0] if isinstance(v, list) else v): t[hashable_value(v)] for v in self.grid[labels[0]]
                }
                for labels, t in self._tables.tables.items()
            }

    def _build(self, arch: Arch) -> nn.Module:
        """``space.freeze(arch)``, or the same network built afresh (cheaper than freeze's deep copy)."""
        if not self._rebuild:
            return self.space.freeze(dict(arch))
        from nni.nas.space import model_context

        # A fresh build draws initial weights: keep the caller's random stream untouched.
        with torch.random.fork_rng(devices=[]), model_context(dict(arch)), only_chosen_candidates():
            return type(self.space)(*self.space.trace_args, **self.space.trace_kwargs)

    def _can_rebuild(self) -> bool:
        """Whether building afresh counts like ``freeze`` (the space was not edited after construction)."""
        if not hasattr(self.space, "trace_args"):
            return False
        arch = {label: values[-1] for label, values in self.grid.items()}
        try:
            self._rebuild = True
            fresh = self._exact(self._build(arch))
            self._rebuild = False
            return fresh == self._exact(self._build(arch))
        except Exception:
            self._rebuild = False
            return False

    def _own_counts(self, arch: dict[str, Any]) -> dict[str, float] | None:
        try:
            model = self._build(arch)
            total, cumulative = self._measure(model)
        except Exception:  # an architecture that cannot be built or run: fit_tables gives up on the space
            return None
        own = own_costs(cumulative)
        if sum(own.values()) != total:  # e.g. shared parameters: the per-module counts do not add up
            return None
        return own

    def _frozen_count(self, arch: Arch) -> float:
        key = arch_key(arch)
        if key not in self._memo:
            try:
                self._memo[key] = float(self._exact(self._build(arch)))
            except Exception as e:
                _log.debug(
                    "%s: architecture %s cannot be frozen and run (%s): cost inf", type(self).__name__, key, e
                )
                self._memo[key] = math.inf
        return self._memo[key]

    def cost(self, arch: Arch) -> float:
        """Count of ``space.freeze(arch)`` (of ``space.prune(arch)`` on a gate space); see the class docstring."""
        if not self._generic:
            return super().cost(arch)
        if len(arch) > len(self._labels):
            unknown = sorted(map(str, set(arch) - self._labels))
            raise KeyError(
                f"{type(self).__name__}: architecture has labels this space does not have: {unknown[:5]}"
            )
        if self._tables is not None:
            try:
                return float(self._tables(arch))
            except KeyError:  # a combination the fit never saw: count this architecture (memoised)
                _log.debug(
                    "%s: %s is outside the tables; counted exactly", type(self).__name__, arch_key(arch)
                )
        return self._frozen_count(arch)

    def _extreme(self, kind: str) -> tuple[float, dict[str, Any]] | None:
        if kind not in self._extremes:
            self._extremes[kind] = self._search(kind)
        return self._extremes[kind]

    def _search(self, kind: str) -> tuple[float, dict[str, Any]] | None:
        best = max if kind == "max" else min
        if self._tables is not None:
            try:
                return self._tables.extreme(best)
            except DecompositionError as e:
                _log.info("%s: no exact %s over the tables (%s)", type(self).__name__, kind, e)
                return None if kind == "min" else self._coordinate_ascent()
        labels = sorted(self.grid)
        if math.prod(len(self.grid[x]) for x in labels) <= _ENUMERABLE:
            archs = [dict(zip(labels, combo)) for combo in itertools.product(*(self.grid[x] for x in labels))]
            finite = [(c, a) for a in archs if math.isfinite(c := self.cost(a))]
            return best(finite, key=lambda ca: ca[0]) if finite else None
        if kind == "min":
            return None
        return self._coordinate_ascent()

    def _coordinate_ascent(self) -> tuple[float, dict[str, Any]]:
        # Each probe freezes and counts a network (a fraction of a second): keep the search to ~100 probes.
        rng = random.Random(self.seed)
        archs = [{x: rng.choice(v) for x, v in self.grid.items()} for _ in range(8)]
        found = max(((self.cost(a), a) for a in archs), key=lambda ca: ca[0] if math.isfinite(ca[0]) else -1)
        arch = dict(found[1])
        if sum(len(v) for v in self.grid.values()) <= 100:
            for x, values in self.grid.items():
                scored = [(c, v) for v in values if math.isfinite(c := self.cost({**arch, x: v}))]
                if scored:
                    arch[x] = max(scored, key=lambda cv: cv[0])[1]
            found = max(found, (self.cost(arch), arch), key=lambda ca: ca[0] if math.isfinite(ca[0]) else -1)
        _log.warning(
            "%s: full_cost() on this space is the dearest architecture a short search found (%.6g), "
            "a lower bound of the maximum",
            type(self).__name__,
            found[0],
        )
        return found[0], dict(found[1])

    def full_cost(self) -> float:
        """The most expensive architecture's cost (every gate on, on a gate space); see the class docstring."""
        self._require_bound()
        if not self._generic:
            return super().full_cost()
        found = self._extreme("max")
        if found is None:
            raise ValueError(
                f"{type(self).__name__}: no architecture of this space can be frozen and counted"
            )
        return float(found[0])

    def min_cost(self) -> float | None:
        """The cheapest architecture's cost (cheapest connected one on a gate space), or ``None`` when unknown."""
        self._require_bound()
        if not self._generic:
            return super().min_cost()
        found = self._extreme("min")
        return None if found is None else float(found[0])

    def full_arch(self) -> dict[str, Any] | None:
        """An architecture whose cost is ``full_cost()`` (spaces without gates)."""
        self._require_bound()
        found = self._extreme("max")
        return None if found is None else found[1]

    def label_tables(self) -> LabelTables | None:
        """The exact per-label-set tables this cost is a sum of (spaces without gates, "tables" or "additive"
        mode), or ``None`` (gate spaces, exact mode)."""
        self._require_bound()
        return self._tables if self._generic else None

    def min_arch(self) -> dict[str, Any] | None:
        """An architecture whose cost is ``min_cost()`` (the cheapest connected one on a gate space), or ``None``
        when unknown."""
        self._require_bound()
        if not self._generic:
            return super().min_arch()
        found = self._extreme("min")
        return None if found is None else found[1]


class MacsCost(_FrozenCount):
    """Multiply-accumulates of the pruned architecture, counted by fvcore (``FlopCountAnalysis``).

    fvcore's numbers are MACs (one per multiply-add; a FLOP count would be about twice as large). What it counts:
    convolutions and linear layers (weights only: conv/linear biases are not counted), batch norm in eval mode
    (2 per element when affine), adaptive average pooling (1 per input element), nearest upsampling (1 per output
    element). What it skips, and so this cost skips too: element-wise additions (the fabric's node sums and the
    residual additions), ReLU, ``mul``/``div``, max pooling, and the zeros produced by 'off' gates (nothing is
    computed). The model is counted in eval mode on one input of ``input_shape`` (batch 1 by default; counts
    scale linearly with the batch).

    Per-choice counts are read once at bind from fvcore's ``by_module()`` on a few frozen architectures (for a
    gate space: all gates off, all gates on), so ``cost(arch)`` equals fvcore's count of
    ``space.freeze(space.prune(arch))`` exactly, without tracing. On any other NNI space (widths, kernel sizes,
    Repeat, Cell, InputChoice) the count is read into per-label-set tables on a copy of the space, or counted per
    architecture when it does not decompose (see ``_FrozenCount``).

    Parameters
    ----------
    input_shape
        Shape of the input tensor, batch included.
    verify
        How many random architectures check the per-choice decomposition against a direct count at bind.
    """

    name = "macs"
    unit = "MACs"
    _reached_only = True

    def __init__(self, input_shape: Sequence[int] = (1, 3, 32, 32), verify: int = 3, seed: int = 0) -> None:
        super().__init__(verify=verify, seed=seed)
        self.input_shape = tuple(int(d) for d in input_shape)

    def _measure(self, model: Any) -> tuple[float, dict[str, float]]:
        with torch.no_grad():
            analysis = _analysis(model, torch.zeros(*self.input_shape))
            return int(analysis.total()), {k: int(v) for k, v in analysis.by_module().items()}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            counted="multiply-accumulates of conv/linear weights (no bias), BN (2/elt, eval), adaptive avg-pool "
            "and upsampling (1/elt); additions, ReLU and 'off' gates count 0",
            backend=f"fvcore {version('fvcore')}, torch {torch.__version__}",
            input_shape=list(self.input_shape),
        )
        return d


class ParamsCost(_FrozenCount):
    """Number of parameters of the pruned architecture: ``sum(p.numel() for p in frozen.parameters())``.

    Buffers (BN running statistics) are not parameters and are not counted. Exact integer, per-gate cached.
    """

    name = "params"
    unit = "parameters"

    def _measure(self, model: Any) -> tuple[float, dict[str, float]]:
        total = sum(p.numel() for p in model.parameters())
        per_path = {path: sum(p.numel() for p in m.parameters()) for path, m in model.named_modules()}
        return total, per_path

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            counted="numel of the parameters of the frozen pruned model (buffers excluded)",
            backend=f"torch {torch.__version__}",
        )
        return d
