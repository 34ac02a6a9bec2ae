"""The fair-comparison baselines: the DARTS paper's derivation, and random architectures of a given cost."""

from __future__ import annotations

import random

import pytest

from evaluators import MacsCost
from evaluators.blocks import GATE_OFF, GATE_ON, choice_values
from nni_bsn.compare.derivation import derive_darts, strongest
from nni_bsn.compare.random_baseline import random_architectures
from search_spaces import ConvolutionalNeuralFabric, ResNetFabric


@pytest.fixture(scope="module")
def cnf():
    return ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1, num_classes=10)


@pytest.fixture(scope="module")
def cnf_macs(cnf):
    return MacsCost(input_shape=(1, 1, 8, 8)).bind(cnf)


def _zero_winning_probs(labels, seed=0):
    rng = random.Random(seed)
    probs = {}
    for label in labels:
        p_on = rng.uniform(0.3, 0.49)  # 'off' wins every argmax, as NNI's DARTS export then finds
        probs[label] = {GATE_OFF: 1 - p_on, GATE_ON: p_on}
    return probs


def test_darts_derivation_keeps_each_nodes_two_strongest_inputs_and_is_connected_where_argmax_is_not(cnf):
    probs = _zero_winning_probs(cnf.gate_labels)
    argmax = {label: max(w, key=w.get) for label, w in probs.items()}
    assert not cnf.is_connected(argmax)
    arch = derive_darts(probs, cnf.graph, k=2)
    assert cnf.is_connected(arch)
    inputs: dict[int, list[str]] = {}
    for _, target, label in cnf.graph.edges:
        if label is not None:
            inputs.setdefault(target, []).append(label)
    for labels in inputs.values():
        kept = [label for label in labels if arch[label] == GATE_ON]
        assert len(kept) == min(2, len(labels))
        weakest_kept = min(probs[label][GATE_ON] for label in kept)
        assert all(probs[label][GATE_ON] <= weakest_kept for label in labels if label not in kept)


def test_darts_derivation_with_one_input_per_node_is_cheaper_and_still_connected(cnf, cnf_macs):
    probs = _zero_winning_probs(cnf.gate_labels, seed=1)
    one, two = derive_darts(probs, cnf.graph, k=1), derive_darts(probs, cnf.graph, k=2)
    assert cnf.is_connected(one)
    assert cnf_macs(one) < cnf_macs(two)


def test_darts_derivation_never_picks_the_zero_candidate_of_a_plain_choice():
    probs = {"edge0": {"none": 0.7, "conv_3x3": 0.2, "skip_connect": 0.1}, "edge1": {"none": 1.0}}
    assert derive_darts(probs) == {"edge0": "conv_3x3", "edge1": "none"}
    assert strongest({"zero": 0.9, "max_pool": 0.05, "avg_pool": 0.05}) in ("max_pool", "avg_pool")


def test_darts_derivation_refuses_missing_gate_weights_and_bad_k(cnf):
    probs = _zero_winning_probs(cnf.gate_labels[1:])
    with pytest.raises(KeyError, match="no architecture weights"):
        derive_darts(probs, cnf.graph)
    with pytest.raises(ValueError, match="k must be"):
        derive_darts(_zero_winning_probs(cnf.gate_labels), cnf.graph, k=0)


@pytest.mark.parametrize("band", [(0.0, 1.0), (0.9, 1.0)])
def test_random_architectures_are_distinct_connected_and_in_the_band(cnf, cnf_macs, band):
    limit = 0.5 * cnf_macs.full_cost()
    draws = random_architectures(
        choice_values(cnf),
        cnf_macs,
        limit,
        5,
        band=band,
        prune=cnf.prune,
        is_connected=cnf.is_connected,
        seed=3,
    )
    assert len(draws) == 5
    assert len({tuple(sorted(d.arch.items())) for d in draws}) == 5
    for d in draws:
        assert cnf.is_connected(d.arch)
        assert d.arch == cnf.prune(d.arch)
        assert d.cost == pytest.approx(cnf_macs(d.arch))
        assert band[0] * limit <= d.cost <= band[1] * limit


def test_random_architectures_use_a_lower_keep_probability_when_the_band_is_rare_at_one_half():
    space = ResNetFabric(units=1, maps=(4, 8, 16), shortcuts="slr", in_channels=1, num_classes=10)
    macs = MacsCost(input_shape=(1, 1, 8, 8)).bind(space)
    cheapest = macs.min_cost()
    draws = random_architectures(
        choice_values(space),
        macs,
        cheapest * 1.001,
        1,
        prune=space.prune,
        is_connected=space.is_connected,
        min_rate=0.5,
    )
    assert draws[0].keep_prob < 0.5
    assert draws[0].cost <= cheapest * 1.001


def test_random_architectures_say_when_the_band_holds_too_few(cnf, cnf_macs):
    with pytest.raises(ValueError, match="found 0 of 3"):
        random_architectures(
            choice_values(cnf),
            cnf_macs,
            cnf_macs.min_cost() * 0.5,
            3,
            prune=cnf.prune,
            is_connected=cnf.is_connected,
            max_draws=500,
        )
