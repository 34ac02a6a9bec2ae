"""The architecture distribution, the budgeted reward, its estimators and baselines, and the export selection."""

from __future__ import annotations

import itertools

import pytest
import torch
from nni.mutable import Categorical, CategoricalMultiple

from nni_bsn import BSN
from nni_bsn.strategy.budget import Budget, budget_penalty, parse_budget, resolve_limit
from nni_bsn.strategy.policy import ArchitectureDistribution, is_gate
from nni_bsn.strategy.reward import (
    DUAL_STEP,
    Baseline,
    Multiplier,
    architecture_surrogate,
    budgeted_reward,
    local_penalty_surrogate,
    penalty_differences,
)
from nni_bsn.strategy.selection import NoFeasibleArchitecture, fill_to_budget, select_architecture


def small_space():
    return {
        "g0": Categorical(["off", "on"], label="g0"),
        "g1": Categorical(["off", "on"], label="g1"),
        "g2": Categorical(["off", "on"], label="g2"),
        "op": Categorical(["conv3", "conv5", "skip"], label="op"),
        "inp": CategoricalMultiple([0, 1], n_chosen=1, label="inp"),
    }


def test_gates_are_detected_and_start_at_the_initial_keep_probability():
    dist = ArchitectureDistribution(small_space(), init_keep_prob=0.95)
    assert dist.gate_labels == ["g0", "g1", "g2"]
    assert dist.choice_labels == ["op", "inp"]
    assert torch.allclose(dist.keep_probs(), torch.full((3,), 0.95))
    assert is_gate(Categorical(["on", "off"], label="x")) and not is_gate(Categorical([0, 1], label="y"))


def test_sampled_log_prob_equals_log_prob_of_the_samples():
    dist = ArchitectureDistribution(small_space(), init_keep_prob=0.7)
    archs, logp = dist.sample(50)
    assert len(archs) == 50 and logp.shape == (50,)
    assert torch.allclose(logp, dist.log_prob(archs))
    assert all(isinstance(a["inp"], list) and len(a["inp"]) == 1 for a in archs)
    assert {a["op"] for a in archs} <= {"conv3", "conv5", "skip"}


def test_mode_and_probs_follow_the_logits():
    dist = ArchitectureDistribution(small_space())
    with torch.no_grad():
        dist.gate_logits.copy_(torch.tensor([2.0, -1.0, 0.5]))
        dist.choice_logits[0].copy_(torch.tensor([0.0, 3.0, 0.0]))
    mode = dist.mode()
    assert mode == {"g0": "on", "g1": "off", "g2": "on", "op": "conv5", "inp": [0]}
    probs = dist.probs()
    assert probs["g1"]["on"] == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item())
    assert sum(probs["op"].values()) == pytest.approx(1.0)


def test_entropy_of_uniform_gates_is_log2_per_gate():
    dist = ArchitectureDistribution({"a": Categorical(["off", "on"], label="a")}, init_keep_prob=0.5)
    assert dist.entropy().item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)


def test_encode_rejects_unknown_values_and_missing_labels():
    dist = ArchitectureDistribution(small_space())
    arch = dist.mode()
    with pytest.raises(KeyError, match="g2"):
        dist.log_prob([{k: v for k, v in arch.items() if k != "g2"}])
    with pytest.raises(ValueError, match="outside the search space"):
        dist.log_prob([{**arch, "op": "conv7"}])


@pytest.mark.parametrize(
    "value,expected",
    [
        (5e6, (5e6, False)),
        ("25%", (25.0, True)),
        (" 7.5 % ", (7.5, True)),
        ("1e3", (1000.0, False)),
        (3, (3.0, False)),
    ],
)
def test_parse_budget_accepts_numbers_and_percentages(value, expected):
    assert parse_budget(value) == expected


@pytest.mark.parametrize("value", [0, -1, "0%", "abc", None, float("nan"), float("inf"), True, "%"])
def test_parse_budget_rejects_bad_values_with_a_clear_message(value):
    with pytest.raises(ValueError, match="budget"):
        parse_budget(value)


def test_penalty_is_normalised_by_the_budget():
    assert budget_penalty([150.0], [100.0], "hinge") == pytest.approx(0.5)
    assert budget_penalty([50.0], [100.0], "hinge") == 0.0
    assert budget_penalty([50.0], [100.0], "abs") == pytest.approx(0.5)
    assert budget_penalty([150.0, 3.0], [100.0, 2.0], "hinge") == pytest.approx(1.0)


def test_lagrange_penalty_is_signed_and_its_multiplier_learns_the_price():
    assert budget_penalty([50.0], [100.0], "lagrange") == pytest.approx(-0.5)
    learned = Multiplier(lam=2.0, learned=True)
    assert float(learned.value) == 0.0
    learned.update([0.5, 0.3])  # the samples exceed the budget: the price rises
    assert float(learned.value) == pytest.approx(DUAL_STEP * 0.4)
    for _ in range(100):  # under it: the price falls, and turns into a subsidy
        learned.update([-1.0])
    assert float(learned.value) == pytest.approx(DUAL_STEP * (0.4 - 100))
    for _ in range(10_000):
        learned.update([-1.0])
    assert float(learned.value) == pytest.approx(-2.0)  # within [-lam, lam]
    for _ in range(10_000):
        learned.update([1.0])
    assert float(learned.value) == pytest.approx(2.0)
    fixed = Multiplier(lam=2.0, learned=False)
    fixed.update([1.0])
    assert float(fixed.value) == 2.0


def test_abs_pushes_a_gate_towards_its_state_and_lagrange_charges_its_cost_either_way():
    """The lock-in of docs/diagnosis.md: at the budget, abs's exact local gradient pushes a dear gate towards
    whichever state the sample has it in; the linear penalty charges the gate its own cost whatever the state."""
    cost = {"a": 40.0, "b": 60.0, "c": 40.0}
    with_a = {"a": "on", "b": "on", "c": "off"}  # both samples cost exactly the budget
    without_a = {"a": "off", "b": "on", "c": "on"}

    def push(kind: str, arch: dict) -> float:
        def penalty_of(x: dict) -> float:
            return budget_penalty([sum(cost[g] for g in x if x[g] == "on")], [100.0], kind)

        return float(penalty_differences([arch], [penalty_of(arch)], ["a"], penalty_of)[0])

    assert push("abs", with_a) == pytest.approx(-0.4)  # negative: towards on, where it is
    assert push("abs", without_a) == pytest.approx(0.4)  # positive: towards off, where it is
    assert push("lagrange", with_a) == pytest.approx(0.4) == push("lagrange", without_a)  # its price, 40/100


def test_reinforce_gradient_equals_the_analytic_gradient_of_the_budgeted_objective():
    """E[grad of the surrogate] = grad of E[loss + lam * penalty], checked against exact enumeration."""
    torch.manual_seed(0)
    space = {f"g{i}": Categorical(["off", "on"], label=f"g{i}") for i in range(3)}
    space["op"] = Categorical(["a", "b", "c"], label="op")
    dist = ArchitectureDistribution(space, init_keep_prob=0.6)
    with torch.no_grad():
        dist.gate_logits.copy_(torch.tensor([0.3, -0.4, 1.0]))
        dist.choice_logits[0].copy_(torch.tensor([0.2, -0.5, 0.1]))
    gate_cost = {"g0": 3.0, "g1": 1.0, "g2": 2.0}
    op_loss = {"a": 0.3, "b": 0.9, "c": 0.5}
    lam, limit = 2.0, 3.5

    def loss(arch):
        return op_loss[arch["op"]] + 0.2 * (arch["g1"] == "off")

    def penalty(arch):  # hinge penalty on a normalised additive cost
        return budget_penalty([sum(c for g, c in gate_cost.items() if arch[g] == "on")], [limit])

    def objective(arch):  # what the reward is the negative of: loss + lam * penalty
        return loss(arch) + lam * penalty(arch)

    every = [
        dict(zip(["g0", "g1", "g2", "op"], v))
        for v in itertools.product(["off", "on"], ["off", "on"], ["off", "on"], "abc")
    ]
    expected = sum(dist.log_prob([a]).exp()[0] * objective(a) for a in every)
    analytic = torch.autograd.grad(expected, list(dist.parameters()))

    k = 40000
    archs, gate_logp, choice_logp = dist.sample_parts(k)
    losses, penalties = torch.tensor([loss(a) for a in archs]), torch.tensor([penalty(a) for a in archs])
    surrogate = architecture_surrogate(
        gate_logp,
        choice_logp,
        losses,
        penalties,
        lam=lam,
        reward_baseline=Baseline("auto"),
        loss_baseline=Baseline("auto"),
    )
    estimate = torch.autograd.grad(surrogate, list(dist.parameters()))
    for a, e in zip(analytic, estimate):
        assert torch.allclose(a, e, atol=0.03), (a, e)


def _gate_space(n):
    return {f"g{i}": Categorical(["off", "on"], label=f"g{i}") for i in range(n)}


def _count_budget(limit):
    return Budget(evaluator=lambda a: float(sum(v == "on" for v in a.values())), limit=limit, name="gates")


def test_selection_exports_the_deterministic_architecture_when_it_fits():
    dist = ArchitectureDistribution(_gate_space(4), init_keep_prob=0.9)
    sel = select_architecture(dist, [_count_budget(4)])
    assert sel.method.startswith("deterministic") and sel.within_budget
    assert sel.arch == {f"g{i}": "on" for i in range(4)}


def test_filled_selection_switches_on_the_most_probable_gates_that_fit():
    dist = ArchitectureDistribution(_gate_space(4), init_keep_prob=0.5)
    with torch.no_grad():  # keep-probabilities 0.9, 0.2, 0.6, 0.4
        dist.gate_logits.copy_(torch.logit(torch.tensor([0.9, 0.2, 0.6, 0.4])))
    cost = {"g0": 10.0, "g1": 20.0, "g2": 30.0, "g3": 40.0}
    budget = Budget(evaluator=lambda a: sum(cost[g] for g in a if a[g] == "on"), limit=85.0, name="c")
    chosen = select_architecture(dist, [budget])
    assert chosen.arch == {"g0": "on", "g1": "off", "g2": "on", "g3": "off"}  # 40 of 85
    filled = fill_to_budget(chosen, dist, [budget])
    # g3 (0.4) fits (80); g1 (0.2) then would not (100): the more probable gate is the one switched on
    assert filled.arch == {"g0": "on", "g1": "off", "g2": "on", "g3": "on"}
    assert filled.within_budget and filled.costs == {"c": 80.0} and "filled" in filled.method
    disconnected = fill_to_budget(chosen, dist, [budget], is_connected=lambda a: a["g3"] == "off")
    assert disconnected.arch == {"g0": "on", "g1": "on", "g2": "on", "g3": "off"}  # never a cut network


def test_filled_selection_on_a_fabric_adds_whole_live_paths_until_no_path_fits():
    from search_spaces import ConvolutionalNeuralFabric

    space = ConvolutionalNeuralFabric(layers=3, channels=1, image_size=4, in_channels=1)
    graph, labels = space.graph, space.gate_labels
    dist = ArchitectureDistribution(
        {g: Categorical(["off", "on"], label=g) for g in labels}, init_keep_prob=0.5
    )
    with torch.no_grad():
        dist.gate_logits.copy_(torch.linspace(-3.0, 3.0, len(labels)))
    cost = {g: 1.0 + i % 3 for i, g in enumerate(labels)}
    budget = Budget(evaluator=lambda a: sum(cost[g] for g in a if a[g] == "on"), limit=12.0, name="c")
    paths = {"prune": graph.prune, "is_connected": graph.is_connected}
    chosen = select_architecture(dist, [budget], **paths)
    single = fill_to_budget(chosen, dist, [budget], **paths)
    filled = fill_to_budget(chosen, dist, [budget], graph=graph, **paths)
    assert filled.within_budget and graph.prune(filled.arch) == filled.arch and "path" in filled.method
    assert filled.costs["c"] >= single.costs["c"]
    weight = dict(zip(labels, (-torch.log(dist.keep_probs())).tolist()))  # the fill's: the most probable path
    for gates in graph.paths_through(filled.arch, weight).values():  # and no other path fits
        assert sum(cost[g] for g in gates) > budget.limit - filled.costs["c"]


def test_selection_finds_a_connected_architecture_within_budget_otherwise():
    dist = ArchitectureDistribution(_gate_space(6), init_keep_prob=0.9)

    def connected(a):  # g0 must be on
        return a["g0"] == "on"

    sel = select_architecture(dist, [_count_budget(2)], is_connected=connected, n_samples=200)
    assert sel.within_budget and sel.connected and sel.arch["g0"] == "on"
    assert sum(v == "on" for v in sel.arch.values()) <= 2


def test_selection_refuses_an_over_budget_export_unless_allowed(caplog):
    dist = ArchitectureDistribution(_gate_space(3), init_keep_prob=0.9)

    def connected(a):
        return all(v == "on" for v in a.values())

    with pytest.raises(NoFeasibleArchitecture, match="allow_over_budget"):
        select_architecture(dist, [_count_budget(1)], is_connected=connected, n_samples=50)
    sel = select_architecture(
        dist, [_count_budget(1)], is_connected=connected, n_samples=50, allow_over_budget=True
    )
    assert not sel.within_budget and sel.connected
    assert "over budget" in sel.method


def _peaked_width_space(n: int, peak: float = 8.0) -> tuple[ArchitectureDistribution, dict]:
    """``n`` width choices (8, 16, 32), the distribution peaked on 32 everywhere: no sample is cheap."""
    space = {f"w{i}": Categorical([8, 16, 32], label=f"w{i}") for i in range(n)}
    dist = ArchitectureDistribution(space)
    with torch.no_grad():
        for logits in dist.choice_logits:
            logits.copy_(torch.tensor([0.0, peak / 2, peak]))
    return dist, space


def test_export_walks_to_an_in_budget_architecture_when_no_sample_fits():
    """NNI's hub-test failure (Autoformer after a 4-image search): every sample over budget although the cheapest
    architecture fits; the walk from the mode to cheaper values finds one, as probable as it can."""
    dist, _ = _peaked_width_space(12)
    width = Budget(evaluator=lambda a: float(sum(a.values())), limit=12 * 20.0, name="width", full=12 * 32.0)
    sel = select_architecture(dist, [width], n_samples=200)
    assert sel.within_budget and sel.method.startswith("the most probable architecture walked")
    # The cheapest way to 240 at the least log-probability: 32 -> 16 costs 4 nats for 16 width, 32 -> 8 costs 8 for
    # 24: eight widths at 16 and four at 32 (= 256) is over, so the walk ends at 240 or just under it.
    assert 12 * 8 <= width(sel.arch) <= 240 and sorted(set(sel.arch.values())) != [8]
    assert sel.log_prob > float(dist.log_prob([{f"w{i}": 8 for i in range(12)}])[0].detach())


def test_export_meets_several_budgets_at_once_and_falls_back_to_the_cheapest():
    dist, _ = _peaked_width_space(6)
    width = Budget(evaluator=lambda a: float(sum(a.values())), limit=6 * 16.0, name="width", full=6 * 32.0)
    wide = Budget(
        evaluator=lambda a: float(sum(v == 32 for v in a.values())), limit=1.0, name="wide", full=6.0
    )
    sel = select_architecture(dist, [width, wide], n_samples=50)
    assert sel.within_budget and width(sel.arch) <= 96 and wide(sel.arch) <= 1
    only_cheapest = Budget(evaluator=lambda a: float(sum(a.values())), limit=48.0, name="width", full=192.0)
    sel = select_architecture(dist, [only_cheapest], n_samples=50)
    assert sel.within_budget and set(sel.arch.values()) == {8}


def test_export_takes_the_exact_cheapest_architecture_of_the_cost_tables_when_walking_cannot_reach_the_budget():
    """A cost no single change lowers (only all choices at 8 together are cheap): the walks stop, the tables'
    ``min_arch`` (what MacsCost/ParamsCost give on spaces without gates) is exact."""
    dist, _ = _peaked_width_space(4)

    class AllOrNothing:
        def __call__(self, arch):
            return 10.0 if set(arch.values()) == {8} else 100.0

        def min_arch(self):
            return {f"w{i}": 8 for i in range(4)}

    sel = select_architecture(dist, [Budget(evaluator=AllOrNothing(), limit=50.0, name="macs")], n_samples=50)
    assert sel.within_budget and set(sel.arch.values()) == {8}
    assert sel.method == "the cheapest architecture on the macs cost tables (exact)"


def test_local_penalty_gradient_plus_reinforce_on_the_loss_equals_the_analytic_gradient():
    """penalty_gradient='local': REINFORCE for the loss + exact per-gate penalty differences is unbiased."""
    torch.manual_seed(1)
    labels = ["g0", "g1", "g2", "g3"]
    dist = ArchitectureDistribution({g: Categorical(["off", "on"], label=g) for g in labels})
    with torch.no_grad():
        dist.gate_logits.copy_(torch.tensor([0.5, 1.5, -0.3, 2.0]))
    cost = {"g0": 1.0, "g1": 3.0, "g2": 2.0, "g3": 4.0}
    budget = Budget(
        evaluator=lambda a: sum(c for g, c in cost.items() if a[g] == "on"), limit=4.0, name="c", full=10.0
    )
    lam = 1.5

    def connected(a):  # g0 is the only way in
        return a["g0"] == "on"

    def loss(a):
        return 1.0 - 0.3 * (a["g1"] == "on") - 0.2 * (a["g3"] == "on") + 0.1 * (a["g2"] == "on")

    module = _module(dist, [budget], lam=lam, is_connected=connected)

    def penalty(a):
        return budget_penalty(module.costs(a), [budget.limit])

    every = [dict(zip(labels, v)) for v in itertools.product(["off", "on"], repeat=4)]
    expected = sum(dist.log_prob([a]).exp()[0] * (loss(a) + lam * penalty(a)) for a in every)
    analytic = torch.autograd.grad(expected, [dist.gate_logits])[0]

    k = 20000
    archs, gate_logp, choice_logp = dist.sample_parts(k)
    penalties = [penalty(a) for a in archs]
    diff = module.penalty_differences(archs, penalties)
    surrogate = architecture_surrogate(
        gate_logp,
        choice_logp,
        torch.tensor([loss(a) for a in archs]),
        torch.tensor(penalties),
        lam=lam,
        reward_baseline=Baseline("auto"),
        loss_baseline=Baseline("auto"),
        local_penalty=local_penalty_surrogate(dist.gate_logits, diff, lam),
        with_choices=False,
    )
    estimate = torch.autograd.grad(surrogate, [dist.gate_logits])[0]
    assert torch.allclose(analytic, estimate, atol=0.02), (analytic, estimate)
    # The disconnecting gate g0 is pushed on: cutting the network is charged the whole super network.
    assert analytic[0] < 0


def _module(dist, budgets, **options):
    """The one-shot module with BSN's default options (``options`` override them)."""
    from nni.nas.evaluator.pytorch.lightning import ClassificationModule

    from nni_bsn.strategy.lightning import BSNLightningModule

    defaults = {k: v for k, v in BSN.option_defaults().items() if k != "init_keep_prob"}
    return BSNLightningModule(ClassificationModule(num_classes=2), dist, budgets, **{**defaults, **options})


def test_the_reward_is_minus_loss_minus_lambda_times_penalty():
    losses, penalties = torch.tensor([0.5, 1.0]), torch.tensor([0.0, 0.25])
    assert torch.equal(budgeted_reward(losses, penalties, 2.0), torch.tensor([-0.5, -1.5]))
    assert torch.equal(budgeted_reward(losses), -losses)


@pytest.mark.parametrize("penalty_gradient", ["local", "reinforce"])
def test_one_arch_step_moves_probability_towards_the_lower_loss_and_the_budget(penalty_gradient):
    """g0 lowers the loss and costs nothing, g1 puts the network over budget: one step of ``_arch_step`` (the
    real reward, surrogate, baselines and optimizer) raises g0's keep-probability and lowers g1's."""
    dist = ArchitectureDistribution(_gate_space(2), init_keep_prob=0.5)
    budget = Budget(evaluator=lambda a: 1.0 + 3.0 * (a["g1"] == "on"), limit=2.0, name="c", full=4.0)
    module = _module(dist, [budget], penalty_gradient=penalty_gradient)
    optimizer = module.configure_architecture_optimizers()
    module.architecture_optimizers = lambda: optimizer  # outside a Trainer
    archs = [dict(zip(["g0", "g1"], v)) for v in itertools.product(["off", "on"], repeat=2)]
    losses = torch.tensor([1.0 - 0.5 * (a["g0"] == "on") for a in archs])
    penalties = torch.tensor([budget_penalty(module.costs(a), [budget.limit]) for a in archs])
    assert penalties.tolist() == [0.0, 1.0, 0.0, 1.0]
    _, rewards = module._arch_step(dist.log_prob(archs), torch.zeros(4), losses, penalties.tolist(), archs)
    p0, p1 = dist.keep_probs().tolist()
    assert p0 > 0.51 and p1 < 0.49, (p0, p1)  # Adam: one step of lr = 0.1 on each logit
    assert torch.equal(rewards, budgeted_reward(losses, penalties, module.multiplier.value))
    assert float(module.reward_baseline.value) == pytest.approx(float(rewards.mean()))
    assert bool(module.loss_baseline.ready) == (penalty_gradient == "local")


def test_baseline_is_leave_one_out_for_several_samples_else_a_moving_average():
    rewards = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(Baseline("auto").of(rewards), torch.tensor([2.5, 2.0, 1.5]))
    ema = Baseline("ema", decay=0.5)
    assert torch.equal(ema.of(rewards), torch.full((3,), 2.0))  # not started yet: the step's own mean
    ema.update(torch.tensor([4.0]))
    ema.update(torch.tensor([2.0]))
    assert float(ema.value) == pytest.approx(3.0) and bool(ema.ready)
    assert torch.equal(ema.of(rewards), torch.full((3,), 3.0))
    single = Baseline("auto")
    single.update(torch.tensor([5.0]))
    assert single.of(torch.tensor([1.0])).tolist() == [5.0]  # one sample: the moving average


def test_checkpoints_keep_both_baselines_by_name_and_old_ones_are_read():
    dist = ArchitectureDistribution(_gate_space(2))
    module = _module(dist, [_count_budget(1)])
    module.reward_baseline.update(torch.tensor([-1.5]))
    module.loss_baseline.update(torch.tensor([-0.5]))
    state = module.state_dict()
    assert {
        "reward_baseline.value",
        "reward_baseline.ready",
        "loss_baseline.value",
        "loss_baseline.ready",
    } <= set(state)
    old = {k: v for k, v in state.items() if "_baseline." not in k}
    old["reward_baseline"], old["baseline_ready"] = torch.tensor([-1.5, -0.5]), torch.tensor([True, True])
    restored = _module(ArchitectureDistribution(_gate_space(2)), [_count_budget(1)])
    checkpoint = {"state_dict": old}
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"])
    assert float(restored.reward_baseline.value) == -1.5 and float(restored.loss_baseline.value) == -0.5
    assert bool(restored.reward_baseline.ready) and bool(restored.loss_baseline.ready)


def test_penalty_differences_flip_each_gate_and_skip_insensitive_ones():
    def penalty_of(a):
        return 1.0 * (a["g0"] == "on") + 2.0 * (a["g1"] == "on")

    archs = [{"g0": "on", "g1": "off"}, {"g0": "off", "g1": "off"}]
    diff = penalty_differences(archs, [penalty_of(a) for a in archs], ["g0", "g1"], penalty_of)
    assert diff.tolist() == [1.0, 2.0]
    only_g0 = penalty_differences(
        archs, [penalty_of(a) for a in archs], ["g0", "g1"], penalty_of, sensitive=lambda a: {"g0"}
    )
    assert only_g0.tolist() == [1.0, 0.0]


def test_resolve_limit_turns_percentages_into_limits_and_rejects_budgets_below_the_cheapest():
    assert resolve_limit((25.0, True), 200.0, None, name="macs") == 50.0
    assert resolve_limit((30.0, False), 200.0, 10.0, name="macs") == 30.0
    with pytest.raises(ValueError) as err:
        resolve_limit((5.0, True), 200.0, 20.0, name="macs", unit="MACs")
    assert str(err.value) == (
        "budget 10 MACs for macs is below the cheapest connected architecture of this space "
        "(20 MACs); raise the budget"
    )
