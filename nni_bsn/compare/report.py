"""What ``nni-bsn compare`` writes: the table (markdown and CSV), its notes, the command that reproduces it, the
machine it ran on."""

from __future__ import annotations

import csv
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nni_bsn.compare.row import INHERITED_BN_BATCHES
from nni_bsn.compare.summary import SUMMARY_FIELDS, summary_table, table_head, targets_markdown
from nni_bsn.jobs.config import PEER_VARIANTS, CompareConfig

__all__ = [
    "COLUMNS",
    "markdown_table",
    "render_markdown",
    "notes",
    "equivalent_command",
    "machine",
    "write_outputs",
    "summary_lines",
]

STATS = ("mean", "std", "min", "max")
COLUMNS = [
    "strategy",
    "seed",
    "status",
    "val_acc",
    "test_acc",
    "inherited_val_acc",
    "inherited_test_acc",
    "macs",
    "params",
    "latency_ms",
    "distributed_ms",
    "search_seconds",
    "step_ms",
    "search_rss_growth_mb",
    "search_peak_rss_mb",
    "retrain_seconds",
    "budget_cost",
    "budget_limit",
    "within_budget",
    "connected",
    "gates_on",
    "gates_alive",
    "gates_total",
]


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and OS of this machine."""
    from evaluators.latency.ort import cpu_model

    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def equivalent_command(cfg: CompareConfig) -> str:
    """The ``nni-bsn compare`` command line that spells out every setting of ``cfg``."""
    from nni_bsn.jobs.options import command_line

    return command_line("compare", cfg)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return format(value, spec)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a markdown table, one row per strategy (failed rows say why)."""
    head = (
        "| strategy | val acc | test acc | inherited val / test acc | MACs | params | ORT latency ms | "
        "2-device makespan ms | search s | step ms | search ΔRSS MB | alive gates | within budget |"
    )
    lines = table_head(head)
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['strategy']} | {r['status']} |" + " |" * (head.count(" | ") - 1))
            continue
        lines.append(
            f"| {r['strategy']} | {_fmt(r['val_acc'], '.4f')} | {_fmt(r['test_acc'], '.4f')} "
            f"| {_fmt(r['inherited_val_acc'], '.4f')} / {_fmt(r['inherited_test_acc'], '.4f')} "
            f"| {_fmt(r['macs'], ',.0f')} | {_fmt(r['params'], ',.0f')} | {_fmt(r['latency_ms'], '.3f')} "
            f"| {_fmt(r['distributed_ms'], '.3f')} | {_fmt(r['search_seconds'], '.1f')} | {_fmt(r['step_ms'], '.1f')} "
            f"| {_fmt(r['search_rss_growth_mb'], '.0f')} | {_gates(r)} | {_fmt(r['within_budget'], '')} |"
        )
    return "\n".join(lines)


def _gates(r: dict[str, Any]) -> str:
    if not r.get("gates_total"):
        return "–"  # a space without gates
    return f"{r['gates_alive']}/{r['gates_total']} ({r['gates_on']} on)"


def _search_length(cfg: CompareConfig) -> str:
    if cfg.settle is None:
        return f"{cfg.epochs} search epochs"
    return (
        f"a search until its most probable architecture (the argmax of every choice) is the same at {cfg.settle} "
        f"consecutive epoch ends, at most {cfg.epochs} epochs (RandomOneShot, without probabilities, runs all)"
    )


def notes(cfg: CompareConfig, report: dict[str, Any]) -> list[str]:
    """The notes under the table: this run's settings, then what its rows call for (how each column is measured is
    in the project's ``docs/compare.md``)."""
    budget, rows = report["budget"], report["rows"]
    lines = [
        f"Same space ({cfg.space}, a fresh instance per strategy), data ({cfg.dataset}), seeds "
        f"({', '.join(map(str, cfg.seed_list))}), batch "
        f"size ({cfg.batch_size}) and {_search_length(cfg)} for every strategy, each in its own process.",
        f"Retraining: the pruned architecture from scratch for {cfg.retrain} epochs ({cfg.optimizer}, lr "
        f"{cfg.learning_rate:g}, weight decay {cfg.weight_decay:g}); val and test accuracy are the retrained model's. "
        f"Inherited accuracy: the supernet's weights, BatchNorm re-estimated on {INHERITED_BN_BATCHES} batches.",
        "MACs (multiply-accumulates, fvcore) and parameters of the pruned architecture; ORT latency: ONNX Runtime "
        "CPU, batch 1, 1 thread, median of 50 runs; 2-device makespan: DistributedCost(devices=2) (model, ms).",
        f"Budget: {budget['cost']} <= {budget['limit']:.6g} {budget['unit']} ({budget['spec']} of "
        f"{budget['full']:.6g}). BSN searches with it (lam {cfg.lam:g}, {cfg.num_samples} sample(s) a step); "
        "'within budget' checks each row against its own budget (a <kind>@X row, e.g. bsn@25%, against X; the "
        "others against this one); only BSN and the +penalty rows know about theirs.",
        "darts+penalty / proxyless+penalty: NNI's ExpectationProfilerPenalty over its FlopsProfiler, baseline the "
        f"same fraction ({budget['fraction']:.3g}) of the profiler's full count, scale {cfg.lam:g}, a hinge; with "
        "the live-probability fix of nni_bsn.compat (stock NNI 3.0's penalty never reaches α).",
        "The other strategies run with NNI's defaults (DARTS's architecture optimizer is its paper's: Adam 3e-4, "
        "betas (0.5, 0.999), weight decay 1e-3; ENAS as TaggedENAS, reward val_acc); RandomOneShot exports a random "
        "architecture. '(DARTS derivation)' rows: the DARTS paper's rule on the same weights (docs/compare.md).",
        f"Torch threads per strategy process: {cfg.threads or 'torch default (all cores)'}. Timing columns depend on "
        "the machine's load (load averages above). How each column is measured: docs/compare.md.",
    ]
    resumed = [r for r in rows if r.get("resumed")]
    if resumed:
        which = sorted({f"{r['name']} (seed {r.get('seed')})" for r in resumed})
        lines.append(
            f"{len(resumed)} row(s) were kept from an earlier, interrupted or failed run with the same options "
            f"(--resume): {', '.join(which)}."
        )
    continued = sorted({f"{r['name']} (seed {r.get('seed')})" for r in rows if r.get("search_resumed_from")})
    if continued:
        lines.append(
            f"{len(continued)} search(es) continued from the checkpoint of an interrupted run (--resume), the rest "
            f"of their rows computed anew: {', '.join(continued)}."
        )
    if "darts-fast" in cfg.strategies:
        lines.append(
            f"darts-fast: NNI's DARTS with arc_learning_rate={PEER_VARIANTS['darts-fast']['arc_learning_rate']:g} "
            "instead of its paper's 0.0003, all else the same; not an authors' setting: its architecture weights "
            "move faster, a chance to settle in a short run."
        )
    last = [
        f"{r['strategy']} {r['final_epoch_metrics']['train_acc']:.2f}"
        for r in rows
        if r["status"] == "ok" and "train_acc" in r.get("final_epoch_metrics", {})
    ]
    if last:
        lines.append(
            "Training accuracy of the supernet on the last search batch (noisy, one batch; ~0.1 means its "
            "sampled or mixed paths did not learn): " + ", ".join(last) + "."
        )
    lines += _ranks_notes(rows)
    for r in rows:
        lines += _row_notes(r)
    if report["failed"]:
        lines.append(
            f"Failed: {', '.join(report['failed'])} (their logs are in logs/); `nni-bsn compare` exits "
            "with code 1 when a strategy failed, after writing every output."
        )
    return lines


def _ranks_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Under DDP: whether each searched row's ranks agreed on the architecture tensors and the export."""
    checked = [r for r in rows if (r.get("ranks") or {}).get("world_size", 1) > 1]
    if not checked:
        return []
    world = checked[0]["ranks"]["world_size"]
    apart = sorted({f"{r['name']} (seed {r.get('seed')})" for r in checked if not r["ranks"]["agreed"]})
    said = (
        "every searched row's ranks agreed"
        if not apart
        else f"the ranks of {', '.join(apart)} did NOT agree (each rank evaluated rank 0's architecture)"
    )
    return [
        f"DDP over {world} ranks: {said} on the architecture's tensors (BSN's logits, the DARTS family's alphas, "
        "ENAS's controller) and on the exported architecture (SHA-256 digests per rank: compare.json's 'ranks'). "
        "NNI's strategies ran with nni-bsn's fix (nni_bsn.strategy.peers.RankSync: shared sampling seeds, "
        "ENAS's reward and the alphas' gradients averaged over the ranks)."
    ]


def _row_notes(r: dict[str, Any]) -> list[str]:
    lines = []
    if r.get("enas"):
        e = r["enas"]
        lines.append(
            f"ENAS: {e['trajectories']} controller trajectories (one per validation batch) with NNI's "
            f"default batches_per_update={e['batches_per_update']:g} gave {e['ppo_updates']} PPO "
            "update(s)"
            + ("; its export is a sample of the untrained controller." if not e["ppo_updates"] else ".")
        )
    if r.get("onnx_error"):
        lines.append(f"{r['strategy']}: no latency, ONNX export failed: {r['onnx_error']}")
    if r.get("connected") is False:
        lines.append(f"{r['strategy']}: the exported architecture does not connect input to output.")
    return lines


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The mean ± std table and the targets under it (markdown lines): ``compare.md``'s head, and the benchmarks'."""
    return [
        summary_table(report["summary"]),
        "",
        "Targets:",
        "",
        targets_markdown(report["targets"]) or "- none applies to these rows",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """``compare.md``: the table, the command, the machine, the versions and the notes."""
    m, v = report["machine"], report["versions"]
    lines = ["# nni-bsn compare", ""]
    if report.get("summary"):
        seeds = ", ".join(map(str, report["seeds"]))
        lines += [
            f"Mean ± std over seeds {seeds} (random rows: over every seed and draw); each run below.",
            "",
            *summary_lines(report),
            "",
            "Every run:",
            "",
        ]
    lines += [
        markdown_table(report["rows"]),
        "",
        f"- command: `{report['command'] or '(Python API: nni_bsn.compare.run.run_compare)'}`",
        f"- every setting: `{report['equivalent_command']}`",
        f"- date: {report['date']}; total {report['total_seconds']:.0f} s",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}; "
        f"load average (1/5/15 min) {m['load_average_1_5_15']} at the start, {m['load_average_at_end']} at the end",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- space: {json.dumps(report['space'])}; data: {report['dataset']['name']} {report['dataset']['sizes']}, "
        f"image {report['dataset']['image_size']}",
        "",
        "Notes:",
        "",
        *[f"- {n}" for n in report["notes"]],
        "",
    ]
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], workdir: Path) -> None:
    """``compare.json``, ``compare.csv``, ``compare.md`` and ``accuracy_vs_cost.png`` (test accuracy vs MACs)."""
    from nni_bsn.compare.front_plot import plot_front
    from nni_bsn.jobs.outputs import write_json

    rows = report["rows"]
    write_json(workdir / "compare.json", report)
    with open(workdir / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (workdir / "compare.md").write_text(render_markdown(report))
    with open(workdir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["name", "strategy", "runs", "failed", *(f"{k}_{s}" for k in SUMMARY_FIELDS for s in STATS)]
        )
        for e in report["summary"]:
            cells = [(e[k] or {}).get(s) for k in SUMMARY_FIELDS for s in STATS]
            writer.writerow([e["name"], e["strategy"], e["runs"], e["failed"], *cells])
    plot_front(report["summary"], rows, workdir / "accuracy_vs_cost.png", budgets=_budget_lines(report))


def _budget_lines(report: dict[str, Any]) -> dict[str, float]:
    """The MACs limits to draw on the front (none when the budget is not in MACs)."""
    budgets = [report["budget"], *report.get("row_budgets", {}).values()]
    return {f"{b['spec']} budget": b["limit"] for b in budgets if b["cost"] == "macs"}
