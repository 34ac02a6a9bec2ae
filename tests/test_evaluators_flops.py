"""MACs and parameter counts: exact against fvcore / numel on the frozen pruned model, and fast per call."""

from __future__ import annotations

import random
import statistics
import time

import pytest
import torch

from evaluators import CompositeCost, MacsCost, ParamsCost
from evaluators.blocks import all_gates, random_arch
from evaluators.counting.flops import fvcore_macs
from search_spaces import ConvolutionalNeuralFabric, ResNetFabric

SPACES = {
    "cnf": (
        lambda: ConvolutionalNeuralFabric(layers=4, channels=8, image_size=8, in_channels=1),
        (1, 1, 8, 8),
    ),
    "resnet_fabric": (lambda: ResNetFabric(units=2, maps=(8, 16), shortcuts="slr"), (1, 3, 8, 8)),
}


@pytest.fixture(scope="module", params=sorted(SPACES))
def bound(request):
    make, shape = SPACES[request.param]
    space = make()
    return space, shape, MacsCost(input_shape=shape).bind(space), ParamsCost().bind(space)


def test_macs_and_params_of_pruned_arch_equal_fvcore_and_numel_on_frozen_model(bound):
    space, shape, macs, params = bound
    assert macs.mode == params.mode == "additive"
    rng = random.Random(0)
    for i in range(15):
        arch = random_arch(space, rng, p_on=0.3 + 0.05 * i)
        frozen = space.freeze(space.prune(arch))
        assert macs(arch) == fvcore_macs(frozen, shape)
        assert params(arch) == sum(p.numel() for p in frozen.parameters())


def test_full_and_min_cost_bracket_every_connected_arch(bound):
    space, shape, macs, params = bound
    full = space.freeze(all_gates(space))
    assert macs.full_cost() == fvcore_macs(full, shape)
    assert params.full_cost() == sum(p.numel() for p in full.parameters())
    rng = random.Random(1)
    for _ in range(20):
        arch = random_arch(space, rng, p_on=0.5)
        if space.is_connected(arch):
            assert macs.min_cost() <= macs(arch) <= macs.full_cost()
            assert params.min_cost() <= params(arch) <= params.full_cost()


def test_expected_cost_is_additive_and_differentiable(bound):
    space, _, macs, _ = bound
    labels = space.graph.labels
    assert macs.expected_cost({lb: {"on": 1.0, "off": 0.0} for lb in labels}) == pytest.approx(
        macs.full_cost()
    )
    p = torch.full((len(labels),), 0.5, requires_grad=True)
    e = macs.expected_cost({lb: {"on": p[i], "off": 1 - p[i]} for i, lb in enumerate(labels)})
    e.backward()
    assert torch.allclose(p.grad, torch.tensor([float(macs.per_gate()[lb]) for lb in labels]))


def test_unbound_evaluator_stays_reusable_and_refuses_costs():
    space, shape = SPACES["cnf"][0](), SPACES["cnf"][1]
    unbound = MacsCost(input_shape=shape)
    a, b = unbound.bind(space), unbound.bind(space)
    assert a is not b and not unbound.is_bound and a.is_bound
    with pytest.raises(RuntimeError, match="bind"):
        unbound.full_cost()


def test_composite_reports_every_cost():
    space, shape = SPACES["cnf"][0](), SPACES["cnf"][1]
    costs = CompositeCost([MacsCost(input_shape=shape, verify=0), ParamsCost(verify=0)]).bind(space)
    arch = all_gates(space)
    out = costs(arch)
    assert set(out) == {"macs", "params"} and out["macs"] == costs["macs"].full_cost()
    assert costs.describe()["costs"]["macs"]["unit"] == "MACs"


def test_cost_call_is_far_below_a_millisecond_on_cnf_8x32():
    space = ConvolutionalNeuralFabric(layers=8, channels=4, image_size=32)
    rng = random.Random(0)
    archs = [random_arch(space, rng, p_on=0.8) for _ in range(300)]
    for ev in (MacsCost(verify=0).bind(space), ParamsCost(verify=0).bind(space)):
        times = []
        for arch in archs:
            t0 = time.perf_counter()
            ev(arch)
            times.append(time.perf_counter() - t0)
        assert statistics.median(times) < 0.5e-3


def test_nni_hub_space_without_prune_is_decomposed_per_choice():
    from nni.nas.hub.pytorch import NasBench201

    space = NasBench201(stem_out_channels=4, num_modules_per_stack=1, num_labels=10)
    shape = (1, 3, 8, 8)
    macs, params = MacsCost(input_shape=shape).bind(space), ParamsCost().bind(space)
    assert macs.mode == params.mode == "additive"
    assert macs.min_cost() < macs.full_cost()
    rng = random.Random(0)
    for _ in range(4):
        arch = random_arch(space, rng)
        frozen = space.freeze(arch)
        assert macs(arch) == fvcore_macs(frozen, shape)
        assert params(arch) == sum(p.numel() for p in frozen.parameters())


def test_min_cost_is_the_cheapest_connected_architecture_by_enumeration():
    import itertools

    space = ConvolutionalNeuralFabric(layers=2, channels=2, image_size=4, in_channels=1)  # 11 gates
    labels = space.graph.labels
    archs = [dict(zip(labels, bits)) for bits in itertools.product(("off", "on"), repeat=len(labels))]
    connected = [a for a in archs if space.is_connected(a)]
    for ev in (MacsCost(input_shape=(1, 1, 4, 4), verify=0).bind(space), ParamsCost(verify=0).bind(space)):
        assert ev.min_cost() == min(ev(a) for a in connected)
        assert space.is_connected(ev.min_arch()) and ev(ev.min_arch()) == ev.min_cost()
