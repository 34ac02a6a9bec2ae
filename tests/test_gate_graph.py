"""GateGraph.sensitive: exactly the gates whose flip changes the pruned architecture."""

from __future__ import annotations

import random

import pytest

from search_spaces import ConvolutionalNeuralFabric, ResNetFabric


@pytest.mark.parametrize(
    "space",
    [
        ConvolutionalNeuralFabric(layers=4, channels=2, image_size=8, in_channels=1),
        ResNetFabric(units=2, maps=(2, 4), shortcuts="slr", in_channels=1),
    ],
    ids=["cnf", "resnet-fabric"],
)
def test_sensitive_gates_are_exactly_those_whose_flip_changes_the_pruned_architecture(space):
    rng = random.Random(0)
    graph = space.graph
    for _ in range(30):
        p = rng.random()
        arch = {label: "on" if rng.random() < p else "off" for label in space.gate_labels}
        pruned = graph.prune(arch)
        sensitive = graph.sensitive(arch)
        for label in space.gate_labels:
            flipped = {**arch, label: "off" if arch[label] == "on" else "on"}
            changed = graph.prune(flipped) != pruned
            assert changed == (label in sensitive), (label, arch[label])
            if label not in sensitive:
                assert graph.is_connected(flipped) == graph.is_connected(arch)
