"""The accuracy-cost front of ``nni-bsn compare``: each row's mean test accuracy against its mean MACs, with error
bars of one standard deviation both ways, each run as a faint point, the budgets drawn as vertical lines, and the
legend (outside the axes) naming the rows that failed."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from nni_bsn.jobs.config import BSN_KINDS, DERIVED, FIXED_NAMES, RANDOM_BANDS, row_kind
from nni_bsn.plots import new_figure, save_figure

__all__ = ["plot_front"]

# One colour per family, so that a reader finds BSN, the NNI strategies, random search and the fixed networks.
_FAMILY_COLOURS = {
    "bsn": "#c0392b",
    "bsn-abs": "#7b241c",
    "bsn-abs-warm": "#f1948a",
    "bsn-k2": "#e67e22",
    "bsn-disarm": "#8e44ad",
    "bsn-abs-disarm": "#5b2c6f",
    "bsn-lagrange": "#b7950b",
    "bsn-filled": "#f39c12",
    "bsn-lagrange-filled": "#7d6608",
    "bsn-val": "#d35400",
    "bsn-supernet": "#1e8449",
    "random": "#7f8c8d",
    "fixed": "#111111",
    "nni": "#2e86c1",
}
_MARKERS = "os^Dv<>Ph*Xd"


def _family(name: str) -> str:
    kind = row_kind(name)
    if kind in BSN_KINDS:
        return kind
    if kind in RANDOM_BANDS:
        return "random"
    return "fixed" if name in FIXED_NAMES else "nni"


def _runs(rows: Sequence[Mapping[str, Any]], name: str) -> list[tuple[float, float]]:
    return [(r["macs"], r["test_acc"]) for r in rows if r["name"] == name and r["status"] == "ok"]


def plot_front(
    summary: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    budgets: Mapping[str, float] | None = None,
    title: str = "",
) -> str:
    """Plot the summary's entries (``compare_summary.summarize``) with their runs; ``budgets`` maps a label to a
    MACs limit drawn as a vertical line. The legend, outside the axes, shows each entry with the marker drawn for
    it, and names the entries whose runs failed (an entry without a successful run is listed as failed, not
    drawn). Return ``path``."""
    from matplotlib.lines import Line2D

    fig = new_figure(10.0, 5.5)
    ax = fig.add_subplot()
    shown = [e for e in summary if e["runs"] and e["macs"] and e["test_acc"]]
    handles = []
    for i, e in enumerate(shown):
        colour = _FAMILY_COLOURS.get(_family(e["name"]), _FAMILY_COLOURS["bsn"])
        marker = _MARKERS[i % len(_MARKERS)]
        face = "white" if e["name"].endswith(DERIVED) else colour
        runs = _runs(rows, e["name"])
        if len(runs) > 1:
            ax.scatter(*zip(*runs), s=10, color=colour, alpha=0.25, marker=marker, linewidths=0)
        ax.errorbar(
            e["macs"]["mean"],
            e["test_acc"]["mean"],
            xerr=e["macs"]["std"],
            yerr=e["test_acc"]["std"],
            fmt=marker,
            color=colour,
            markerfacecolor=face,
            markersize=7,
            capsize=3,
            zorder=3,
        )
        failed = f", {e['failed']} failed" if e.get("failed") else ""
        label = f"{e['strategy']} (n={e['runs']}{failed})"
        handles.append(Line2D([], [], ls="none", marker=marker, color=colour, mfc=face, ms=7, label=label))
    lost = [e for e in summary if e not in shown]
    for e in lost:  # no successful run: nothing to draw, but the reader must see that it ran and failed
        label = f"{e['strategy']}: failed ({e.get('failed', 0)} run(s))"
        handles.append(Line2D([], [], ls="none", marker="x", color="#999999", ms=7, label=label))
    _budget_lines(ax, budgets or {})
    costs = [e["macs"]["mean"] for e in shown]
    if costs and min(costs) > 0 and max(costs) / min(costs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("MACs of the retrained network (mean ± std)")
    ax.set_ylabel("test accuracy (mean ± std)")
    ax.grid(True, alpha=0.3)
    failures = f"; failed: {', '.join(e['strategy'] for e in lost)}" if lost else ""
    runs = sum(e["runs"] for e in shown)
    ax.set_title((title or f"test accuracy vs MACs ({runs} runs)") + failures, fontsize=10)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return save_figure(fig, path)


def _budget_lines(ax: Any, budgets: Mapping[str, float]) -> None:
    for label, limit in budgets.items():
        ax.axvline(limit, color="#999999", linestyle="--", linewidth=0.8, zorder=1)
        ax.annotate(
            label,
            (limit, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
            color="#666666",
        )
