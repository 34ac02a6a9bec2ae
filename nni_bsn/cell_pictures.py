"""Pictures of cell spaces (NasBench201's): each cell as its DAG, one arc per edge with its operation."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from matplotlib.patches import FancyArrowPatch

from nni_bsn import plots

__all__ = ["cell_edges", "draw_cells"]

_CELL_EDGE = re.compile(r"^(?P<cell>.+)/(?P<src>\d+)_(?P<dst>\d+)$")


def cell_edges(arch: Mapping[str, Any]) -> dict[str, list[tuple[int, int, str]]] | None:
    """``{cell: [(from node, to node, operation), ...]}`` when every label names a cell's edge (``cell/i_j``, as
    NasBench201's do), else None."""
    cells: dict[str, list[tuple[int, int, str]]] = {}
    for label, value in arch.items():
        m = _CELL_EDGE.match(label)
        if m is None or int(m["src"]) >= int(m["dst"]):
            return None
        cells.setdefault(m["cell"], []).append((int(m["src"]), int(m["dst"]), str(value)))
    return cells or None


def draw_cells(
    cells: dict[str, list[tuple[int, int, str]]], path: str | os.PathLike, probs: Any, title: str
) -> str:
    """Each cell as its DAG: nodes in order, one arc per edge labelled with its operation (and, with ``probs``
    keyed ``cell/i_j``, the probability the search gave that choice); ``none`` edges light and dashed."""
    fig = plots.new_figure(8.0, 3.4 * len(cells) + 0.6)
    for row, (cell, edges) in enumerate(sorted(cells.items()), start=1):
        ax = fig.add_subplot(len(cells), 1, row)
        nodes = 1 + max(dst for _, dst, _ in edges)
        for src, dst, op in edges:
            cut = op == "none"
            rad = (0.25 * (dst - src - 1) + 0.15) * (-1 if (src + dst) % 2 else 1)
            ax.add_patch(
                FancyArrowPatch(
                    (src, 0),
                    (dst, 0),
                    connectionstyle=f"arc3,rad={rad}",
                    arrowstyle="-|>",
                    mutation_scale=12,
                    color=plots.UNUSED if cut else plots.KEPT,
                    linestyle="--" if cut else "-",
                    linewidth=1.0 if cut else 1.8,
                    shrinkA=9,
                    shrinkB=9,
                )
            )
            p = (probs or {}).get(f"{cell}/{src}_{dst}")
            text = op + (f" ({p:.2f})" if p is not None else "")
            y = -rad * (dst - src) / 2
            ax.text(
                (src + dst) / 2,
                y,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="#888888" if cut else "black",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"},
            )
        ax.scatter(range(nodes), [0] * nodes, s=260, color="white", edgecolor="black", zorder=3)
        for n in range(nodes):
            ax.text(n, 0, str(n), ha="center", va="center", fontsize=8, zorder=4)
        ax.set_xlim(-0.5, nodes - 0.5)
        ax.set_ylim(-1.3, 1.3)
        ax.axis("off")
        kept = sum(op != "none" for *_, op in edges)
        ax.set_title(
            f"{cell}: {kept} of {len(edges)} edges carry an operation (node 0 in, node {nodes - 1} out)",
            fontsize=9,
        )
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)
