"""The protocol around user callables."""

from __future__ import annotations

import pytest

from evaluators import CompositeCost, CostEvaluator, MacsCost, as_evaluator
from evaluators.blocks import GATE_OFF, GATE_ON, is_gate_space, is_gate_values
from search_spaces import ConvolutionalNeuralFabric


def test_user_callable_wrapped_by_as_evaluator_works_like_a_builtin():
    space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=4, in_channels=1)

    def live_gates(arch):
        return sum(v == "on" for v in space.prune(arch).values())

    ev = as_evaluator(live_gates)
    assert isinstance(ev, CostEvaluator) and ev.name == "live_gates"
    bound = ev.bind(space)
    arch = {label: "on" for label in space.gate_labels}
    assert bound(arch) == bound.cost(arch) == float(len(space.gate_labels))
    assert bound.full_cost() == float(len(space.gate_labels))
    assert bound.min_cost() is None
    assert bound.describe()["evaluator"] == "user callable"
    with pytest.raises(NotImplementedError, match="not additive"):
        bound.expected_cost({})
    composite = CompositeCost(
        {"gates": live_gates, "macs": MacsCost(input_shape=(1, 1, 4, 4), verify=0)}
    ).bind(space)
    assert composite(arch)["gates"] == len(space.gate_labels)


def test_as_evaluator_keeps_evaluators_and_rejects_non_callables():
    m = MacsCost()
    assert as_evaluator(m) is m
    with pytest.raises(TypeError, match="callable"):
        as_evaluator(42)


def test_an_architecture_with_unknown_labels_is_a_clear_error():
    import pytest

    from evaluators import MacsCost
    from search_spaces import ConvolutionalNeuralFabric

    space = ConvolutionalNeuralFabric(layers=2, channels=2, image_size=4, in_channels=1)
    macs = MacsCost(input_shape=(1, 1, 4, 4)).bind(space)
    arch = {label: "on" for label in space.gate_labels}
    with pytest.raises(KeyError, match="bogus"):
        macs.cost({**arch, "bogus": "on"})
    missing = dict(arch)
    missing.pop(space.gate_labels[0])
    with pytest.raises(KeyError, match=space.gate_labels[0]):
        macs.cost(missing)


def test_is_gate_values_recognises_exactly_the_off_on_candidates_in_any_order():
    assert is_gate_values(["off", "on"]) and is_gate_values(("on", "off"))
    assert is_gate_values([GATE_OFF, GATE_ON])
    for values in ([], ["on"], ["on", "on"], ["off", "on", "skip"], ["a", "b"], [0, 1], ["Off", "On"]):
        assert not is_gate_values(values), values
    space = ConvolutionalNeuralFabric(layers=2, channels=2, image_size=4, in_channels=1)
    assert all(is_gate_values(m.values) for m in space.simplify().values())
    assert is_gate_space(space)
