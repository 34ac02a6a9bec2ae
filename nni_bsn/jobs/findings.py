"""What a finished search must say plainly, beside its numbers: a budget that does not bind, a network at chance
accuracy, an architecture with no gate kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evaluators.blocks import GATE_ON

__all__ = ["kept_gates", "search_warnings", "summary_lines"]

#: Test accuracy below this multiple of chance (1 / classes) is reported as chance level.
CHANCE_MARGIN = 1.5


def kept_gates(space: Any, arch: Mapping[str, Any], gate_labels: Sequence[str]) -> int:
    """The gates of ``arch`` that are on and on an input -> output path (on after ``space.prune``)."""
    pruned = space.prune(dict(arch)) if hasattr(space, "prune") else arch
    return sum(pruned.get(label) == GATE_ON for label in gate_labels)


def search_warnings(
    budgets: Sequence[Any], accuracy: Mapping[str, float], num_classes: int, kept: int, gates: int
) -> list[str]:
    """The plain-words warnings of a search: each budget the whole network meets (it does not bind), a test
    accuracy at chance level, no gate kept out of ``gates``."""
    out = []
    for b in budgets:
        if b.full is not None and b.full <= b.limit:
            unit = f" {b.unit}" if b.unit else ""
            out.append(
                f"the {b.name} budget does not bind: the whole network ({b.full:.4g}{unit}) is within it "
                f"({b.limit:.4g}{unit}), so nothing had to be cut; give a smaller budget (e.g. 50%)"
            )
    chance = 1.0 / max(num_classes, 1)
    if accuracy.get("test", 1.0) < CHANCE_MARGIN * chance:
        out.append(
            f"test accuracy {accuracy['test']:.3f} is at chance level (1/{num_classes} = {chance:.3f}): the found "
            "network has not learned; train longer (--epochs) or give a larger budget"
        )
    if gates and kept == 0:
        out.append(
            f"the found architecture keeps 0 of {gates} gates: only the ungated path is left; give a larger "
            "budget or more --epochs"
        )
    return out


def summary_lines(report: Mapping[str, Any], out: str) -> list[str]:
    """What ``nni-bsn search`` prints when it finishes: the architecture, budget, costs, accuracy, time, the DDP
    ranks' agreement, the warnings and the output files."""
    lines = []
    budget = ", ".join(
        f"{b['cost']} <= {b['limit']:.4g} {b['unit']} ({b['spec']})" for b in report["budgets"]
    )
    kept = report.get("kept_gates") or {}
    lines.append(
        f"architecture: {report['selection']['method']}; within budget: {report['selection']['within_budget']}"
        + (f"; {kept['kept']} of {kept['of']} gates kept" if kept.get("of") else "")
    )
    lines.append(f"budget: {budget}")
    lines.append(
        f"costs: MACs {report['costs']['macs']:.4g}, params {report['costs']['params']:.4g}"
        + (
            f", ONNX Runtime latency {report['costs']['latency_ms']:.3f} ms"
            if "latency_ms" in report["costs"]
            else ""
        )
        + (
            f", makespan over {dist['devices']} devices {dist['makespan_ms']:.4g} ms"
            if (dist := report["costs"].get("distributed"))
            and report["config"]["cost"].startswith("distributed")
            else ""
        )
    )
    lines.append(f"accuracy: val {report['accuracy']['val']:.4f}, test {report['accuracy']['test']:.4f}")
    lines.append(f"search: {report['search_seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB")
    if (ranks := report.get("ranks") or {}).get("world_size", 1) > 1:
        agreed = "yes" if ranks["agreed"] else "NO (see report.json's ranks)"
        lines.append(f"ranks: {ranks['world_size']}, agreed on the logits and the architecture: {agreed}")
    for warning in report.get("warnings", []):
        lines.append(f"warning: {warning}")
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(out).iterdir())
    lines.append(f"outputs in {out}/: {' '.join(files)}")
    return lines
