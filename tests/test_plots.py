"""Pictures of found architectures and of training: non-empty PNGs for every space kind."""

from __future__ import annotations

import random

import numpy as np
import pytest

from evaluators.blocks import GATE_OFF, GATE_ON
from nni_bsn.plots import draw_architecture, plot_gate_probabilities
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


def test_probability_history_plot_is_written(tmp_path):
    history = [[0.95, 0.9, 0.6], [0.9, 0.5, 0.3], [0.97, 0.2, 0.1]]
    assert open(plot_gate_probabilities(history, ["a", "b", "c"], tmp_path / "p.png"), "rb").read(4) == PNG


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


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots write (each still saved), in order."""
    from nni_bsn import plots
    from nni_bsn.compare import front_plot

    drawn = []
    real_save = plots.save_figure

    def capture(fig, path):
        fig.canvas.draw()  # lay it out, so that the artists' places are final
        drawn.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "save_figure", capture)
    monkeypatch.setattr(front_plot, "save_figure", capture)
    return drawn


def _outside(legend, ax) -> bool:
    return legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_architecture_draws_gates_on_before_pruning_as_pruned_and_counts_as_the_report(tmp_path, figures):
    from nni_bsn.jobs.findings import kept_gates

    space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1)
    labels = list(space.gate_labels)
    rng = random.Random(1)
    det = dict.fromkeys(labels, GATE_OFF)
    while not (space.is_connected(det) and space.prune(det) != det):
        det = {label: GATE_ON if rng.random() < 0.7 else GATE_OFF for label in labels}
    exported = space.prune(det)  # what BSN exports: the deterministic architecture, pruned
    probs = {label: 0.9 if det[label] == GATE_ON else 0.1 for label in labels}
    draw_architecture(space, exported, tmp_path / "a.png", probs=probs)
    ax = figures[0].axes[0]
    kept = kept_gates(space, exported, labels)
    on = sum(v == GATE_ON for v in det.values())
    assert kept < on  # some gates on before pruning were pruned away
    assert f"{kept}/{len(labels)} gates kept ({on} on before pruning, {on - kept} pruned)" in ax.get_title()
    z = [line.get_zorder() for line in ax.lines]  # kept edges at z 3, on-but-pruned at 2, off at 1
    assert (z.count(3), z.count(2), z.count(1)) == (kept, on - kept, len(labels) - on)


def test_gate_probabilities_start_at_epoch_0_and_name_at_most_24_of_50_gates(tmp_path, figures):
    labels = [f"cell{i}/gate" for i in range(50)]
    history = np.clip(0.9 + np.cumsum(np.random.default_rng(0).normal(0, 0.05, (4, 50)), 0), 0, 1).tolist()
    plot_gate_probabilities(history, labels, tmp_path / "g.png", kept=20, start=0.95)
    top, bottom = figures[0].axes[:2]
    (gates,) = top.collections
    starts = {tuple(np.round(segment[0], 6)) for segment in gates.get_segments()}
    assert starts == {(0.0, 0.95)} and len(gates.get_segments()[0]) == 5  # the start, then 4 epochs
    assert top.lines[0].get_xdata()[0] == 0  # the mean too
    names = [t.get_text() for t in bottom.get_yticklabels()]
    assert len(names) == 17 and names[:2] == ["cell0/gate", "cell3/gate"]  # one in 3: at most 24 names
    assert bottom.get_ylabel() == "gate (one in 3 named)"
    assert _outside(top.get_legend(), top)


def test_compare_front_legend_is_outside_shows_the_drawn_markers_and_names_failed_rows(tmp_path, figures):
    from nni_bsn.compare.front_plot import plot_front

    def entry(name, strategy, runs, failed, macs=None, acc=None):
        stats = (lambda v: {"mean": v, "std": 0.01 * v}) if runs else (lambda v: None)
        return {"name": name, "strategy": strategy, "runs": runs, "failed": failed,
                "macs": stats(macs), "test_acc": stats(acc)}  # fmt: skip

    summary = [
        entry("bsn", "BSN", 2, 0, 1e6, 0.9),
        entry("darts", "DARTS", 1, 1, 2e6, 0.92),
        entry("enas", "ENAS", 0, 2),
    ]
    rows = [{"name": "bsn", "status": "ok", "macs": 1e6, "test_acc": 0.9}] * 2
    plot_front(summary, rows, tmp_path / "f.png", budgets={"50% budget": 1.5e6})
    ax = figures[0].axes[0]
    legend = ax.get_legend()
    assert _outside(legend, ax)
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["BSN (n=2)", "DARTS (n=1, 1 failed)", "ENAS: failed (2 run(s))"]
    assert "failed: ENAS" in ax.get_title()
    drawn = [line.get_marker() for line in ax.lines if line.get_marker() not in ("None", "", None, "_", "|")]
    shown = [h.get_marker() for h in legend.legend_handles]
    assert shown[:2] == drawn[:2] and shown[2] == "x"


def test_sweep_plot_has_human_axes_a_curve_through_the_budgets_and_their_limits(tmp_path, figures):
    from nni_bsn.jobs.sweep import plot_sweep

    rows = [
        {"budget": b, "macs": m, "test_acc": a, "budget_cost": "macs", "budget_limit": limit}
        for b, m, a, limit in (("50%", 4e5, 0.9, 5e5), ("10%", 9e4, 0.6, 1e5), ("25%", 2e5, 0.8, 2.5e5))
    ]
    plot_sweep(rows, tmp_path / "s.png")
    ax = figures[0].axes[0]
    assert ax.get_xlabel() == "MACs of the found network" and ax.get_ylabel() == "test accuracy"
    curve, *limits = ax.lines
    assert list(curve.get_xdata()) == [9e4, 2e5, 4e5]  # joined in order of cost
    assert sorted(line.get_xdata()[0] for line in limits) == [1e5, 2.5e5, 5e5]
    assert _outside(ax.get_legend(), ax)


def test_a_cell_space_is_drawn_as_its_dag_with_none_edges_dashed_and_choice_probabilities(tmp_path, figures):
    from matplotlib.patches import FancyArrowPatch

    arch = {
        "cell/0_1": "conv_3x3",
        "cell/0_2": "avg_pool_3x3",
        "cell/1_2": "conv_3x3",
        "cell/0_3": "none",
        "cell/1_3": "skip_connect",
        "cell/2_3": "none",
    }
    draw_architecture(None, arch, tmp_path / "a.png", probs={"cell/0_1": 0.27})
    ax = figures[0].axes[0]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 6 and sum(a.get_linestyle() == "--" for a in arrows) == 2
    texts = {t.get_text() for t in ax.texts}
    assert {"conv_3x3 (0.27)", "skip_connect", "none", "0", "3"} <= texts
    assert ax.get_title() == "cell: 4 of 6 edges carry an operation (node 0 in, node 3 out)"
