"""Choosing with the trained super network (``BSN(select='supernet')``), as Once-for-All and Single-Path One-Shot
do after training theirs: in-budget candidates, drawn from BSN's distribution, filled towards the budget and then
mutated and crossed from the best, each scored by its inherited validation accuracy with BatchNorm re-estimated for
it; the best scored is exported.

Every candidate is scored on the same fixed batches (the same BatchNorm batches, the same validation images), so
that candidates compete on an equal footing; the candidates and the random draws are seeded, so that every rank of
a DDP run, whose validation shards differ, sums the same counts and keeps the same architecture.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evaluators.blocks import GATE_OFF, GATE_ON, arch_key
from nni_bsn.network.evaluation import accuracy_counts, recalibrate_batchnorm
from nni_bsn.strategy.fill import switch_on

__all__ = ["Candidates", "EvolutionSettings", "SupernetScore", "evolve", "supernet_score"]

Arch = dict[str, Any]


@dataclass(frozen=True)
class EvolutionSettings:
    """How many candidates the selection scores: ``population`` per generation over ``generations`` (the first
    drawn from the distribution), BatchNorm re-estimated on ``bn_batches`` training batches per candidate, and
    accuracy on at most ``val_batches`` validation batches (OFA re-estimates BN on 2,000 images; SPOS evolves 20
    generations of 50, sized here for a CPU)."""

    population: int = 16
    generations: int = 4
    bn_batches: int = 16
    val_batches: int = 40
    seed: int = 0


class SupernetScore:
    """Inherited accuracy of an architecture: ``run(arch)`` makes the super network compute it, its BatchNorm
    statistics are re-estimated on the fixed training batches, then its accuracy is read on the fixed validation
    batches (summed over the ranks under DDP). :meth:`restore` puts back the super network's own statistics."""

    def __init__(self, model: nn.Module, run: Callable[[Arch], None], bn_batches: list, val_batches: list):
        self.model, self.run = model, run
        self.bn_batches, self.val_batches = bn_batches, val_batches
        self.bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._saved = [(m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in self.bns]
        self.scored = 0

    def __call__(self, arch: Arch) -> float:
        self.run(arch)
        was_training = self.model.training
        recalibrate_batchnorm(self.model, self.bn_batches, len(self.bn_batches))
        counts = accuracy_counts(self.model, self.val_batches)
        self.model.train(was_training)
        self.scored += 1
        return _ratio(counts)

    def restore(self) -> None:
        for bn, (momentum, state) in zip(self.bns, self._saved):
            bn.load_state_dict(state)
            bn.momentum = momentum


def _ratio(counts: torch.Tensor) -> float:
    """correct / seen, summed over the ranks of a DDP run (on the batches' device: NCCL reduces CUDA tensors)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(counts)
    correct, seen = counts.tolist()
    return correct / max(seen, 1.0)


@dataclass
class _Pool:
    """The candidates scored so far (by architecture), and what makes one admissible."""

    score: Callable[[Arch], float]
    admissible: Callable[[Arch], bool]
    scores: dict[tuple, tuple[float, Arch]] = field(default_factory=dict)

    def add(self, arch: Arch) -> None:
        key = arch_key(arch)
        if key not in self.scores and self.admissible(arch):
            self.scores[key] = (self.score(arch), arch)

    def best(self, k: int) -> list[Arch]:
        ranked = sorted(self.scores.values(), key=lambda s: -s[0])
        return [a for _, a in ranked[:k]]


@dataclass
class Candidates:
    """What makes a candidate: every label's values (``options``), the gates' keep-probabilities (``keep``),
    ``prune`` (what runs), ``fits`` (connected and within every budget) and ``trim`` (brought within the budgets
    by dropping the least probable gates, where it can be)."""

    options: dict[str, list[Any]]
    keep: dict[str, float]
    prune: Callable[[Arch], Arch]
    fits: Callable[[Arch], bool]
    trim: Callable[[Arch], Arch]

    def settle(self, arch: Arch, rng: random.Random) -> Arch:
        """``arch`` pruned, trimmed to the budgets, then filled: gates switched on while every budget still holds,
        in a random order that favours the probable ones (each gate's key ``u ** (1 / p)``, largest first: a
        weighted draw without replacement), so that candidates stay different; a candidate that leaves budget
        unused gives capacity away. Costs count what runs, so a gate that is dead when added costs nothing until a
        later one makes it live (a new path needs several gates); the result is pruned."""
        arch = self.trim(self.prune(arch))
        if not self.fits(arch):
            return arch
        off = [g for g in self.keep if arch.get(g) == GATE_OFF]
        order = sorted(off, key=lambda g: -(rng.random() ** (1.0 / max(self.keep[g], 1e-6))))
        return self.prune(switch_on(arch, order, self.fits))


def _mutate(arch: Arch, options: dict[str, list[Any]], rng: random.Random) -> Arch:
    """Half the time a swap (one kept gate off, one dropped gate on: about the same cost, where a budget binds),
    else each choice changed with probability 1/(number of choices) (a gate flips, another choice takes another
    value at random), at least one."""
    child = dict(arch)
    on = [x for x, v in arch.items() if v == GATE_ON and x in options]
    off = [x for x, v in arch.items() if v == GATE_OFF and x in options]
    if on and off and rng.random() < 0.5:
        child[rng.choice(on)], child[rng.choice(off)] = GATE_OFF, GATE_ON
        return child
    labels = list(options)
    changed = [x for x in labels if rng.random() < 1.0 / len(labels)] or [rng.choice(labels)]
    for x in changed:
        child[x] = rng.choice([v for v in options[x] if v != arch.get(x)] or options[x])
    return child


def _cross(a: Arch, b: Arch, rng: random.Random) -> Arch:
    return {x: a[x] if rng.random() < 0.5 else b.get(x, a[x]) for x in a}


def evolve(
    drawn: list[Arch], candidates: Candidates, score: Callable[[Arch], float], settings: EvolutionSettings
) -> tuple[Arch, float, int]:
    """The best scored architecture, its score and how many were scored; the first generation is ``drawn`` (from
    the distribution), each settled (:meth:`Candidates.settle`), the next ones mutated and crossed from the best
    half."""
    rng = random.Random(settings.seed)
    options = candidates.options

    def settle(arch: Arch) -> Arch:
        return candidates.settle(arch, rng)

    pool = _Pool(score, candidates.fits)
    for arch in drawn[: settings.population]:
        pool.add(settle(arch))
    for _ in range(settings.generations - 1):
        parents = pool.best(max(2, settings.population // 2))
        goal = len(pool.scores) + settings.population
        for i in range(3 * settings.population):  # children already scored or over budget do not count
            if len(pool.scores) >= goal:
                break
            if i % 2 or len(parents) < 2:
                child = _mutate(rng.choice(parents), options, rng)
            else:
                child = _cross(*rng.sample(parents, 2), rng)
            pool.add(settle(child))
    if not pool.scores:
        raise ValueError("no candidate within every budget to score")
    best_score, best = max(pool.scores.values(), key=lambda s: s[0])
    return best, best_score, len(pool.scores)


def supernet_score(module: Any, settings: EvolutionSettings) -> SupernetScore:
    """The inherited-accuracy score on ``module``'s super network (a BSN LightningModule at the end of training):
    the first ``bn_batches`` batches of its training loader for BatchNorm, the first ``val_batches`` of its
    validation loader (or, without one, the training batches after those) for accuracy."""
    trainer, device = module.trainer, module.device
    val_loader = trainer.val_dataloaders
    if isinstance(val_loader, (list, tuple)):
        val_loader = val_loader[0] if val_loader else None
    val = _batches(val_loader, settings.val_batches, device) if val_loader is not None else []
    train = _batches(
        trainer.train_dataloader, settings.bn_batches + (0 if val else settings.val_batches), device
    )
    bn, val = train[: settings.bn_batches], val or train[settings.bn_batches :] or train
    return SupernetScore(module.training_module, module.apply_arch, bn, val)


def _batches(loader: Any, n: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` ``(x, y)`` batches of ``loader`` on ``device`` (BSN's ``{'train': ..., 'val': ...}``
    batches give their training part)."""
    out = []
    for batch in loader:
        if len(out) >= n:
            break
        if isinstance(batch, dict):
            batch = batch["train"]
        out.append((batch[0].to(device), batch[1].to(device)))
    return out
