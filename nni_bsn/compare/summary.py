"""The comparison over seeds and draws: each row's mean and standard deviation, and the targets a search must meet.

Rows of one name (a strategy at every seed; a random-architecture row at every seed and draw) are one entry of
the summary. The targets (``docs/compare.md``): at each budget BSN's mean test accuracy is at least the random
architectures' mean plus one standard deviation, and at least every NNI strategy's that costs no more; at a budget
of at most half the super network, at least the full super network's; and its search takes at most 0.35x DARTS's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from nni_bsn.jobs.config import (
    BSN_KINDS,
    DERIVED,
    RANDOM_BANDS,
    STANDALONE_FIXED,
    STRATEGY_NAMES,
    row_budget,
    row_kind,
    row_label,
)
from nni_bsn.strategy.budget import parse_budget

__all__ = [
    "SUMMARY_FIELDS",
    "summarize",
    "paired_difference",
    "targets",
    "summary_table",
    "targets_markdown",
    "table_head",
]

#: The columns averaged over a row's runs.
SUMMARY_FIELDS = (
    "test_acc",
    "val_acc",
    "inherited_test_acc",
    "macs",
    "params",
    "latency_ms",
    "search_seconds",
    "search_epochs",
    "retrain_seconds",
    "choice_max_prob",
    "choice_entropy",
)
SEARCH_RATIO_TARGET = 0.35  # BSN's search wall-clock over DARTS's


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def summarize(rows: Sequence[dict[str, Any]], full_cost: float | None = None) -> list[dict[str, Any]]:
    """One entry per row name, in the rows' order: runs, failures and their reasons, mean / std of each field.

    ``full_cost`` (the super network's MACs) gives each entry's MACs as a fraction of it.
    """
    names = list(dict.fromkeys(r["name"] for r in rows))
    summary = []
    for name in names:
        group = [r for r in rows if r["name"] == name]
        ok = [r for r in group if r["status"] == "ok"]
        entry: dict[str, Any] = {
            "name": name,
            "strategy": row_label(name),
            "runs": len(ok),
            "failed": len(group) - len(ok),
            "failures": sorted({r["status"] for r in group if r["status"] != "ok"}),
            "seeds": sorted({r.get("seed") for r in ok if r.get("seed") is not None}),
        }
        for field in SUMMARY_FIELDS:
            entry[field] = _stats([float(r[field]) for r in ok if r.get(field) is not None])
        # runs with probabilities to settle (RandomOneShot has none: no "0/3 settled" for it)
        settles = [r["settle"] for r in ok if (r.get("settle") or {}).get("max_prob_per_epoch")]
        entry["settled"] = sum(s["settled_epoch"] is not None for s in settles) if settles else None
        if full_cost and entry["macs"]:
            entry["macs_fraction"] = entry["macs"]["mean"] / full_cost
        entry["test_acc_by_seed"] = _by_seed(ok)
        summary.append(entry)
    return summary


def _by_seed(rows: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Mean test accuracy at each seed (a random row's draws at a seed averaged): what pairs rows by seed."""
    seeds: dict[int, list[float]] = {}
    for r in rows:
        if r.get("seed") is not None and r.get("test_acc") is not None:
            seeds.setdefault(int(r["seed"]), []).append(float(r["test_acc"]))
    return {seed: statistics.fmean(v) for seed, v in sorted(seeds.items())}


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float] | None:
    """``a`` - ``b`` in test accuracy paired by seed (summary entries): mean, std, n and the 95% confidence
    interval of the mean (Student's t); None with fewer than two common seeds."""
    from scipy.stats import t

    seeds = sorted(set(a.get("test_acc_by_seed", {})) & set(b.get("test_acc_by_seed", {})))
    if len(seeds) < 2:
        return None
    diffs = [a["test_acc_by_seed"][s] - b["test_acc_by_seed"][s] for s in seeds]
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    half = float(t.ppf(0.975, len(diffs) - 1)) * std / len(diffs) ** 0.5
    return {"mean": mean, "std": std, "n": len(diffs), "low": mean - half, "high": mean + half}


def _paired_text(diff: dict[str, float] | None) -> str:
    if diff is None:
        return ""
    return (
        f"; paired by seed {diff['mean']:+.4f} ± {diff['std']:.4f}, 95% CI [{diff['low']:+.4f}, "
        f"{diff['high']:+.4f}], n={diff['n']}"
    )


def _mean(entry: dict[str, Any] | None, field: str = "test_acc") -> float | None:
    stats = entry.get(field) if entry else None
    return stats["mean"] if stats else None


def _is_peer(name: str) -> bool:
    """An NNI strategy's row (its export or its DARTS-paper derivation)."""
    base = name.removesuffix(DERIVED)
    return base in STRATEGY_NAMES and base not in BSN_KINDS


def _vs_random(bsn: dict, by_name: dict, budget: str) -> list[dict[str, Any]]:
    found = []
    for kind in RANDOM_BANDS:
        rand = by_name.get(f"{kind}@{budget}")
        if not rand or not rand["test_acc"]:
            continue
        bar = rand["test_acc"]["mean"] + rand["test_acc"]["std"]
        found.append(
            {
                "target": f"{bsn['strategy']} >= {rand['strategy']} mean + 1 std",
                "met": _mean(bsn) >= bar,
                "detail": f"{_mean(bsn):.4f} vs {rand['test_acc']['mean']:.4f} + {rand['test_acc']['std']:.4f} "
                f"= {bar:.4f} ({rand['runs']} architectures){_paired_text(paired_difference(bsn, rand))}",
            }
        )
    return found


def _vs_peers(bsn: dict, summary: Sequence[dict]) -> list[dict[str, Any]]:
    found = []
    for peer in summary:
        if not _is_peer(peer["name"]):
            continue
        if not peer["runs"]:
            found.append(
                {
                    "target": f"{bsn['strategy']} >= {peer['strategy']}",
                    "met": None,
                    "detail": f"{peer['strategy']} failed every run: {'; '.join(peer['failures'])[:200]}",
                }
            )
        elif _mean(peer, "macs") <= _mean(bsn, "macs"):
            found.append(
                {
                    "target": f"{bsn['strategy']} >= {peer['strategy']} (costs no more)",
                    "met": _mean(bsn) >= _mean(peer),
                    "detail": f"{_mean(bsn):.4f} vs {_mean(peer):.4f} at {_mean(peer, 'macs'):,.0f} MACs",
                }
            )
    return found


def _vs_anchors(bsn: dict, by_name: dict) -> list[dict[str, Any]]:
    """BSN against the hand-designed networks of their own that the comparison retrained the same way (two-conv:
    the Fashion-MNIST benchmark's, for a BSN row under 100,000 parameters), paired by seed."""
    found = []
    for name in STANDALONE_FIXED:
        anchor = by_name.get(name)
        if anchor and anchor["runs"]:
            found.append(
                {
                    "target": f"{bsn['strategy']} >= {anchor['strategy']}",
                    "met": _mean(bsn) >= _mean(anchor),
                    "detail": f"{_mean(bsn):.4f} vs {_mean(anchor):.4f} ({_mean(bsn, 'params'):,.0f} vs "
                    f"{_mean(anchor, 'params'):,.0f} parameters){_paired_text(paired_difference(bsn, anchor))}",
                }
            )
    return found


def targets(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with ``met`` (True / False, None where it cannot be judged) and the numbers behind it."""
    by_name = {e["name"]: e for e in summary}
    found: list[dict[str, Any]] = []
    for bsn in summary:
        budget = row_budget(bsn["name"]) if row_kind(bsn["name"]) in BSN_KINDS else None
        if budget is None or not bsn["runs"]:
            continue
        found += _vs_random(bsn, by_name, budget)
        found += _vs_peers(bsn, summary)
        found += _vs_anchors(bsn, by_name)
        number, pct = parse_budget(budget)
        full = by_name.get("full")
        if pct and number <= 50 and full and full["runs"]:
            found.append(
                {
                    "target": f"{bsn['strategy']} >= {full['strategy']}",
                    "met": _mean(bsn) >= _mean(full),
                    "detail": f"{_mean(bsn):.4f} vs {_mean(full):.4f}",
                }
            )
    # DARTS's search time from its export's rows, else from its derivation's (the same searches): a search whose
    # argmax export was disconnected still took its time
    darts = next(
        (by_name[n] for n in ("darts", "darts" + DERIVED) if (by_name.get(n) or {}).get("search_seconds")),
        None,
    )
    found += _search_time(summary, darts)
    return found


def _search_time(summary: Sequence[dict[str, Any]], darts: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not darts or not darts["search_seconds"]:
        return []
    found = []
    for bsn in summary:
        if row_kind(bsn["name"]) in BSN_KINDS and bsn["search_seconds"]:
            ratio = bsn["search_seconds"]["mean"] / darts["search_seconds"]["mean"]
            found.append(
                {
                    "target": f"{bsn['strategy']} search <= {SEARCH_RATIO_TARGET}x DARTS's",
                    "met": ratio <= SEARCH_RATIO_TARGET,
                    "detail": f"{bsn['search_seconds']['mean']:.0f} s vs {darts['search_seconds']['mean']:.0f} s "
                    f"({ratio:.2f}x)",
                }
            )
    return found


def _pm(stats: dict[str, float] | None, spec: str) -> str:
    if not stats:
        return "–"
    return f"{format(stats['mean'], spec)} ± {format(stats['std'], spec)}"


def _settled(e: dict[str, Any]) -> str:
    """How settled the choices ended: mean largest probability / normalised entropy (1 = uniform)."""
    p, h = e.get("choice_max_prob"), e.get("choice_entropy")
    return f"{p['mean']:.2f} / {h['mean']:.2f}" if p and h else "–"


def _epochs(e: dict[str, Any]) -> str:
    """Search epochs, and with ``--settle`` how many runs settled (``12 ± 3 (2/3 settled)``)."""
    epochs = e.get("search_epochs")
    if not epochs:
        return "–"
    settled = f" ({e['settled']}/{e['runs']} settled)" if e.get("settled") is not None else ""
    return _pm(epochs, ".0f") + settled


def table_head(head: str) -> list[str]:
    """A markdown table's header line and the separator line under it (one ``---`` per column)."""
    return [head, "|" + "---|" * head.count(" | ") + "---|"]


def summary_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a markdown table: mean ± std over each row's runs."""
    head = (
        "| row | runs | test acc | val acc | inherited test acc | MACs (share of full) | params | search s | "
        "search epochs | retrain s | max prob / entropy | failed |"
    )
    lines = table_head(head)
    for e in summary:
        share = f" ({e['macs_fraction']:.1%})" if e.get("macs_fraction") is not None else ""
        failed = f"{e['failed']}: {'; '.join(e['failures'])[:160]}" if e["failed"] else "0"
        lines.append(
            f"| {e['strategy']} | {e['runs']} | {_pm(e['test_acc'], '.4f')} | {_pm(e['val_acc'], '.4f')} "
            f"| {_pm(e['inherited_test_acc'], '.4f')} | {_pm(e['macs'], ',.0f')}{share} "
            f"| {_pm(e['params'], ',.0f')} | {_pm(e['search_seconds'], '.0f')} | {_epochs(e)} "
            f"| {_pm(e['retrain_seconds'], '.0f')} | {_settled(e)} | {failed} |"
        )
    return "\n".join(lines)


def targets_markdown(found: Sequence[dict[str, Any]]) -> str:
    """The targets as a markdown list: met, NOT met, or not judged, with the numbers."""
    word = {True: "met", False: "**NOT met**", None: "not judged"}
    return "\n".join(f"- {t['target']}: {word[t['met']]} ({t['detail']})" for t in found)
