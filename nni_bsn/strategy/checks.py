"""BSN's arguments and its costs' first evaluations: what each option accepts, the costs paired with their budgets,
and the checks on what a cost returns the first time BSN asks it (a ``ValueError`` or a :class:`CostEvaluationError`
naming the cost, at set-up rather than mid-search)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from nni_bsn.strategy.budget import CostEvaluationError, parse_budget
from nni_bsn.strategy.names import BASELINES, ESTIMATORS, PENALTIES, REWARD_DATA, SELECTIONS

Arch = dict[str, Any]


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and value >= low


def _is_keep_prob(value: Any) -> bool:
    return value == "auto" or is_number(value) and not isinstance(value, bool) and 0 < value < 1


# The checked options, as (accepts, what it must be); the message reads "BSN: <option> must be <what>, got <value>".
OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lam": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "penalty": (lambda v: v in PENALTIES, f"one of {PENALTIES}"),
    "penalty_gradient": (lambda v: v in ("local", "reinforce"), "'local' or 'reinforce'"),
    "num_samples": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "same_batch": (lambda v: isinstance(v, bool), "True or False"),
    "estimator": (lambda v: v in ESTIMATORS, f"one of {ESTIMATORS}"),
    "reward_data": (lambda v: v in REWARD_DATA, f"one of {REWARD_DATA}"),
    "init_keep_prob": (_is_keep_prob, "'auto' or a number strictly between 0 and 1"),
    "arc_optimizer": (lambda v: v in ("adam", "sgd"), "'adam' or 'sgd'"),
    "arc_learning_rate": (lambda v: is_number(v) and v > 0, "> 0"),
    "baseline": (lambda v: v in BASELINES, "'auto', 'mean' or 'ema'"),
    "baseline_decay": (lambda v: is_number(v) and 0 <= v < 1, "in [0, 1)"),
    "entropy_coef": (is_number, "a number"),
    "warmup_epochs": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "export_samples": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "select": (lambda v: v in SELECTIONS, f"one of {SELECTIONS}"),
}


def check_costs_and_budgets(cost: Any, budget: Any) -> tuple[list[Any], list[tuple[float, bool]]]:
    """The costs as a list and their budgets parsed (one per cost); raises on anything else."""
    costs, budgets = as_list(cost), as_list(budget)
    if not costs:
        raise ValueError("BSN: give at least one cost")
    if len(costs) != len(budgets):
        raise ValueError(f"BSN: {len(costs)} cost(s) but {len(budgets)} budget(s); give one budget per cost")
    for c in costs:
        if not (callable(c) or hasattr(c, "bind")):
            raise TypeError(f"BSN: cost must be a cost evaluator or a callable arch -> float, got {c!r}")
    return costs, [parse_budget(b) for b in budgets]  # validates every budget


def describe_cost(cost: Any) -> tuple[str, str]:
    name = getattr(cost, "name", None) or getattr(cost, "__name__", None) or type(cost).__name__
    return str(name), str(getattr(cost, "unit", ""))


def _checked_cost(value: Any, name: str, what: str) -> float | None:
    """``value`` as a float if it is a finite number >= 0 (None for the cheapest architecture: not known), else a
    ``ValueError`` naming the cost."""
    if value is None and what == "the cheapest architecture":
        return None
    number = float(value) if is_number(value) or hasattr(value, "item") else math.nan
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(
            f"BSN: cost {name!r} returned {value!r} for {what}; a cost must return a finite number >= 0 for "
            "every architecture: fix the cost (or its input_shape) before searching"
        )
    return number


def set_up_costs(bound: Any, measure: Callable[[Arch], Any], probes: Callable[[], list[Arch]], name: str):
    """``(full, cheapest, probed)``: the cost of the whole super network and of its cheapest connected architecture
    (``None``: the evaluator cannot tell cheaply), and how many probe architectures a plain callable was called on
    (0 for an evaluator; see :func:`~nni_bsn.strategy.budget.probe_archs`: the dearest probe is ``full``, the cheapest
    ``cheapest``). These are the cost's first evaluations: a value that is not a finite number
    >= 0 is a ``ValueError``, an exception a :class:`CostEvaluationError`, each naming the cost.
    ``measure`` is the cost of an architecture as the cost returns it."""

    def first(fn: Callable[[], Any], what: str) -> float:
        try:
            value = fn()
        except Exception as e:
            raise CostEvaluationError(
                f"BSN: cost {name!r} failed on {what} (BSN's first evaluation of it): {type(e).__name__}: {e}"
            ) from e
        return _checked_cost(value, name, what)

    full_fn = getattr(bound, "full_cost", None)
    if not callable(full_fn):  # a plain callable: a bounded number of probes, no search
        archs = probes()
        values = [
            first(lambda a=a: measure(a), f"the super network (probe {i})") for i, a in enumerate(archs)
        ]
        return max(values), min(values), len(values)
    full = first(full_fn, "the whole super network")
    min_fn = getattr(bound, "min_cost", None)
    cheapest = first(min_fn, "the cheapest architecture") if callable(min_fn) else None
    return full, cheapest, 0
