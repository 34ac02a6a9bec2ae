"""The most probable architecture within a budget, found exactly on a cost's label tables
(``evaluators.counting.constrained``), and BSN's export using it on spaces without gates: checked against brute
force over every architecture."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
from nni.mutable import Categorical

from evaluators.counting.constrained import most_probable_within
from evaluators.counting.flops import space_grid
from evaluators.counting.label_tables import LabelTables
from evaluators.counting.table_extremes import hashable_value
from nni_bsn.strategy.budget import Budget
from nni_bsn.strategy.policy import ArchitectureDistribution
from nni_bsn.strategy.selection import select_architecture
from tests.test_nni_spaces import all_archs, bound_costs


def _brute_force(grid, cost, log_probs, limit) -> float:
    labels = list(grid)
    best = -math.inf
    for combo in itertools.product(*(grid[x] for x in labels)):
        arch = dict(zip(labels, combo))
        if cost(arch) <= limit:
            best = max(best, sum(log_probs[x][hashable_value(arch[x])] for x in labels))
    return best


def _random_log_probs(grid, rng) -> dict:
    out = {}
    for x, values in grid.items():
        w = [rng.random() + 1e-3 for _ in values]
        out[x] = {hashable_value(v): math.log(wi / sum(w)) for v, wi in zip(values, w)}
    return out


@pytest.mark.parametrize("seed", range(12))
def test_pairwise_tables_give_the_brute_force_optimum_and_say_it_is_exact(seed):
    rng = random.Random(seed)
    grid = {f"x{i}": list(range(rng.randint(2, 4))) for i in range(6)}
    tables = {(x,): {v: rng.uniform(0, 10) for v in vs} for x, vs in grid.items()}
    for a, b in (("x0", "x1"), ("x1", "x2"), ("x3", "x5")):
        tables[(a, b)] = {(u, v): rng.uniform(0, 5) for u in grid[a] for v in grid[b]}
    lt = LabelTables(grid, tables, 3.0)
    log_probs = _random_log_probs(grid, rng)
    costs = sorted(lt(dict(zip(grid, c))) for c in itertools.product(*grid.values()))
    limit = costs[rng.randrange(len(costs))]
    found = most_probable_within(lt, log_probs, limit)
    assert found.exact and found.cost <= limit and lt(found.arch) == found.cost
    assert found.log_prob == pytest.approx(_brute_force(grid, lt, log_probs, limit), abs=1e-9)


def test_nothing_fits_below_the_cheapest_architecture():
    grid = {"a": [1, 2], "b": [1, 2]}
    lt = LabelTables(grid, {("a",): {1: 1.0, 2: 2.0}, ("b",): {1: 1.0, 2: 2.0}}, 0.0)
    assert most_probable_within(lt, _random_log_probs(grid, random.Random(0)), 1.5) is None


@pytest.mark.parametrize("name", ["simple", "simple_value_choice", "value_choice", "repeat"])
def test_on_nni_test_spaces_every_limit_gives_the_brute_force_optimum(name):
    """NNI's own test spaces (LayerChoice, InputChoice in NNI's list format, value choices, Repeat depths with
    derived labels), MacsCost's tables: the optimum at every distinct cost as the limit."""
    space, evaluators = bound_costs(name)
    bound = evaluators[0]
    tables = bound.label_tables()
    grid = space_grid(space)
    log_probs = _random_log_probs(grid, random.Random(len(name)))
    for limit in sorted({bound(a) for a in all_archs(space)}):
        found = most_probable_within(tables, log_probs, limit)
        assert found.exact and bound(found.arch) <= limit
        assert found.log_prob == pytest.approx(_brute_force(grid, bound, log_probs, limit), abs=1e-9)
        space.freeze(found.arch)  # in NNI's format


class _WidthTables:
    """A cost on width choices that is a sum of tables over pairs of neighbours (what MacsCost gives a chain of
    convolutions: each one's MACs depend on its input and output widths)."""

    def __init__(self, n: int) -> None:
        grid = {f"w{i}": [8, 16, 32] for i in range(n)}
        pairs = {
            (f"w{i}", f"w{i + 1}"): {(a, b): float(a * b) for a in (8, 16, 32) for b in (8, 16, 32)}
            for i in range(n - 1)
        }
        self.tables = LabelTables(grid, pairs, 0.0)

    def __call__(self, arch) -> float:
        return self.tables(arch)

    def label_tables(self) -> LabelTables:
        return self.tables


def test_bsn_export_takes_the_exact_most_probable_architecture_on_the_tables():
    """No sample of the peaked distribution fits; the export is the brute-force optimum, named as exact."""
    n = 7
    space = {f"w{i}": Categorical([8, 16, 32], label=f"w{i}") for i in range(n)}
    dist = ArchitectureDistribution(space)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for logits in dist.choice_logits:
            logits.copy_(torch.tensor([0.0, 3.0, 6.0]) + torch.randn(3, generator=gen))
    cost = _WidthTables(n)
    budget = Budget(evaluator=cost, limit=6 * 256.0, name="macs", full=6 * 1024.0)
    sel = select_architecture(dist, [budget], n_samples=100)
    assert sel.within_budget and "cost tables (exact)" in sel.method
    grid = cost.tables.grid
    log_probs = {
        f"w{i}": dict(zip((8, 16, 32), torch.log_softmax(dist.choice_logits[i].detach(), -1).tolist()))
        for i in range(n)
    }
    assert sel.log_prob == pytest.approx(_brute_force(grid, cost, log_probs, budget.limit), abs=1e-5)
