"""Budgets and the budgeted reward of BSN."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nni_bsn.strategy.names import PENALTIES

__all__ = [
    "Budget",
    "parse_budget",
    "resolve_limit",
    "budget_penalty",
    "calibrate_keep_prob",
    "charged_costs",
    "CostEvaluationError",
    "PENALTIES",
    "PROBES",
    "probe_archs",
]

_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*%\s*$")


def parse_budget(value: float | int | str) -> tuple[float, bool]:
    """``(number, is_percentage)`` from ``5e6`` or ``'25%'``; raises ``ValueError`` on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"budget must be a positive number or a percentage like '25%', got {value!r}")
    if isinstance(value, (int, float)):
        number, pct = float(value), False
    elif isinstance(value, str):
        m = _PERCENT.match(value)
        if m:
            number, pct = float(m.group(1)), True
        else:
            try:
                number, pct = float(value), False
            except ValueError:
                raise ValueError(
                    f"budget must be a positive number or a percentage like '25%', got {value!r}"
                ) from None
    else:
        raise ValueError(f"budget must be a positive number or a percentage like '25%', got {value!r}")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"budget must be positive and finite, got {value!r}")
    return number, pct


def resolve_limit(
    spec: tuple[float, bool], full: float, cheapest: float | None, *, name: str, unit: str = ""
) -> float:
    """The absolute limit of a parsed budget ``(number, is_percent)``: a percentage is of ``full``.

    Raises ``ValueError`` when the limit is below ``cheapest``, the cost of the cheapest connected architecture
    (``None``: not known, no check); callers add their own prefix to the message.
    """
    number, pct = spec
    limit = number / 100.0 * full if pct else number
    if cheapest is not None and limit < cheapest:
        raise ValueError(
            f"budget {limit:.6g} {unit} for {name} is below the cheapest connected architecture of this space "
            f"({cheapest:.6g} {unit}); raise the budget"
        )
    return limit


def probe_archs(
    mutables: Mapping[str, Any], is_gate: Callable[[Any], bool], on: Any, graph: Any = None
) -> list[dict[str, Any]]:
    """The architectures a plain callable cost is called on before training (at most ``PROBES``).

    Every gate ``on`` with every other choice at its first value, then at its last; and, on a space whose
    ``graph`` finds its connected path with the fewest gates (``cheapest_path``), that path with the other choices
    at their first, then last, value. The dearest probe is the reference of a percentage budget (a lower bound of
    the dearest architecture); a budget below the cheapest probe is refused before training.
    """
    gates = [label for label, m in mutables.items() if is_gate(m)]
    choices = {label: list(m.grid()) for label, m in mutables.items() if not is_gate(m)}
    gate_values = [dict.fromkeys(gates, on)]
    if gates and callable(getattr(graph, "cheapest_path", None)):
        gate_values.append(graph.cheapest_path(dict.fromkeys(graph.labels, 1.0))[1])
    out: list[dict[str, Any]] = []
    for values in gate_values:
        for pick in (0, -1):
            arch = {**{label: grid[pick] for label, grid in choices.items()}, **values}
            if arch not in out:
                out.append(arch)
    return out


PROBES = 4  # the most calls of a plain callable cost before training (probe_archs)


@dataclass
class Budget:
    """One cost with its limit: ``cost(arch) <= limit``.

    ``evaluator`` is a bound cost evaluator (or any ``arch -> float``); ``limit`` is absolute, in the evaluator's unit.
    """

    evaluator: Callable[[dict[str, Any]], float]
    limit: float
    spec: Any = None
    name: str = "cost"
    unit: str = ""
    full: float | None = field(default=None)

    def __call__(self, arch: dict[str, Any]) -> float:
        return float(self.evaluator(arch))


class CostEvaluationError(RuntimeError):
    """A cost evaluator raised on an architecture: the search stops, naming the evaluator."""


def charged_costs(
    arch: dict[str, Any],
    budgets: Sequence[Budget],
    is_connected: Callable[[dict[str, Any]], bool] | None = None,
    *,
    context: str = "",
) -> list[float]:
    """Cost of ``arch`` for each budget as the reward sees it.

    A disconnected architecture is charged the whole super network (``Budget.full``; ten times the limit when
    unknown), so that cutting the network never looks cheap (the original code charged it nothing). An evaluator
    that raises becomes a :class:`CostEvaluationError` naming it (``context`` is added to the message).
    """
    if is_connected is not None and not is_connected(arch):
        return [b.full if b.full is not None else b.limit * 10 for b in budgets]
    costs = []
    for b in budgets:
        try:
            costs.append(b(arch))
        except Exception as e:
            raise CostEvaluationError(
                f"cost evaluator {b.name!r} failed on a sampled architecture{context}: "
                f"{type(e).__name__}: {e}"
            ) from e
    return costs


def budget_penalty(costs: Sequence[float], limits: Sequence[float], kind: str = "hinge") -> float:
    """Sum over budgets of the normalised excess: ``max(0, C/B - 1)`` (hinge), ``|C/B - 1|`` (abs) or ``C/B - 1``
    (lagrange: signed, its weight a learned multiplier, :class:`~nni_bsn.strategy.reward.Multiplier`).

    Costs are divided by their budget so that one lambda reads the same for MACs, milliseconds or parameters.
    """
    total = 0.0
    for c, b in zip(costs, limits):
        r = c / b - 1.0
        total += max(0.0, r) if kind == "hinge" else abs(r) if kind == "abs" else r
    return total


def calibrate_keep_prob(
    gate_labels: Sequence[str],
    choice_values: Sequence[Sequence[Any]],
    choice_labels: Sequence[str],
    cost_fn: Callable[[dict[str, Any]], Sequence[float]],
    limits: Sequence[float],
    *,
    start: float = 0.95,
    floor: float = 0.05,
    step: float = 0.025,
    samples: int = 128,
    seed: int = 0,
) -> tuple[float, float]:
    """The largest uniform keep-probability ``p <= start`` whose expected cost meets every budget.

    The expected cost is the one the reward sees (``cost_fn``, e.g. :func:`charged_costs`: pruned architecture,
    a disconnected one charged the whole super network), estimated on ``samples`` architectures drawn with common
    random numbers (gate ``g`` of sample ``j`` is on iff ``u[j, g] < p``, other choices uniform), so the estimate
    is smooth in ``p``. Levels ``start, start - step, ...`` down to ``floor`` are tried until one meets every budget; if none
    does (on a fabric, low ``p`` disconnects most samples and they are charged in full), the level with the
    smallest worst ratio cost/budget is returned. Returns ``(p, worst expected cost / budget at p)``.
    """
    import torch

    from evaluators.blocks import GATE_OFF, GATE_ON

    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(samples, len(gate_labels), generator=gen).tolist()
    picks = [torch.randint(len(v), (samples,), generator=gen).tolist() for v in choice_values]
    best_p, best_ratio = start, math.inf
    p = start
    while p >= floor - 1e-9:
        totals, counts = [0.0] * len(limits), [0] * len(limits)
        for j in range(samples):
            arch: dict[str, Any] = {
                label: (GATE_ON if x < p else GATE_OFF) for label, x in zip(gate_labels, u[j])
            }
            for label, values, pick in zip(choice_labels, choice_values, picks):
                arch[label] = values[pick[j]]
            for i, c in enumerate(cost_fn(arch)):
                if math.isfinite(c):  # the search skips such samples too
                    totals[i] += c
                    counts[i] += 1
        if not all(counts):
            return start, math.nan  # no finite cost to go by: start where the paper does
        ratio = max(t / n / b for t, n, b in zip(totals, counts, limits)) if limits else 0.0
        if ratio <= 1.0:
            return p, ratio
        if ratio < best_ratio:
            best_p, best_ratio = p, ratio
        elif ratio > best_ratio * 1.25:  # past the valley: fewer gates now only disconnect more samples
            break
        p = round(p - step, 10)
    return best_p, best_ratio
