"""Pictures of what a search found and how it got there: fabrics with their kept edges, gate probabilities over
epochs (accuracy against cost: :mod:`nni_bsn.compare.front_plot`, and the sweep's in :mod:`nni_bsn.jobs.sweep`).

Every function draws on its own ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state, no window, safe
in threads and on machines without a display), writes the file atomically (a temporary file in the same folder,
then ``os.replace``) and returns its path. The format follows the file extension (``.png`` by default).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.ticker import MaxNLocator

from evaluators.blocks import GATE_OFF, GATE_ON

__all__ = [
    "draw_cnf",
    "draw_resnet_fabric",
    "draw_architecture",
    "plot_gate_probabilities",
]

_log = logging.getLogger(__name__)

KEPT = "#1f3b73"  # dark blue: a gate that is on and on an input -> output path
KEPT_SHORTCUT = (
    "#8e1b5a"  # dark magenta: a kept shortcut block of the ResNet fabric, told apart from branches
)
DEAD = "#e08a2c"  # orange: on, but on no input -> output path (pruned away)
UNUSED = "#c8c8c8"  # light grey: off
PROB_CMAP = "viridis_r"  # keep-probability 0 -> pale yellow, 1 -> dark purple
MAX_TABLE_LINES = 40


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> str:
    """Write ``fig`` to ``path`` atomically; return the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    # A name of our own (not mkstemp, which makes the file private to the user) unique to this process and thread.
    tmp = os.path.join(folder, f".{Path(path).name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            fig.savefig(f, format=fmt)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _gate_states(
    space: Any, arch: Mapping[str, Any], labels: Sequence[str], probs: Mapping[str, float] | None = None
) -> dict[str, str]:
    """``'kept'`` (on and alive after ``space.prune``, as ``report.json``'s ``kept_gates`` counts), ``'dead'`` (on,
    but pruned away: on in ``arch``, or with a keep-probability above 0.5 in ``probs``, the architecture before
    pruning) or ``'off'`` for every gate label."""
    missing = [label for label in labels if label not in arch]
    if missing:
        raise KeyError(
            f"architecture has no value for gate(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    pruned = space.prune(arch) if hasattr(space, "prune") else arch
    states = {}
    for label in labels:
        on = arch[label] == GATE_ON or (probs is not None and probs.get(label, 0.0) > 0.5)
        states[label] = "kept" if pruned[label] == GATE_ON else ("dead" if on else "off")
    return states


def _edge_style(state: str, prob: float | None, cmap: Any) -> dict[str, Any]:
    """Colour, width, dash and z-order of one gated edge: kept edges solid and thick, the others thin and dashed;
    with a keep-probability, the colour comes from the probability and the width grows with it."""
    if prob is None:
        colour = {"kept": KEPT, "dead": DEAD, "off": UNUSED}[state]
        width = {"kept": 2.6, "dead": 1.6, "off": 1.0}[state]
    else:
        colour = cmap(float(np.clip(prob, 0.0, 1.0)))
        # off edges stay thin so that their dotted line never reads as the dashes of a pruned edge
        width = 1.2 if state == "off" else 2.2 + 2.0 * float(np.clip(prob, 0.0, 1.0))
    style = "solid" if state == "kept" else ((0, (1, 1.5)) if state == "off" else (0, (4, 2)))
    z = {"kept": 3, "dead": 2, "off": 1}[state]
    out = {"color": colour, "linewidth": width, "linestyle": style, "zorder": z}
    if prob is not None and state == "kept":
        # A black outline keeps the survivors visible whatever colour their probability gives them.
        out["path_effects"] = [
            patheffects.Stroke(linewidth=width + 2.4, foreground="black"),
            patheffects.Normal(),
        ]
    return out


def _legend_handles(probs: Mapping[str, float] | None) -> list[Line2D]:
    if probs is None:
        return [
            Line2D([], [], color=KEPT, lw=2.6, label="kept (on, on an input-output path)"),
            Line2D([], [], color=DEAD, lw=1.6, ls=(0, (4, 2)), label="on, but pruned (dead end)"),
            Line2D([], [], color=UNUSED, lw=1.0, ls=(0, (1, 1.5)), label="off"),
        ]
    return [
        Line2D([], [], color="k", lw=2.6, label="kept (solid)"),
        Line2D([], [], color="k", lw=1.6, ls=(0, (4, 2)), label="on, but pruned"),
        Line2D([], [], color="k", lw=1.0, ls=(0, (1, 1.5)), label="off (dotted)"),
    ]


def _add_prob_colorbar(fig: Figure, ax: Any, cmap: Any) -> None:
    from matplotlib.cm import ScalarMappable

    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    fig.colorbar(mappable, ax=ax, shrink=0.8, label="keep-probability")


def _title(name: str, states: Mapping[str, str]) -> str:
    kept = sum(s == "kept" for s in states.values())
    on = sum(s != "off" for s in states.values())
    return f"{name}: {kept}/{len(states)} gates kept ({on} on before pruning, {on - kept} pruned)"


def _mark_end(ax: Any, text: str, xy: tuple[float, float], dx: float) -> None:
    """Name the input end (``dx < 0``, arrow in) or the output end (``dx > 0``, arrow out) of a fabric."""
    arrow = {"arrowstyle": "->" if dx < 0 else "<-", "color": "#444444"}
    ax.annotate(
        text,
        xy,
        xytext=(xy[0] + dx, xy[1]),
        ha="right" if dx < 0 else "left",
        va="center",
        fontsize=9,
        arrowprops=arrow,
    )


def _finish(fig: Figure, ax: Any, handles: list, probs: Any, cmap: Any, path: Any, **legend: Any) -> str:
    """The legend (below the picture) and, with probabilities, their colour bar; then write the file."""
    ax.legend(handles=handles, loc="upper center", fontsize=8, frameon=False, **legend)
    if probs is not None:
        _add_prob_colorbar(fig, ax, cmap)
    return save_figure(fig, path)


def _cnf_edges(ax: Any, space: Any, states: Mapping[str, str], probs: Any, cmap: Any) -> set:
    """Draw every CNF edge in its style; the nodes that a kept edge touches."""
    alive_nodes = {(0, 0)}
    for dst, sources in space.incoming.items():
        for src, label in sources:
            st = _edge_style(states[label], None if probs is None else probs.get(label), cmap)
            (x1, y1), (x2, y2) = src, dst
            if x1 == x2:  # zip edge inside a column: bow it to the side so it does not hide the nodes
                bow = -0.18 if x1 == 0 else 0.18
                xs, ys = [x1, x1 + bow, x2], [y1, (y1 + y2) / 2, y2]
            else:
                xs, ys = [x1, x2], [y1, y2]
            ax.plot(xs, ys, solid_capstyle="round", **st)
            if states[label] == "kept":
                alive_nodes.update((src, dst))
    return alive_nodes


def draw_cnf(
    space: Any, arch: Mapping[str, Any], path: str | os.PathLike, probs: Mapping[str, float] | None = None
) -> str:
    """Draw a Convolutional Neural Fabric and which of its edges ``arch`` keeps; return ``path``.

    x is the layer, y the scale (scale 0, full resolution, at the top). Every edge is drawn; kept edges (on after
    ``space.prune(arch)``) are solid and dark, edges that are on but pruned dashed orange, off edges dotted grey.
    With ``probs`` (``{label: keep-probability}``) every edge is coloured by its probability instead, its width
    growing with it, and the line style still tells kept from dropped.
    """
    L, S = space.layers, space.scales
    labels = list(space.gate_labels)
    states = _gate_states(space, arch, labels, probs)
    cmap = colormaps[PROB_CMAP]
    fig = new_figure(max(5.0, 1.25 * L + 2.8), max(3.2, 0.85 * S + 1.6))
    ax = fig.add_subplot()

    alive_nodes = _cnf_edges(ax, space, states, probs, cmap)
    grid = [(layer, scale) for layer in range(L) for scale in range(S)]
    xs, ys = zip(*grid)
    colours = [KEPT if node in alive_nodes else "white" for node in grid]
    ax.scatter(xs, ys, s=70, c=colours, edgecolors="#444444", linewidths=1.0, zorder=5)
    _mark_end(ax, "input", (0, 0), -0.55)
    _mark_end(ax, "classifier", (L - 1, S - 1), 0.55)
    ax.set_xlim(-1.3, L - 1 + 1.6)
    ax.set_ylim(S - 1 + 0.5, -0.5)  # scale 0 at the top
    ax.set_xticks(range(L), [f"layer {layer}" for layer in range(L)], fontsize=8)
    size = getattr(space, "image_size", None)
    ax.set_yticks(
        range(S),
        [f"scale {s}" + (f"\n{size >> s}x{size >> s}" if size else "") for s in range(S)],
        fontsize=8,
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(_title(f"CNF {L} layers x {S} scales", states), fontsize=10)
    return _finish(
        fig,
        ax,
        _legend_handles(probs),
        probs,
        cmap,
        path,
        bbox_to_anchor=(0.5, -0.1 - 0.02 * (S < 4)),
        ncol=3,
    )


def draw_resnet_fabric(
    space: Any, arch: Mapping[str, Any], path: str | os.PathLike, probs: Mapping[str, float] | None = None
) -> str:
    """Draw a ResNet fabric and which of its residual branches and shortcut blocks ``arch`` keeps; return ``path``.

    One row per stage (stage 0 at the top), its input then its units left to right. The main path (identity or
    projection skips, always present) is a thin grey line; each unit's residual branch an arc above it; the
    shortcut blocks between stages go from a unit of the previous stage to a unit of this one. Kept blocks are
    solid and dark (or coloured by ``probs``), dropped ones dotted, on-but-pruned ones dashed.
    """
    W, B = space.units, len(space.maps)
    labels = list(space.gate_labels)
    states = _gate_states(space, arch, labels, probs)
    cmap = colormaps[PROB_CMAP]
    row_gap = 1.6
    fig = new_figure(max(5.0, 1.3 * (W + 1) + 3.0), max(3.2, row_gap * 0.95 * B + 1.8))
    ax = fig.add_subplot()

    def pos(node: tuple[int, int]) -> tuple[float, float]:
        b, n = node
        return float(n + 1), b * row_gap

    def arrow(p: tuple[float, float], q: tuple[float, float], rad: float, **style: Any) -> None:
        arc = {"connectionstyle": f"arc3,rad={rad}", "arrowstyle": "-|>", "mutation_scale": 9}
        ax.add_patch(FancyArrowPatch(p, q, shrinkA=6, shrinkB=6, **arc, **style))

    def style_of(label: str) -> dict[str, Any]:
        st = _edge_style(states[label], None if probs is None else probs.get(label), cmap)
        if probs is None and states[label] == "kept" and label.startswith("sc_"):
            st["color"] = KEPT_SHORTCUT
        return st

    grey = {"color": "#9a9a9a", "linewidth": 1.0, "zorder": 0}
    for b in range(B):
        for n in range(W):
            p, q = pos((b, n - 1)), pos((b, n))
            arrow(p, q, 0.0, **grey)  # main path: skip
            arrow(p, q, -0.55, **style_of(f"res_s{b}u{n}"))  # residual branch, arched up
        if b + 1 < B:  # stage output -> next stage input
            arrow(pos((b, W - 1)), pos((b + 1, -1)), 0.0, linestyle=(0, (2, 3)), **grey)
    for (b, n), sources in space.extra_in.items():
        for src, label in sources:
            arrow(pos(src), pos((b, n)), 0.12, **style_of(label))

    for b in range(B):
        for n in range(-1, W):
            x, y = pos((b, n))
            ax.scatter([x], [y], s=90, c="white", edgecolors="#444444", linewidths=1.0, zorder=6)
            ax.text(x, y + 0.28, "in" if n < 0 else f"u{n}", ha="center", va="top", fontsize=7, zorder=7)
    _mark_end(ax, "stem", pos((0, -1)), -0.8)
    _mark_end(ax, "pool + fc", pos((B - 1, W - 1)), 0.8)
    ax.set_xlim(-1.4, W + 2.2)
    ax.set_ylim((B - 1) * row_gap + 0.7, -0.9)
    ax.set_yticks(
        [b * row_gap for b in range(B)], [f"stage {b}\n{c} ch" for b, c in enumerate(space.maps)], fontsize=8
    )
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    n_res = sum(1 for label in labels if label.startswith("res_") and states[label] == "kept")
    n_sc = sum(1 for label in labels if label.startswith("sc_") and states[label] == "kept")
    ax.set_title(
        _title(f"ResNet fabric {W} units x {B} stages", states)
        + f"\nresidual branches kept {n_res}/{len(space.branches)}, "
        f"shortcut blocks kept {n_sc}/{len(space.extra)}",
        fontsize=10,
    )
    handles = _legend_handles(probs)
    if probs is None:
        handles.insert(1, Line2D([], [], color=KEPT_SHORTCUT, lw=2.6, label="kept shortcut block"))
    return _finish(fig, ax, handles, probs, cmap, path, bbox_to_anchor=(0.5, -0.02), ncol=2)


def _draw_table(
    arch: Mapping[str, Any], path: str | os.PathLike, probs: Mapping[str, float] | None, title: str
) -> str:
    """One line per label, ``label = value``; with ``probs``, a bar of the label's probability beside it."""
    items = list(arch.items())
    shown = items[:MAX_TABLE_LINES]
    hidden = len(items) - len(shown)
    rows = len(shown) + (1 if hidden else 0)
    fig = new_figure(7.0, max(1.6, 0.26 * rows + 1.0))
    ax = fig.add_subplot()
    ax.set_xlim(0, 1)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.axis("off")
    for i, (label, value) in enumerate(shown):
        text = f"{label} = {value!r:.40}" if not isinstance(value, str) else f"{label} = {value[:40]}"
        colour = UNUSED if value == GATE_OFF else "black"
        ax.text(0.0, i, text, ha="left", va="center", fontsize=8, family="monospace", color=colour)
        if probs is not None and label in probs:
            p = float(np.clip(probs[label], 0.0, 1.0))
            ax.barh(i, 0.3 * p, left=0.65, height=0.6, color=KEPT)
            ax.barh(i, 0.3, left=0.65, height=0.6, fill=False, edgecolor="#888888", linewidth=0.6)
            ax.text(0.97, i, f"{p:.2f}", ha="left", va="center", fontsize=7)
    if hidden:
        ax.text(0.0, len(shown), f"... and {hidden} more", ha="left", va="center", fontsize=8, style="italic")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def draw_architecture(
    space: Any, arch: Mapping[str, Any], path: str | os.PathLike, probs: Mapping[str, float] | None = None
) -> str:
    """Draw ``arch`` in the way that suits ``space``: the fabric picture for a CNF or a ResNet fabric, each cell's
    DAG when every label is a cell's edge (NasBench201), otherwise a table of ``label = chosen value`` (first lines
    only when there are many); ``probs``: a gate's keep-probability, or the probability of a choice's chosen value.
    Returns ``path``."""
    from search_spaces import ConvolutionalNeuralFabric, ResNetFabric

    if isinstance(space, ConvolutionalNeuralFabric):
        return draw_cnf(space, arch, path, probs)
    if isinstance(space, ResNetFabric):
        return draw_resnet_fabric(space, arch, path, probs)
    name = type(space).__name__ if space is not None else "architecture"
    from nni_bsn.cell_pictures import cell_edges, draw_cells

    cells = cell_edges(arch)
    if cells is not None:
        return draw_cells(cells, path, probs, f"{name}: {len(arch)} choices")
    return _draw_table(arch, path, probs, f"{name}: {len(arch)} choices")


#: The most gate names written beside the heatmap: more would overlap (every k-th gate is named instead).
MAX_GATE_NAMES = 24


def plot_gate_probabilities(
    history: Sequence[Sequence[float]],
    labels: Sequence[str],
    path: str | os.PathLike,
    kept: int | None = None,
    start: float | Sequence[float] | None = None,
) -> str:
    """Keep-probability of every gate over the epochs; return ``path``.

    ``history[e][i]`` is the keep-probability of gate ``labels[i]`` after epoch ``e`` (drawn at ``e + 1``);
    ``start``, the probability every gate (or each) started at, is drawn at epoch 0. Top: one thin line per gate,
    their mean in bold, and the 0.5 line, the legend outside the axes. Bottom: the same numbers as a heatmap
    (gates x epochs), at most :data:`MAX_GATE_NAMES` gate names beside it. The title adds ``kept``, the exported
    architecture's kept gates (as :func:`draw_architecture` counts them).
    """
    lengths = sorted({len(row) for row in history})
    if not lengths or lengths != [len(labels)]:
        raise ValueError(
            f"plot_gate_probabilities: history must be a non-empty list over epochs of {len(labels)} "
            f"probabilities (one per label), got {len(history)} epoch(s) of lengths {lengths}"
        )
    data = np.asarray(history, dtype=float)
    first = 1
    if start is not None:
        data = np.vstack([np.broadcast_to(np.asarray(start, dtype=float), (len(labels),)), data])
        first = 0
    epochs, gates = data.shape
    x = np.arange(first, first + epochs)
    fig = new_figure(9.0, 7.5 if gates <= 60 else 9.0)
    top, bottom = fig.subplots(2, 1, height_ratios=(1, 1.3 if gates <= 60 else 1.8))

    alpha = float(np.clip(3.0 / math.sqrt(gates), 0.12, 0.8))
    if epochs > 1:
        lines = [np.column_stack([x, data[:, i]]) for i in range(gates)]
        top.add_collection(
            LineCollection(lines, colors="#5b7db1", linewidths=0.8, alpha=alpha, label="a gate")
        )
        top.plot(x, data.mean(axis=1), color="black", lw=2.5, label="mean")
    else:
        top.scatter(np.full(gates, x[0]), data[0], s=10, color="#5b7db1", alpha=alpha, label="a gate")
        top.scatter([x[0]], [data[0].mean()], s=60, color="black", label="mean")
    top.axhline(0.5, color="#c44", lw=0.8, ls="--", label="0.5 (kept above)")
    top.set_xlim(x[0] - 0.2, max(x[-1], x[0] + 1) + 0.2)
    top.set_ylim(-0.02, 1.02)
    for ax in (top, bottom):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_xlabel("epoch" + (" (0: the start)" if start is not None else ""))
    top.set_ylabel("keep-probability")
    title = f"{gates} gates over {len(history)} epoch(s); {int((data[-1] > 0.5).sum())} above 0.5 at the end"
    top.set_title(title + ("" if kept is None else f"; {kept}/{gates} kept when exported"), fontsize=10)
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    extent = (x[0] - 0.5, x[-1] + 0.5, gates - 0.5, -0.5)
    im = bottom.imshow(
        data.T, aspect="auto", interpolation="nearest", cmap=PROB_CMAP, vmin=0, vmax=1, extent=extent
    )
    bottom.set_xlabel("epoch")
    step = math.ceil(gates / MAX_GATE_NAMES)
    named = range(0, gates, step)
    bottom.set_ylabel("gate" + (f" (one in {step} named)" if step > 1 else ""))
    bottom.set_yticks(list(named), [labels[i] for i in named], fontsize=7 if gates <= 60 else 5)
    fig.colorbar(im, ax=bottom, label="keep-probability")
    return save_figure(fig, path)
