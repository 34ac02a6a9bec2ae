"""The distributed cost: the original parallel_K step counts, and the HEFT makespan schedule."""

from __future__ import annotations

import random

import pytest

from evaluators import DistributedCost
from evaluators.blocks import all_gates, random_arch
from search_spaces import ConvolutionalNeuralFabric, ResNetFabric


@pytest.mark.parametrize(
    "layers,expected", [(8, {1: 171, 2: 92, 3: 66, 4: 54, 8: 39}), (4, {1: 83, 2: 46, 4: 29})]
)
def test_steps_mode_reproduces_original_cnf_step_counts(layers, expected):
    space = ConvolutionalNeuralFabric(layers=layers, channels=4, image_size=32)
    for k, steps in expected.items():
        assert DistributedCost(devices=k, mode="steps").bind(space).full_cost() == steps


def test_steps_of_a_disconnected_arch_are_zero_and_pruned_gates_cost_nothing():
    space = ConvolutionalNeuralFabric(layers=4, channels=4, image_size=8)
    ev = DistributedCost(devices=2, mode="steps").bind(space)
    assert ev({label: "off" for label in space.gate_labels}) == 0
    arch = space.prune(random_arch(space, random.Random(3), p_on=0.6))
    dangling = dict(arch, **{"l0s0_l0s1": "on"})  # may or may not be alive: pruning decides, not the raw bit
    assert ev(dangling) == ev(space.prune(dangling))


def test_time_mode_makespan_shrinks_with_devices_and_plan_is_consistent():
    space = ConvolutionalNeuralFabric(layers=4, channels=8, image_size=8, in_channels=1)
    shape = (1, 1, 8, 8)
    one = DistributedCost(devices=1, input_shape=shape).bind(space)
    two = DistributedCost(devices=2, input_shape=shape, latency_ms=0.0, bandwidth_bytes_per_ms=1e12).bind(
        space
    )
    arch = all_gates(space)
    assert two(arch) < one(arch)
    assert one(arch) == pytest.approx(sum(one.work))  # one device: the sum of the work
    plan = two.plan(arch)
    assert plan.makespan == two(arch) and set(plan.device.values()) == {0, 1}
    for v, preds in enumerate(two.dag.preds):
        for p in preds:
            assert plan.finish[two.dag.names[p]] <= plan.start[two.dag.names[v]] + 1e-12
    assert two.min_cost() <= two(arch)


def test_resnet_fabric_block_dag_schedules():
    space = ResNetFabric(units=2, maps=(8, 16), shortcuts="slr")
    steps = [DistributedCost(devices=k, mode="steps").bind(space).full_cost() for k in (1, 2, 4)]
    assert steps[0] >= steps[1] >= steps[2] > 0
    ev = DistributedCost(devices=2, input_shape=(1, 3, 8, 8)).bind(space)
    assert ev(all_gates(space)) > ev.min_cost() > 0


def test_plan_runs_for_real_on_two_gloo_processes_with_the_single_process_output():
    from evaluators.distributed.run import eager_block_ms, run_plan

    space = ConvolutionalNeuralFabric(layers=3, channels=8, image_size=8, in_channels=1)
    shape = (1, 1, 8, 8)
    per_gate, fixed = eager_block_ms(space, shape, runs=5)
    cost = DistributedCost(
        devices=2,
        weights=per_gate,
        fixed_ms=fixed,
        input_shape=shape,
        latency_ms=0.0,
        bandwidth_bytes_per_ms=1e12,
    ).bind(space)
    report = run_plan(space, all_gates(space), cost, shape, repeats=2)
    assert report["devices_used"] == [0, 1] and report["transfers"] > 0
    assert report["max_abs_diff"] < 1e-6
    assert report["measured_ms"] > 0 and report["modelled_ms"] > 0


def test_min_cost_is_the_cheapest_connected_architecture_by_enumeration():
    import itertools

    space = ConvolutionalNeuralFabric(layers=2, channels=2, image_size=4, in_channels=1)  # 11 gates
    labels = space.graph.labels
    archs = [dict(zip(labels, bits)) for bits in itertools.product(("off", "on"), repeat=len(labels))]
    connected = [a for a in archs if space.is_connected(a)]
    for ev in (
        DistributedCost(devices=2, mode="steps").bind(space),
        DistributedCost(devices=2, input_shape=(1, 1, 4, 4)).bind(space),
    ):
        assert ev.min_cost() == pytest.approx(min(ev(a) for a in connected))
