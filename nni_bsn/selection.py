"""Choosing the architecture BSN exports: connected, within every budget, as probable as possible."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .budget import Budget
from .policy import ArchitectureDistribution

__all__ = ["Selection", "select_architecture", "NoFeasibleArchitecture"]

_logger = logging.getLogger(__name__)

Arch = dict[str, Any]


class NoFeasibleArchitecture(RuntimeError):
    """No connected architecture found within every budget."""


@dataclass
class Selection:
    """The exported architecture with how it was found and what it costs."""

    arch: Arch
    method: str
    costs: dict[str, float]
    budgets: dict[str, float]
    within_budget: bool
    connected: bool
    log_prob: float
    candidates_checked: int = 0
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "method": self.method,
            "costs": self.costs,
            "budgets": self.budgets,
            "within_budget": self.within_budget,
            "connected": self.connected,
            "log_prob": self.log_prob,
            "candidates_checked": self.candidates_checked,
            "notes": self.notes,
        }


def _identity(arch: Arch) -> Arch:
    return dict(arch)


def _always(arch: Arch) -> bool:
    return True


def select_architecture(
    dist: ArchitectureDistribution,
    budgets: Sequence[Budget],
    *,
    prune: Callable[[Arch], Arch] | None = None,
    is_connected: Callable[[Arch], bool] | None = None,
    n_samples: int = 1000,
    allow_over_budget: bool = False,
) -> Selection:
    """The architecture to export.

    1. The deterministic architecture (keep-probability > 0.5, argmax elsewhere), pruned, if it is connected and
       within every budget.
    2. Otherwise the most probable (under the learned distribution) of: the deterministic architecture trimmed
       greedily (drop the least probable live gate that keeps the input connected, until every budget holds) and
       ``n_samples`` architectures drawn from the distribution, keeping only connected ones within every budget.
    3. If none qualifies: the connected candidate with the smallest relative excess when ``allow_over_budget``,
       with a warning; otherwise :class:`NoFeasibleArchitecture`.
    """
    prune = prune or _identity
    is_connected = is_connected or _always

    def costs_of(arch: Arch) -> list[float]:
        return [b(arch) for b in budgets]

    def feasible(costs: list[float]) -> bool:
        return all(c <= b.limit for c, b in zip(costs, budgets))

    def excess(costs: list[float]) -> float:
        return max((c / b.limit - 1.0 for c, b in zip(costs, budgets)), default=0.0)

    def make(arch: Arch, method: str, costs: list[float], connected: bool, checked: int) -> Selection:
        with torch.no_grad():
            logp = float(dist.log_prob([arch])[0])
        return Selection(
            arch=arch,
            method=method,
            costs={b.name: c for b, c in zip(budgets, costs)},
            budgets={b.name: b.limit for b in budgets},
            within_budget=feasible(costs),
            connected=connected,
            log_prob=logp,
            candidates_checked=checked,
        )

    mode = prune(dist.mode())
    mode_costs = costs_of(mode)
    mode_connected = is_connected(mode)
    if mode_connected and feasible(mode_costs):
        return make(mode, "deterministic (keep-probability > 0.5, pruned)", mode_costs, True, 1)

    candidates: list[tuple[Arch, str]] = []
    # Greedy trim of the deterministic architecture.
    if mode_connected and dist.gate_labels:
        arch = dict(mode)
        order = sorted(zip(dist.keep_probs().tolist(), dist.gate_labels))
        for _, label in order:
            if feasible(costs_of(arch)):
                break
            if arch.get(label) != "on":
                continue
            trial = dict(arch)
            trial[label] = "off"
            if is_connected(trial):
                arch = prune(trial)
        candidates.append((arch, "deterministic architecture trimmed greedily to the budget"))
    with torch.no_grad():
        sampled, _ = dist.sample(n_samples)
    candidates += [(prune(a), f"most probable of {n_samples} samples within budget") for a in sampled]

    best: tuple[float, Arch, str, list[float]] | None = None
    fallback: tuple[float, Arch, str, list[float]] | None = None
    seen: set[tuple] = set()
    unique: list[tuple[Arch, str]] = []
    for arch, method in candidates:
        key = tuple(sorted((k, str(v)) for k, v in arch.items()))
        if key not in seen:
            seen.add(key)
            unique.append((arch, method))
    with torch.no_grad():
        logps = dist.log_prob([a for a, _ in unique]).tolist() if unique else []
    for (arch, method), lp in zip(unique, logps):
        if not is_connected(arch):
            continue
        costs = costs_of(arch)
        if feasible(costs):
            if best is None or lp > best[0]:
                best = (lp, arch, method, costs)
        else:
            ex = excess(costs)
            if fallback is None or ex < fallback[0]:
                fallback = (ex, arch, method, costs)
    checked = len(unique) + 1
    if best is not None:
        _logger.info("Exporting the %s (log-probability %.3f).", best[2], best[0])
        return make(best[1], best[2], best[3], True, checked)
    detail = ", ".join(f"{b.name} <= {b.limit:.6g}" for b in budgets)
    if allow_over_budget:
        if fallback is None and mode_connected:
            fallback = (excess(mode_costs), mode, "deterministic", mode_costs)
        if fallback is None:
            raise NoFeasibleArchitecture(f"no connected architecture found among {checked} candidates")
        _logger.warning(
            "No connected architecture within %s among %d candidates: exporting the one closest to the budget "
            "(%.1f%% over), because allow_over_budget=True.", detail, checked, 100 * fallback[0])
        sel = make(fallback[1], f"closest to the budget (over budget, allowed): {fallback[2]}", fallback[3], True, checked)
        sel.notes.append(f"over budget by {100 * fallback[0]:.1f}%")
        return sel
    raise NoFeasibleArchitecture(
        f"no connected architecture within {detail} among {checked} candidates drawn from the learned distribution; "
        "train longer, raise the budget or lambda, or pass allow_over_budget=True"
    )
