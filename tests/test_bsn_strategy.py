"""BSN as an NNI strategy: search, export within budget, only sampled paths run, resume, hub spaces, bad input."""

from __future__ import annotations

import nni
import pytest
import torch
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.space import RawFormatModelSpace
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from evaluators import MacsCost
from nni_bsn import BSN
from nni_bsn.network.training import QUIET_CPU
from search_spaces import ConvolutionalNeuralFabric, ResNetFabric


def evaluator(loaders, max_epochs=1, train_batches=6, val_batches=2, **kwargs):
    train, val, _, info = loaders
    options = dict(
        **QUIET_CPU,
    )
    options.update(kwargs)
    return Classification(
        train_dataloaders=train,
        val_dataloaders=val,
        num_classes=info.num_classes,
        max_epochs=max_epochs,
        limit_train_batches=train_batches,
        limit_val_batches=val_batches,
        **options,
    )


def run(strategy, space, ev):
    strategy(RawFormatModelSpace.from_model(space, ev), SequentialExecutionEngine())
    return next(strategy.list_models())


def small_cnf():
    return ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1)


def test_bsn_exports_a_connected_architecture_within_a_macs_budget(digits_loaders):
    space = small_cnf()
    macs = MacsCost(input_shape=(1, 1, 8, 8))
    strategy = BSN(cost=macs, budget="40%", num_samples=2, arc_learning_rate=0.2, lam=3.0)
    best = run(strategy, space, evaluator(digits_loaders, max_epochs=2))
    arch = best.sample
    bound = macs.bind(small_cnf())
    assert space.is_connected(arch)
    assert bound.cost(arch) <= 0.4 * bound.full_cost() + 1e-6
    report = strategy.report()
    assert report["within_budget"] and report["connected"]
    assert report["costs"]["macs"] == pytest.approx(bound.cost(arch))
    assert report["budgets"]["macs"] == pytest.approx(0.4 * bound.full_cost())
    out = best.executable_model()(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10)


def test_filled_export_on_a_fabric_adds_live_paths_within_the_budget(digits_loaders):
    space = small_cnf()
    macs = MacsCost(input_shape=(1, 1, 8, 8))
    strategy = BSN(cost=macs, budget="40%", select="filled")
    arch = run(strategy, space, evaluator(digits_loaders)).sample
    bound, report = macs.bind(small_cnf()), strategy.report()
    assert "each with its most probable path" in report["method"]
    assert space.prune(arch) == arch and report["within_budget"]
    assert bound.cost(arch) <= 0.4 * bound.full_cost() + 1e-6


def test_only_the_sampled_paths_run_during_training(digits_loaders):
    space = small_cnf()
    calls = {"n": 0}

    def count(module, inputs, output):
        if module.training:
            calls["n"] += 1

    for choice in space.edges.values():
        choice["on"].register_forward_hook(count)
    strategy = BSN(cost=lambda arch: sum(v == "on" for v in arch.values()), budget=10, num_samples=3)
    sampled: list[dict] = []
    strategy.mutate_model(space)
    original = strategy.distribution.sample_parts

    def recording_sample(k=1):
        archs, gate_logp, choice_logp = original(k)
        sampled.extend(archs)
        return archs, gate_logp, choice_logp

    strategy.distribution.sample_parts = recording_sample
    strategy.mutate_model = lambda model: model  # already mutated above
    strategy(
        RawFormatModelSpace.from_model(space, evaluator(digits_loaders, train_batches=3, val_batches=0)),
        SequentialExecutionEngine(),
    )
    assert len(sampled) == 9
    # exactly the gates of the pruned samples run: dead 'on' gates compute nothing either
    assert calls["n"] == sum(sum(v == "on" for v in space.prune(a).values()) for a in sampled)
    assert calls["n"] < sum(sum(v == "on" for v in a.values()) for a in sampled)


def test_bsn_runs_through_nas_experiment_and_exports_a_dict(digits_loaders, tmp_path):
    space = ResNetFabric(units=1, maps=(4, 8), shortcuts="slr", in_channels=1)
    strategy = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="60%", num_samples=2)
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(tmp_path)
    exp = NasExperiment(space, evaluator(digits_loaders, train_batches=3), strategy, config=config)
    exp.run()
    arch = exp.export_top_models(formatter="dict")[0]
    assert set(arch) == set(space.gate_labels)
    assert space.freeze(arch)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert strategy.report()["within_budget"]


def test_two_budgets_at_once_are_both_met(digits_loaders):
    space = small_cnf()
    strategy = BSN(
        cost=[MacsCost(input_shape=(1, 1, 8, 8)), lambda a: sum(v == "on" for v in a.values())],
        budget=["50%", 8],
        num_samples=2,
        arc_learning_rate=0.2,
        lam=3.0,
    )
    run(strategy, space, evaluator(digits_loaders, max_epochs=2))
    report = strategy.report()
    assert report["within_budget"] and len(report["costs"]) == 2
    assert report["costs"]["<lambda>"] <= 8


def test_resume_restores_the_logits_exactly(digits_loaders, tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = BSN(
        cost=lambda a: sum(v == "on" for v in a.values()), budget=5, num_samples=2, arc_learning_rate=0.3
    )
    run(first, small_cnf(), evaluator(digits_loaders, callbacks=[ckpt], enable_checkpointing=True))
    trained = first.distribution.gate_logits.detach().clone()
    assert not torch.allclose(trained, torch.full_like(trained, trained[0].item()))
    state = first.state_dict()
    assert state["ckpt_path"].endswith("last.ckpt")

    restored = {}

    class Capture(Callback):
        def on_train_start(self, trainer, pl_module):
            restored["logits"] = pl_module.distribution.gate_logits.detach().clone()
            restored["history"] = list(pl_module.keep_prob_history)
            restored["epoch"] = trainer.current_epoch

    second = BSN(
        cost=lambda a: sum(v == "on" for v in a.values()), budget=5, num_samples=2, arc_learning_rate=0.3
    )
    space = small_cnf()
    ev = evaluator(digits_loaders, max_epochs=2, callbacks=[Capture()])
    second.initialize(RawFormatModelSpace.from_model(space, ev), SequentialExecutionEngine())
    second.load_state_dict(state)
    second.run()  # restores the checkpoint, then trains the second epoch
    assert restored["epoch"] == 1
    assert torch.equal(restored["logits"], trained)
    assert restored["history"] == first.oneshot_module.keep_prob_history
    assert len(second.oneshot_module.keep_prob_history) == 2


def _hub_space(hub):
    from nni.nas.hub.pytorch import MobileNetV3Space, NasBench201, ProxylessNAS

    if hub == "nasbench201":
        return NasBench201(stem_out_channels=4, num_modules_per_stack=1, num_labels=10), 16
    if hub == "mobilenetv3":
        return MobileNetV3Space(num_labels=10, width_multipliers=(0.25, 0.5), expand_ratios=(3.0, 6.0)), 32
    return ProxylessNAS(num_labels=10, width_mult=0.25), 32


@pytest.mark.parametrize("hub", ["nasbench201", "mobilenetv3", "proxylessnas"])
def test_bsn_searches_nni_hub_spaces(hub):
    space, size = _hub_space(hub)
    x, y = torch.randn(16, 3, size, size), torch.randint(0, 10, (16,))
    data = torch.utils.data.TensorDataset(x, y)
    ev = Classification(
        train_dataloaders=DataLoader(data, batch_size=8),
        val_dataloaders=DataLoader(data, batch_size=8),
        num_classes=10,
        max_epochs=1,
        **QUIET_CPU,
    )
    values = {label: list(m.grid()) for label, m in space.simplify().items()}

    # Any user callable works as a cost: here, how far each choice is from its first value.
    def rank_cost(arch):
        return float(sum(values[k].index(v) for k, v in arch.items() if v in values[k]))

    strategy = BSN(cost=rank_cost, budget="50%", num_samples=2)
    arch = run(strategy, space, ev).sample
    assert set(arch) == set(values)
    assert strategy.report()["within_budget"]
    fresh, _ = _hub_space(hub)
    model = fresh.freeze(arch)
    model.eval()
    assert model(x[:2]).shape == (2, 10)


class _Unsupported(ModelSpace):
    def __init__(self):
        super().__init__()
        self.x = self.add_mutable(nni.uniform("x", 0.0, 1.0))
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x)


class _Empty(ModelSpace):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x)


class _OneChoice(ModelSpace):
    def __init__(self):
        super().__init__()
        self.op = LayerChoice([torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(1, 2, 5, padding=1)], label="op")

    def forward(self, x):
        return self.op(x)


def test_unsupported_mutables_and_empty_spaces_are_rejected_up_front():
    with pytest.raises(TypeError, match="is not supported"):
        BSN(cost=lambda a: 1.0, budget=1).mutate_model(_Unsupported())
    with pytest.raises(ValueError, match="no choice"):
        BSN(cost=lambda a: 1.0, budget=1).mutate_model(_Empty())
    BSN(cost=lambda a: 1.0, budget=1).mutate_model(_OneChoice())


def test_a_budget_below_the_cheapest_architecture_is_rejected():
    with pytest.raises(ValueError, match="cheapest"):
        BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget=10).mutate_model(small_cnf())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(budget=0), "budget"),
        (dict(budget="-5%"), "budget"),
        (dict(budget=[1, 2]), "budget"),
        (dict(cost=42), "cost"),
        (dict(lam=-1), "lam"),
        (dict(penalty="square"), "penalty"),
        (dict(num_samples=0), "num_samples"),
        (dict(init_keep_prob=1.0), "init_keep_prob"),
        (dict(init_keep_prob="half"), "init_keep_prob"),
        (dict(init_keep_prob=True), "init_keep_prob"),
        (dict(arc_optimizer="rmsprop"), "arc_optimizer"),
        (dict(baseline="median"), "baseline"),
        (dict(warmup_epochs=-1), "warmup_epochs"),
    ],
)
def test_constructor_rejects_bad_arguments_with_a_clear_message(kwargs, match):
    args = dict(cost=lambda a: 1.0, budget=1.0)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        BSN(**args)


@pytest.mark.parametrize("budget", ["50%", "60%", "75%"])
def test_auto_start_puts_the_expected_sampled_cost_at_the_budget(budget):
    """init_keep_prob='auto': the distribution starts where the mean cost the reward sees (pruned samples,
    disconnected ones charged the whole network) meets the budget, checked on fresh samples."""
    from nni_bsn.strategy.budget import charged_costs

    strategy = BSN(cost=MacsCost(input_shape=(1, 1, 16, 16)), budget=budget)
    space = ConvolutionalNeuralFabric(layers=4, channels=16, image_size=16, in_channels=1)
    strategy.mutate_model(space)
    p = strategy.start_keep_prob
    assert 0.5 < p < 0.95
    assert torch.allclose(strategy.distribution.keep_probs(), torch.tensor(p))
    (b,) = strategy.budgets
    torch.manual_seed(1)
    archs, _ = strategy.distribution.sample(400)
    mean = sum(charged_costs(a, [b], space.is_connected)[0] for a in archs) / len(archs)
    assert 0.8 * b.limit <= mean <= 1.1 * b.limit
    # One step (0.025) higher would overshoot: 'auto' took the largest keep-probability that fits.
    strategy.distribution.set_keep_prob(p + 0.05)
    archs, _ = strategy.distribution.sample(400)
    assert sum(charged_costs(a, [b], space.is_connected)[0] for a in archs) / len(archs) > b.limit


def test_auto_start_without_a_binding_budget_is_the_papers_and_a_number_is_kept():
    space = small_cnf()
    loose = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="100%")
    loose.mutate_model(space)
    assert loose.start_keep_prob == pytest.approx(0.95)
    fixed = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="50%", init_keep_prob=0.7)
    fixed.mutate_model(small_cnf())
    assert fixed.start_keep_prob == 0.7
    assert torch.allclose(fixed.distribution.keep_probs(), torch.tensor(0.7))


def test_calibrate_keep_prob_on_an_additive_cost_and_past_the_valley():
    from nni_bsn.strategy.budget import calibrate_keep_prob

    labels = [f"g{i}" for i in range(20)]

    def count(arch):
        return [float(sum(v == "on" for v in arch.values()))]

    # Expected cost 20p: the largest grid level with 20p <= 8 is p = 0.4 (sampling noise allowed).
    p, ratio = calibrate_keep_prob(labels, [], [], count, [8.0], samples=512)
    assert 0.35 <= p <= 0.45 and ratio <= 1.0

    # Charged in full below 10 gates (like a disconnected fabric): no level meets 5, the valley's bottom is returned.
    def valley(arch):
        n = count(arch)[0]
        return [n if n >= 10 else 20.0]

    p, ratio = calibrate_keep_prob(labels, [], [], valley, [5.0], samples=512)
    assert 0.45 <= p <= 0.65 and ratio > 1.0
    # Other choices are drawn uniformly and passed in the architecture.
    seen = set()
    calibrate_keep_prob(labels[:2], [["a", "b"]], ["op"], lambda a: seen.add(a["op"]) or [1.0], [2.0])
    assert seen == {"a", "b"}


def test_repr_shows_the_arguments():
    text = repr(BSN(cost=MacsCost(), budget="25%", lam=2.0))
    assert text.startswith("BSN(") and "budget='25%'" in text and "lam=2.0" in text


def test_option_defaults_are_the_signatures_and_match_the_measured_values():
    defaults = BSN.option_defaults()
    assert defaults["lam"] == 2.0 and defaults["arc_learning_rate"] == 0.1  # what the README results used
    assert not {"cost", "budget", "mutation_hooks", "self"} & set(defaults)
    strategy = BSN(cost=MacsCost(), budget="25%")
    assert {**strategy.kwargs, "init_keep_prob": strategy.init_keep_prob} == defaults
    assert list(strategy.kwargs) == [k for k in defaults if k != "init_keep_prob"]  # what the module receives
    text = repr(strategy)
    assert all(f"{k}={v!r}" in text for k, v in defaults.items())
    numbers = BSN(cost=MacsCost(), budget=1, lam=3, arc_learning_rate=1, init_keep_prob=0.5)
    assert type(numbers.kwargs["lam"]) is float and type(numbers.kwargs["arc_learning_rate"]) is float


def test_bsn_works_with_nni_regression_evaluator():
    from nni.nas.evaluator.pytorch import Regression

    x = torch.randn(64, 1, 8, 8)
    y = torch.randn(64, 10)
    data = torch.utils.data.TensorDataset(x, y)
    ev = Regression(
        train_dataloaders=DataLoader(data, batch_size=16),
        val_dataloaders=DataLoader(data, batch_size=32),
        max_epochs=1,
        **QUIET_CPU,
    )
    strategy = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="70%", num_samples=2)
    arch = run(strategy, small_cnf(), ev).sample
    assert small_cnf().is_connected(arch)
    assert "val_mse" in strategy.oneshot_module.trainer.callback_metrics
