"""Choosing with the trained super network: candidates filled to the budget, evolution on a known score, and the
score's BatchNorm bookkeeping."""

from __future__ import annotations

import itertools
import random

import torch
from torch import nn

from nni_bsn.strategy.evolution import Candidates, EvolutionSettings, SupernetScore, evolve

GATES = [f"g{i}" for i in range(10)]


def _candidates(costs: dict[str, float], limit: float, keep: dict[str, float]) -> Candidates:
    def cost(arch):
        return sum(c for g, c in costs.items() if arch[g] == "on")

    def trim(arch):  # the least probable kept gates off until the budget holds
        arch = dict(arch)
        for g in sorted(costs, key=lambda g: keep[g]):
            if cost(arch) > limit and arch[g] == "on":
                arch[g] = "off"
        return arch

    return Candidates(
        options={g: ["off", "on"] for g in costs},
        keep=keep,
        prune=dict,
        fits=lambda arch: cost(arch) <= limit,
        trim=trim,
    )


def test_settle_fills_the_budget_with_the_most_probable_gates_that_fit():
    costs = {f"g{i}": float(i + 1) for i in range(6)}
    keep = {f"g{i}": 0.9 - 0.1 * i for i in range(6)}
    settled = _candidates(costs, 10.0, keep).settle({g: "off" for g in costs}, random.Random(0))
    # most probable first: 1 + 2 + 3 + 4 = 10 fills the budget exactly; nothing else fits
    assert [g for g, v in settled.items() if v == "on"] == ["g0", "g1", "g2", "g3"]


def test_evolution_finds_the_best_scored_architecture_within_the_budget():
    rng = random.Random(1)
    weight = {g: rng.random() for g in GATES}
    candidates = _candidates({g: 1.0 for g in GATES}, 3.0, {g: 0.5 for g in GATES})

    def score(arch):
        return sum(weight[g] for g in GATES if arch[g] == "on")

    drawn = [{g: rng.choice(["off", "on"]) for g in GATES} for _ in range(16)]
    arch, value, scored = evolve(drawn, candidates, score, EvolutionSettings(population=16, generations=4))
    best = max(sum(weight[g] for g in c) for c in itertools.combinations(GATES, 3))
    assert value == score(arch) and abs(value - best) < 1e-12
    assert scored < 120  # fewer than every architecture of the budget: C(10, 3)


def test_supernet_score_reestimates_batchnorm_per_candidate_and_restores_the_super_networks():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model[1].running_mean.fill_(5.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 4)
    batches = [(x, torch.randint(0, 3, (64,)))]
    score = SupernetScore(model, run=lambda arch: None, bn_batches=batches, val_batches=batches)
    value = score({})
    assert 0.0 <= value <= 1.0 and score.scored == 1
    assert torch.allclose(model[1].running_mean, model[0](x).detach().mean(0), atol=1e-6)
    score.restore()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_supernet_selection_draws_the_same_candidates_whatever_the_runs_random_state():
    from nni.mutable import Categorical

    from nni_bsn.strategy.budget import Budget
    from nni_bsn.strategy.policy import ArchitectureDistribution
    from nni_bsn.strategy.selection import select_with_supernet

    dist = ArchitectureDistribution(
        {g: Categorical(["off", "on"], label=g) for g in GATES}, init_keep_prob=0.4
    )
    budget = Budget(evaluator=lambda arch: sum(arch[g] == "on" for g in GATES), limit=4.0, name="gates")
    weight = {g: (7 * i) % 10 for i, g in enumerate(GATES)}
    runs = []
    for state in (1, 2):  # two DDP ranks whose random states differ
        torch.manual_seed(state)
        seen = []

        def score(arch, seen=seen):
            seen.append(tuple(sorted(arch.items())))
            return float(sum(weight[g] for g in GATES if arch[g] == "on"))

        sel = select_with_supernet(dist, [budget], score, EvolutionSettings(population=6, generations=2))
        runs.append((sel.arch, seen))
    assert runs[0] == runs[1] and len(runs[0][1]) > 1
