"""Latency lookup table: built once, kept on disk, reused; sane costs."""

from __future__ import annotations

import pytest

from evaluators import LatencyCost
from evaluators.blocks import all_gates
from search_spaces import ConvolutionalNeuralFabric


def test_latency_table_is_built_once_and_reused_on_second_bind(tmp_path):
    space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=4, in_channels=1)
    make = lambda: LatencyCost(input_shape=(1, 1, 4, 4), warmup=2, runs=5, sessions=1,  # noqa: E731
                               cache_dir=tmp_path, dynamo=False)
    first = make().bind(space)
    assert first.measured > 0 and first.table_path.exists()
    second = make().bind(space)
    assert second.measured == 0
    arch = all_gates(space)
    assert second(arch) == first(arch) > 0
    assert 0 < first.fixed <= first.min_cost() <= first.full_cost()
    # identical blocks are measured once: fewer table entries than gates
    assert len({first.entries[label] for label in space.gate_labels}) < len(space.gate_labels)
    report = first.validate(n=2, seed=0)
    assert report["n"] == 2 and all(p["measured_ms"] > 0 for p in report["pairs"])


def test_latency_refuses_more_threads_than_cores():
    with pytest.raises(ValueError, match="threads"):
        LatencyCost(threads=10_000)
