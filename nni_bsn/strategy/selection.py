"""Choosing the architecture BSN exports: connected, within every budget, as probable as possible."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from evaluators.blocks import GATE_OFF, GATE_ON, arch_key
from evaluators.counting.constrained import most_probable_within
from evaluators.counting.table_extremes import DecompositionError, hashable_value
from nni_bsn.strategy.budget import Budget
from nni_bsn.strategy.evolution import Candidates, EvolutionSettings, evolve
from nni_bsn.strategy.fill import fill_most_probable
from nni_bsn.strategy.policy import ArchitectureDistribution

__all__ = [
    "Selection",
    "fill_to_budget",
    "select_architecture",
    "select_with_supernet",
    "NoFeasibleArchitecture",
]

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


@dataclass
class _Judge:
    """What every step of the selection asks of a candidate: its costs, whether they fit, by how much they miss."""

    dist: ArchitectureDistribution
    budgets: Sequence[Budget]

    def costs(self, arch: Arch) -> list[float]:
        return [b(arch) for b in self.budgets]

    def feasible(self, costs: list[float]) -> bool:
        return all(c <= b.limit for c, b in zip(costs, self.budgets))

    def excess(self, costs: list[float]) -> float:
        return max((c / b.limit - 1.0 for c, b in zip(costs, self.budgets)), default=0.0)

    def selection(
        self, arch: Arch, method: str, costs: list[float], connected: bool, checked: int
    ) -> Selection:
        with torch.no_grad():
            logp = float(self.dist.log_prob([arch])[0])
        return Selection(
            arch=arch,
            method=method,
            costs={b.name: c for b, c in zip(self.budgets, costs)},
            budgets={b.name: b.limit for b in self.budgets},
            within_budget=self.feasible(costs),
            connected=connected,
            log_prob=logp,
            candidates_checked=checked,
        )


def _greedy_trim(
    judge: _Judge, mode: Arch, prune: Callable[[Arch], Arch], is_connected: Callable[[Arch], bool]
) -> Arch:
    """Drop the least probable live gate that keeps the input connected, until every budget holds."""
    arch = dict(mode)
    order = sorted(zip(judge.dist.keep_probs().tolist(), judge.dist.gate_labels))
    for _, label in order:
        if judge.feasible(judge.costs(arch)):
            break
        if arch.get(label) != GATE_ON:
            continue
        trial = {**arch, label: GATE_OFF}
        if is_connected(trial):
            arch = prune(trial)
    return arch


def _options(dist: ArchitectureDistribution) -> list[tuple[str, list[Any], list[float]]]:
    """Every label with its values (as they appear in an architecture) and their log-probabilities."""
    out = []
    for label, p in zip(dist.gate_labels, dist.keep_probs().tolist()):
        out.append((label, [GATE_OFF, GATE_ON], [math.log(max(1.0 - p, 1e-12)), math.log(max(p, 1e-12))]))
    for label, values, logits in zip(dist.choice_labels, dist.choice_options(), dist.choice_logits):
        out.append((label, values, torch.log_softmax(logits.detach(), -1).tolist()))
    return out


def _over(judge: _Judge, costs: list[float]) -> float:
    """How far ``costs`` are over every budget together (0 when all hold)."""
    return sum(max(0.0, c / b.limit - 1.0) for c, b in zip(costs, judge.budgets))


def _walk(
    judge: _Judge,
    start: Arch,
    prune: Callable[[Arch], Arch],
    is_connected: Callable[[Arch], bool],
    cheapest: bool = False,
) -> tuple[Arch, list[float], int]:
    """From ``start``, change one choice at a time until every budget holds (or no change lowers the excess).

    Each step takes the change that lowers the excess over the budgets (all of them at once) at the smallest loss
    of log-probability per unit of excess removed; with ``cheapest``, the change that lowers it most (the walk
    towards the cheapest architecture, when probability must give way). Returns the architecture, its costs and
    how many candidates were costed. Any space: only cost calls, no sampling.
    """
    options = _options(judge.dist)
    arch, costs, checked = dict(start), judge.costs(start), 0
    while not judge.feasible(costs):
        over, best = _over(judge, costs), None
        for label, values, logps in options:
            now = next((lp for v, lp in zip(values, logps) if v == arch.get(label)), 0.0)
            for value, lp in zip(values, logps):
                trial = {**arch, label: value}
                if value == arch.get(label) or not is_connected(trial):
                    continue
                trial = prune(trial)
                trial_costs = judge.costs(trial)
                checked += 1
                gain = over - _over(judge, trial_costs)
                if gain > 1e-12:
                    rank = -gain if cheapest else (now - lp) / gain
                    if best is None or rank < best[0]:
                        best = (rank, trial, trial_costs)
        if best is None:
            break
        arch, costs = best[1], best[2]
    return arch, costs, checked


def _sampled(
    dist: ArchitectureDistribution, n_samples: int, prune: Callable[[Arch], Arch]
) -> list[tuple[Arch, str]]:
    """``n_samples`` architectures drawn from the distribution, pruned, each with how it was found."""
    # Seeded: the same draws on every DDP rank (and for the same logits, the same export in every run).
    generator = torch.Generator(device=dist.gate_logits.device).manual_seed(0)
    with torch.no_grad():
        sampled, _ = dist.sample(n_samples, generator)
    return [(prune(a), f"most probable of {n_samples} samples within budget") for a in sampled]


_Ranked = tuple[float, Arch, str, list[float]]  # (log-probability or excess, arch, method, costs)


def _rank(
    judge: _Judge, candidates: list[tuple[Arch, str]], is_connected: Callable[[Arch], bool]
) -> tuple[_Ranked | None, _Ranked | None, int]:
    """The most probable connected candidate within budget, the connected one closest to it, and how many were
    checked (distinct candidates plus the deterministic architecture)."""
    first: dict[tuple, tuple[Arch, str]] = {}
    for arch, method in candidates:
        first.setdefault(arch_key(arch), (arch, method))
    unique = list(first.values())
    with torch.no_grad():
        logps = judge.dist.log_prob([a for a, _ in unique]).tolist() if unique else []
    best: _Ranked | None = None
    fallback: _Ranked | None = None
    for (arch, method), lp in zip(unique, logps):
        if not is_connected(arch):
            continue
        costs = judge.costs(arch)
        if judge.feasible(costs):
            if best is None or lp > best[0]:
                best = (lp, arch, method, costs)
        else:
            ex = judge.excess(costs)
            if fallback is None or ex < fallback[0]:
                fallback = (ex, arch, method, costs)
    return best, fallback, len(unique) + 1


def _over_budget(judge: _Judge, fallback: _Ranked | None, checked: int) -> Selection:
    """The connected candidate closest to the budget, with a warning (``allow_over_budget=True``)."""
    if fallback is None:
        raise NoFeasibleArchitecture(f"no connected architecture found among {checked} candidates")
    _logger.warning(
        "No connected architecture within %s among %d candidates: exporting the one closest to the budget "
        "(%.1f%% over), because allow_over_budget=True.",
        _limits(judge.budgets),
        checked,
        100 * fallback[0],
    )
    method = f"closest to the budget (over budget, allowed): {fallback[2]}"
    sel = judge.selection(fallback[1], method, fallback[3], True, checked)
    sel.notes.append(f"over budget by {100 * fallback[0]:.1f}%")
    return sel


def _limits(budgets: Sequence[Budget]) -> str:
    return ", ".join(f"{b.name} <= {b.limit:.6g}" for b in budgets)


def _walked(
    judge: _Judge,
    mode: Arch | None,
    prune: Callable[[Arch], Arch],
    is_connected: Callable[[Arch], bool],
    checked: int,
) -> Selection | None:
    """When no sample fits: the most probable architecture walked to cheaper values until within every budget
    (:func:`_walk`), else the exact cheapest architecture of a budget's cost tables, else the greedy walk towards
    the cheapest; ``None`` if none reaches the budgets."""
    start = mode if mode is not None else prune(judge.dist.mode())
    arch, costs, n = _walk(judge, start, prune, is_connected)
    if judge.feasible(costs) and is_connected(arch):
        method = "the most probable architecture walked to cheaper choices until within budget"
        return judge.selection(arch, method, costs, True, checked + n)
    exact = _cheapest_on_tables(judge, prune, is_connected)
    if exact is not None:
        return judge.selection(*exact, checked + n)
    arch, costs, m = _walk(judge, start, prune, is_connected, cheapest=True)
    if judge.feasible(costs) and is_connected(arch):
        method = "the walk to the cheapest architecture (no more probable one within budget was found)"
        return judge.selection(arch, method, costs, True, checked + n + m)
    return None


def _cheapest_on_tables(
    judge: _Judge, prune: Callable[[Arch], Arch], is_connected: Callable[[Arch], bool]
) -> tuple[Arch, str, list[float], bool] | None:
    """The exact cheapest architecture a budget's cost tables give (``min_arch``, spaces without gates), if it is
    connected and within every budget."""
    for budget in judge.budgets:
        finder = getattr(budget.evaluator, "min_arch", None)
        arch = finder() if callable(finder) else None
        if arch is not None and is_connected(arch):
            arch = prune(arch)
            costs = judge.costs(arch)
            if judge.feasible(costs):
                return (
                    arch,
                    f"the cheapest architecture on the {budget.name} cost tables (exact)",
                    costs,
                    True,
                )
    return None


def _on_tables(judge: _Judge, is_connected: Callable[[Arch], bool]) -> list[tuple[Arch, str]]:
    """On a space without gates whose budget cost is a sum of tables (``label_tables()``): the most probable
    architecture within that budget, exact (branch and bound on the tables, :func:`most_probable_within`) and
    checked against every other budget; ``[]`` where no budget has tables."""
    if judge.dist.gate_labels:  # a gate's cost depends on what is pruned: not a sum over raw gates
        return []
    log_probs = {
        label: {hashable_value(v): lp for v, lp in zip(values, logps)}
        for label, values, logps in _options(judge.dist)
    }
    for budget in judge.budgets:
        tables = getattr(budget.evaluator, "label_tables", lambda: None)()
        if tables is None:
            continue
        try:
            found = most_probable_within(
                tables,
                log_probs,
                budget.limit,
                feasible=lambda a: is_connected(a) and judge.feasible(judge.costs(a)),
            )
        except (DecompositionError, KeyError, ValueError) as e:  # the samples and the walk still choose
            _logger.info("No exact most probable architecture on the %s tables: %s", budget.name, e)
            return []
        if found is None:
            return []
        how = (
            "exact" if found.exact else f"the best of {found.nodes} branch-and-bound nodes, not proven exact"
        )
        return [
            (found.arch, f"most probable architecture within budget on the {budget.name} cost tables ({how})")
        ]
    return []


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
    2. Otherwise the most probable (under the learned distribution) of: on a space without gates whose budget's
       cost is a sum of tables, the most probable architecture within budget found exactly on them
       (:func:`_on_tables`); the deterministic architecture trimmed greedily (drop the least probable live gate
       that keeps the input connected, until every budget holds) and
       ``n_samples`` architectures drawn from the distribution, keeping only connected ones within every budget.
    3. If none qualifies (a short or unlucky search on a space whose choices are not gates): the most probable
       architecture walked one choice at a time to cheaper values until every budget holds (the change costing
       the least log-probability per unit of excess removed), and as the last resort the walk towards the
       cheapest architecture; the method says which rule chose it.
    4. If even that fails: the connected candidate with the smallest relative excess when ``allow_over_budget``,
       with a warning; otherwise :class:`NoFeasibleArchitecture`.
    """
    prune = prune or _identity
    is_connected = is_connected or _always
    judge = _Judge(dist, budgets)

    mode = prune(dist.mode())
    mode_costs = judge.costs(mode)
    mode_connected = is_connected(mode)
    if mode_connected and judge.feasible(mode_costs):
        return judge.selection(mode, "deterministic (keep-probability > 0.5, pruned)", mode_costs, True, 1)

    candidates: list[tuple[Arch, str]] = _on_tables(judge, is_connected)
    if mode_connected and dist.gate_labels:
        trimmed = _greedy_trim(judge, mode, prune, is_connected)
        candidates.append((trimmed, "deterministic architecture trimmed greedily to the budget"))
    candidates += _sampled(dist, n_samples, prune)

    best, fallback, checked = _rank(judge, candidates, is_connected)
    if best is not None:
        _logger.info("Exporting the %s (log-probability %.3f).", best[2], best[0])
        return judge.selection(best[1], best[2], best[3], True, checked)
    walked = _walked(judge, mode if mode_connected else None, prune, is_connected, checked)
    if walked is not None:
        return walked
    if allow_over_budget:
        if fallback is None and mode_connected:
            fallback = (judge.excess(mode_costs), mode, "deterministic", mode_costs)
        return _over_budget(judge, fallback, checked)
    raise NoFeasibleArchitecture(
        f"no connected architecture within {_limits(budgets)} among {checked} candidates drawn from the learned "
        "distribution; train longer, raise the budget or lambda, or pass allow_over_budget=True"
    )


def fill_to_budget(
    selection: Selection,
    dist: ArchitectureDistribution,
    budgets: Sequence[Budget],
    *,
    prune: Callable[[Arch], Arch] | None = None,
    is_connected: Callable[[Arch], bool] | None = None,
    graph: Any = None,
) -> Selection:
    """``selection`` with gates switched on (with ``graph``, each with its path), the most probable first, while the
    network stays connected and within every budget (``select='filled'``; :mod:`nni_bsn.strategy.fill`)."""
    prune, is_connected, judge = prune or _identity, is_connected or _always, _Judge(dist, budgets)
    if not selection.within_budget or not dist.gate_labels:
        return selection  # over a budget (allow_over_budget): nothing to fill
    fits = lambda a: is_connected(a) and judge.feasible(judge.costs(prune(a)))  # noqa: E731
    probs = dict(zip(dist.gate_labels, dist.keep_probs().tolist()))
    arch = prune(fill_most_probable(selection.arch, probs, fits, graph))
    added = sum(v == GATE_ON for v in arch.values()) - sum(v == GATE_ON for v in selection.arch.values())
    how = "each with its most probable path" if hasattr(graph, "paths_through") else "the most probable first"
    method = f"{selection.method}, then filled towards the budget ({added} more gates on, {how})"
    return judge.selection(arch, method, judge.costs(arch), is_connected(arch), selection.candidates_checked)


def select_with_supernet(
    dist: ArchitectureDistribution,
    budgets: Sequence[Budget],
    score: Callable[[Arch], float],
    settings: EvolutionSettings,
    *,
    prune: Callable[[Arch], Arch] | None = None,
    is_connected: Callable[[Arch], bool] | None = None,
) -> Selection:
    """The architecture to export chosen with the trained super network (:func:`~nni_bsn.strategy.evolution.evolve`):
    ``settings.population`` architectures drawn from the distribution, filled towards the budgets, then mutated
    and crossed, each scored by ``score`` (inherited accuracy); the best within every budget."""
    prune = prune or _identity
    is_connected = is_connected or _always
    judge = _Judge(dist, budgets)

    def fits(arch: Arch) -> bool:
        return is_connected(arch) and judge.feasible(judge.costs(arch))

    def trim(arch: Arch) -> Arch:
        return (
            _greedy_trim(judge, arch, prune, is_connected)
            if is_connected(arch) and dist.gate_labels
            else arch
        )

    options = {g: [GATE_OFF, GATE_ON] for g in dist.gate_labels}
    options.update(zip(dist.choice_labels, dist.choice_options()))
    keep = dict(zip(dist.gate_labels, dist.keep_probs().tolist()))
    # Seeded apart from the run's random state, so that every rank of a DDP run draws the same candidates (and
    # reduces the same number of scores).
    devices = [dist.gate_logits.device] if dist.gate_logits.is_cuda else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed)
        drawn, _ = dist.sample(settings.population)
    drawn = [prune(dist.mode()), *drawn]  # the mode first: it is scored whatever the draws
    candidates = Candidates(options, keep, prune, fits, trim)
    arch, value, scored = evolve(drawn, candidates, score, settings)
    sel = judge.selection(
        arch,
        "best inherited accuracy of candidates scored on the super network",
        judge.costs(arch),
        True,
        scored,
    )
    sel.notes.append(
        f"inherited validation accuracy {value:.4f} (BatchNorm re-estimated), {scored} candidates"
    )
    return sel
