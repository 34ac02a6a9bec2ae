"""The search spaces: gate counts, frozen models, pruning of dead gates, sizes against the paper's numbers."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch import nn

from search_spaces import ConvolutionalNeuralFabric, ResNetFabric, Zero, cnf_edge_label


def all_gates(space, value: str = "on") -> dict[str, str]:
    return {label: value for label in space.gate_labels}


def random_arch(space, rng: random.Random, p_on: float = 0.5) -> dict[str, str]:
    return {label: ("on" if rng.random() < p_on else "off") for label in space.gate_labels}


def cnf_gate_count(layers: int, image_size: int) -> int:
    scales = image_size.bit_length()  # log2(image_size) + 1
    return (layers - 1) * (3 * scales - 2) + 2 * (scales - 1)


# ------------------------------------------------------------------------------------------ gate counts


@pytest.mark.parametrize(
    "layers, image_size, expected",
    [(8, 32, 122), (4, 32, 58), (6, 32, 90), (3, 8, 26), (2, 4, 11), (8, 16, cnf_gate_count(8, 16))],
)
def test_cnf_gate_count_is_layers_minus_one_times_three_scales_minus_two_plus_zips(
    layers, image_size, expected
):
    space = ConvolutionalNeuralFabric(layers=layers, channels=2, image_size=image_size, in_channels=1)
    assert len(space.gate_labels) == expected == cnf_gate_count(layers, image_size)
    assert set(space.simplify()) == set(space.gate_labels)
    assert len(set(space.gate_labels)) == len(space.gate_labels)


@pytest.mark.parametrize(
    "units, shortcuts, maps, expected",
    [
        (3, "", (16, 32, 64), 9),
        (3, "slr", (16, 32, 64), 23),
        (5, "", (16, 32, 64), 15),
        (3, "s", (16, 32, 64), 15),
        (1, "slr", (4, 8), 3),
        (2, "slr", (4, 8), 8),
    ],
)
def test_resnet_fabric_gate_count(units, shortcuts, maps, expected):
    space = ResNetFabric(units=units, maps=maps, shortcuts=shortcuts)
    assert len(space.gate_labels) == expected
    assert set(space.simplify()) == set(space.gate_labels)


def test_resnet20_has_272474_parameters_and_nine_gated_branches():
    space = ResNetFabric(units=3, shortcuts="")
    assert len(space.gate_labels) == 9
    assert all(label.startswith("res_") for label in space.gate_labels)
    model = space.freeze(all_gates(space))
    assert sum(p.numel() for p in model.parameters()) == 272_474  # ResNet-20, ~0.27M (He et al. 2016)


# ------------------------------------------------------------------------------------------ frozen models


CNF_CONFIGS = [
    dict(layers=2, channels=4, image_size=4, in_channels=1, num_classes=10),
    dict(layers=3, channels=4, image_size=8, in_channels=1, num_classes=10),
    dict(layers=4, channels=8, image_size=16, in_channels=3, num_classes=100),
    dict(layers=3, channels=2, image_size=32, in_channels=3, num_classes=7),
]
RESNET_CONFIGS = [
    dict(units=1, maps=(4, 8), shortcuts="slr", in_channels=1, num_classes=10),
    dict(units=2, maps=(4, 8, 16), shortcuts="slr", in_channels=3, num_classes=100),
    dict(units=3, maps=(4, 8, 16), shortcuts="", in_channels=3, num_classes=10),
    dict(units=2, maps=(2, 4, 8, 16), shortcuts="sl", in_channels=1, num_classes=5),
]


@pytest.mark.parametrize(
    "config", CNF_CONFIGS, ids=lambda c: f"L{c['layers']}C{c['channels']}x{c['image_size']}"
)
def test_frozen_random_cnf_architectures_output_batch_by_classes(config):
    rng = random.Random(0)
    space = ConvolutionalNeuralFabric(**config)
    size = config["image_size"]
    archs = [all_gates(space, "on"), all_gates(space, "off")] + [random_arch(space, rng) for _ in range(4)]
    for arch in archs:
        model = space.freeze(arch).eval()
        with torch.no_grad():
            out = model(torch.randn(3, config["in_channels"], size, size))
        assert out.shape == (3, config["num_classes"])


@pytest.mark.parametrize(
    "config", RESNET_CONFIGS, ids=lambda c: f"W{c['units']}{c['shortcuts'] or 'plain'}{len(c['maps'])}"
)
def test_frozen_random_resnet_fabric_architectures_output_batch_by_classes(config):
    rng = random.Random(0)
    space = ResNetFabric(**config)
    archs = [all_gates(space, "on"), all_gates(space, "off")] + [random_arch(space, rng) for _ in range(4)]
    for arch in archs:
        model = space.freeze(arch).eval()
        with torch.no_grad():
            out = model(torch.randn(2, config["in_channels"], 16, 16))
        assert out.shape == (2, config["num_classes"])


@pytest.mark.parametrize("kind", ["cnf", "resnet"])
def test_off_gate_computes_nothing_in_the_frozen_model(kind):
    if kind == "cnf":
        space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1)
        containers = [space.edges]
    else:
        space = ResNetFabric(units=2, maps=(4, 8), in_channels=1)
        containers = [space.branches, space.extra]
    calls = {label: 0 for label in space.gate_labels}

    def hook(label):
        def count(module, inputs, output):
            calls[label] += 1

        return count

    for container in containers:
        for label, choice in container.items():
            choice["on"].register_forward_hook(hook(label))
    arch = random_arch(space, random.Random(3))
    assert "on" in arch.values() and "off" in arch.values()
    model = space.freeze(arch).eval()
    with torch.no_grad():
        model(torch.randn(2, 1, 8, 8))
    for label, value in arch.items():
        assert calls[label] == (1 if value == "on" else 0), label
    frozen = {
        name: module
        for c in ("edges", "branches", "extra")
        if hasattr(model, c)
        for name, module in getattr(model, c).items()
    }
    for label, value in arch.items():
        assert isinstance(frozen[label], Zero) == (value == "off")
        if value == "off":
            assert not list(frozen[label].parameters())


# ------------------------------------------------------------------------------------------ pruning


def _cnf_small():
    # 3 layers x 3 scales (4x4, 2x2, 1x1): input node (0, 0), output node (2, 2).
    return ConvolutionalNeuralFabric(layers=3, channels=2, image_size=4, in_channels=1)


def test_cnf_pruning_keeps_a_single_input_output_path_and_turns_dangling_gates_off():
    space = _cnf_small()
    e = cnf_edge_label
    path = {e(0, 0, 1, 0), e(1, 0, 2, 1), e(2, 1, 2, 2)}  # same, down, then the last layer's zip to 1x1
    target_dead = e(0, 0, 1, 1)  # (1, 1) has no 'on' way out: its target never reaches the output
    source_dead = e(1, 2, 2, 2)  # nothing 'on' enters (1, 2): its source is never reached
    chain_dead = {e(0, 0, 0, 1), e(0, 1, 1, 1)}  # reachable, but (1, 1) leads nowhere
    arch = all_gates(space, "off")
    for label in path | {target_dead, source_dead} | chain_dead:
        arch[label] = "on"
    assert space.is_connected(arch)
    pruned = space.prune(arch)
    assert {label for label, v in pruned.items() if v == "on"} == path
    assert set(pruned) == set(arch)
    assert space.prune(pruned) == pruned  # idempotent


def test_cnf_is_connected_is_false_when_the_path_is_broken():
    space = _cnf_small()
    e = cnf_edge_label
    arch = all_gates(space, "off")
    for label in (e(0, 0, 1, 0), e(2, 1, 2, 2), e(0, 0, 1, 1)):  # e(1, 0, 2, 1) missing
        arch[label] = "on"
    assert not space.is_connected(arch)
    assert set(space.prune(arch).values()) == {"off"}
    assert not space.is_connected(all_gates(space, "off"))
    assert space.is_connected(all_gates(space, "on"))


def test_cnf_pruning_keeps_everything_when_all_gates_are_on():
    space = _cnf_small()
    assert space.prune(all_gates(space)) == all_gates(space)


def test_gates_that_reach_no_output_do_not_change_the_frozen_model_function():
    # Gates fed by an unreachable node are not covered here: their bias and BN shift add an input-independent
    # constant, so pruning them changes the function (never what the network extracts from its input).
    torch.manual_seed(0)
    space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=4, in_channels=1)
    e = cnf_edge_label
    arch = all_gates(space, "off")
    for label in (e(0, 0, 1, 0), e(1, 0, 2, 1), e(2, 1, 2, 2), e(0, 0, 1, 1), e(0, 0, 0, 1), e(0, 1, 1, 1)):
        arch[label] = "on"
    pruned = space.prune(arch)
    assert pruned != arch
    model, pruned_model = space.freeze(arch).eval(), space.freeze(pruned).eval()
    kept = pruned_model.state_dict()
    pruned_model.load_state_dict({k: v for k, v in model.state_dict().items() if k in kept})
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        assert torch.allclose(model(x), pruned_model(x), atol=1e-6)


def test_resnet_fabric_architectures_are_always_connected_and_nothing_is_pruned():
    space = ResNetFabric(units=2, maps=(4, 8, 16), shortcuts="slr")
    rng = random.Random(0)
    for arch in [all_gates(space, "off"), all_gates(space)] + [random_arch(space, rng) for _ in range(20)]:
        assert space.is_connected(arch)
        assert space.prune(arch) == arch


# ------------------------------------------------------------------------------------------ MACs


def _fvcore_macs(model: nn.Module, size: int, in_channels: int) -> dict[str, int]:
    from fvcore.nn import FlopCountAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model.eval(), torch.randn(1, in_channels, size, size))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_op = dict(analysis.by_operator())
        by_op["total"] = analysis.total()
    return by_op


def _hand_conv_macs(space: ConvolutionalNeuralFabric, arch: dict[str, str]) -> int:
    """9 * C^2 * H_out * W_out per 'on' edge (up edges at their output resolution), plus stem and classifier."""
    C, size = space.channels, space.image_size
    macs = 9 * space.in_channels * C * size * size + C * space.num_classes
    for (_, scale), sources in space.incoming.items():
        side = size >> scale
        macs += sum(9 * C * C * side * side for _, label in sources if arch[label] == "on")
    return macs


@pytest.mark.parametrize(
    "config", [dict(layers=4, channels=16, image_size=16), dict(layers=3, channels=8, image_size=8)]
)
def test_cnf_conv_macs_equal_the_hand_formula_counted_at_output_resolution(config):
    space = ConvolutionalNeuralFabric(in_channels=3, num_classes=10, **config)
    rng = random.Random(1)
    for arch in [all_gates(space), random_arch(space, rng)]:
        assert _fvcore_macs(space.freeze(arch), config["image_size"], 3).get("conv", 0) == _hand_conv_macs(
            space, arch
        )


def test_full_cnf_8x128_on_32x32_costs_3_275e9_macs():
    # The paper's B-CNF with the up-edge bug (B4) fixed: 3.275e9 MACs (2.219e9 in the original count).
    space = ConvolutionalNeuralFabric(layers=8, channels=128, image_size=32, in_channels=3, num_classes=10)
    arch = all_gates(space)
    macs = _fvcore_macs(space.freeze(arch), 32, 3)
    assert abs(macs["total"] - 3.275e9) / 3.275e9 < 0.01
    assert macs["conv"] == _hand_conv_macs(space, arch)
