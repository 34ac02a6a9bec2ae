"""Budgets and the budgeted reward of BSN."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Budget", "parse_budget", "budget_penalty", "reinforce_loss", "PENALTIES"]

PENALTIES = ("hinge", "abs")
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


def budget_penalty(costs: Sequence[float], limits: Sequence[float], kind: str = "hinge") -> float:
    """Sum over budgets of the normalised excess: ``max(0, C/B - 1)`` (hinge) or ``|C/B - 1|`` (abs).

    Costs are divided by their budget so that one lambda reads the same for MACs, milliseconds or parameters.
    """
    total = 0.0
    for c, b in zip(costs, limits):
        r = c / b - 1.0
        total += max(0.0, r) if kind == "hinge" else abs(r)
    return total


def reinforce_loss(logp: torch.Tensor, rewards: torch.Tensor, baseline: torch.Tensor | float) -> torch.Tensor:
    """Surrogate loss whose gradient is the REINFORCE estimate of the gradient of ``-E[reward]``.

    ``logp``: ``[k]`` log-probabilities of the sampled architectures (differentiable);
    ``rewards`` and ``baseline``: constants (no gradient flows through them).
    """
    advantage = (rewards - baseline).detach()
    return -(advantage * logp).mean()
