"""Pictures of found architectures and of training: non-empty PNGs for every space kind."""

from __future__ import annotations

import random

import numpy as np
import pytest

from evaluators.blocks import GATE_OFF, GATE_ON
from nni_bsn.plots import draw_architecture, plot_accuracy_vs_cost, plot_gate_probabilities
from search_spaces import ConvolutionalNeuralFabric, ResNetFabric

PNG = b"\x89PNG"


def _arch(space):
    rng = random.Random(0)
    return {label: rng.choice([GATE_ON, GATE_OFF]) for label in space.gate_labels}


def test_fabric_pictures_are_written(tmp_path):
    for i, space in enumerate(
        [
            ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1),
            ResNetFabric(units=2, maps=(4, 8, 16), shortcuts="slr", in_channels=1),
        ]
    ):
        arch = _arch(space)
        probs = {label: 0.3 for label in space.gate_labels}
        for name, p in ((f"a{i}.png", None), (f"p{i}.png", probs)):
            path = draw_architecture(space, arch, tmp_path / name, probs=p)
            assert open(path, "rb").read(4) == PNG
    assert len(list(tmp_path.iterdir())) == 4  # written atomically: no temporary file left


def test_other_spaces_get_a_table_of_choices(tmp_path):
    from nni.nas.hub.pytorch import NasBench201

    space = NasBench201(stem_out_channels=4, num_modules_per_stack=1, num_labels=10)
    arch = {label: m.default() for label, m in space.simplify().items()}
    assert open(draw_architecture(space, arch, tmp_path / "t.png"), "rb").read(4) == PNG


def test_probability_history_and_accuracy_cost_plots(tmp_path):
    history = [[0.95, 0.9, 0.6], [0.9, 0.5, 0.3], [0.97, 0.2, 0.1]]
    assert open(plot_gate_probabilities(history, ["a", "b", "c"], tmp_path / "p.png"), "rb").read(4) == PNG
    rows = [
        {"strategy": "BSN", "macs": 1e6, "test_acc": 0.95},
        {"strategy": "DARTS", "macs": 3e6, "test_acc": 0.96},
    ]
    assert open(plot_accuracy_vs_cost(rows, tmp_path / "c.png", cost_key="macs"), "rb").read(4) == PNG


def test_probability_history_of_122_gates_and_a_long_generic_table(tmp_path):
    labels = [f"g{i}" for i in range(122)]
    history = np.clip(0.5 + np.cumsum(np.random.default_rng(0).normal(0, 0.05, (8, 122)), 0), 0, 1).tolist()
    assert open(plot_gate_probabilities(history, labels, tmp_path / "h.png"), "rb").read(4) == PNG
    arch = {f"op{i}": ["conv3", "skip", 4][i % 3] for i in range(100)}
    assert open(draw_architecture(object(), arch, tmp_path / "t.png"), "rb").read(4) == PNG


def test_a_history_that_does_not_match_the_labels_is_refused(tmp_path):
    with pytest.raises(ValueError, match="one per label"):
        plot_gate_probabilities([[0.1, 0.2], [0.3]], ["a", "b"], tmp_path / "bad.png")


def test_both_pictures_count_the_kept_gates_the_same_way(tmp_path, monkeypatch):
    from nni_bsn import plots
    from nni_bsn.jobs.findings import kept_gates

    titles = []
    real_save = plots.save_figure

    def capture(fig, path):
        texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
        titles.extend(t for t in texts if "gates kept" in t or "kept when exported" in t)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "save_figure", capture)
    space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1)
    labels = list(space.gate_labels)
    rng = random.Random(1)
    arch = dict.fromkeys(labels, GATE_OFF)
    while not (space.is_connected(arch) and space.prune(arch) != arch):  # connected, some 'on' gates pruned
        arch = {label: GATE_ON if rng.random() < 0.7 else GATE_OFF for label in labels}
    states = plots._gate_states(space, arch, labels)
    kept = kept_gates(space, arch, labels)
    assert kept == sum(s == "kept" for s in states.values())
    assert kept < sum(arch[label] == GATE_ON for label in labels)  # some 'on' gates are pruned away here
    draw_architecture(space, arch, tmp_path / "a.png")
    plot_gate_probabilities([[0.5] * len(labels)] * 2, labels, tmp_path / "g.png", kept=kept)
    assert len(titles) == 2 and kept > 0
    assert all(f"{kept}/{len(labels)}" in t for t in titles), titles
