"""The protocol around user callables."""

from __future__ import annotations

import pytest

from evaluators import CompositeCost, CostEvaluator, MacsCost, as_evaluator
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
