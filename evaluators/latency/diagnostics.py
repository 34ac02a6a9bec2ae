"""How well a bound ``LatencyCost`` table predicts whole models, and where the time of one model goes.

``validate`` compares ``cost(arch)`` with whole-model measurements of random connected architectures;
``attribute_arch`` profiles one architecture with ORT's per-node profiler and sets its kernels beside the table's
terms. Both are reached as ``LatencyCost.validate`` and ``LatencyCost.attribute_arch``.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from evaluators.blocks import GATE_OFF, GATE_ON
from evaluators.latency.ort import export_onnx, ort_cpu_session

__all__ = ["validate", "attribute_arch"]

Arch = Mapping[str, Any]


# -- validation -------------------------------------------------------------------------------------------------------
def _measured_pairs(
    cost: Any, n: int, seed: int, p_on: float, min_ms: float
) -> tuple[list[dict[str, Any]], list[dict[str, str]], int]:
    """``n`` random connected architectures (gates on with probability ``p_on``), pruned, predicted and measured
    whole; those measured below ``min_ms`` are skipped. Returns the pairs, the architectures and the skip count."""
    space = cost.space
    rng = random.Random(seed)
    labels = space.graph.labels
    pairs: list[dict[str, Any]] = []
    archs: list[dict[str, str]] = []
    tries = skipped = 0
    while len(pairs) < n and tries < 100 * n:
        tries += 1
        arch = {label: GATE_ON if rng.random() < p_on else GATE_OFF for label in labels}
        if not space.is_connected(arch):
            continue
        arch = space.prune(arch)
        predicted = cost.cost(arch)
        timing = cost.time_module(space.freeze(arch))
        measured = timing["median_ms"]
        if measured < min_ms:
            skipped += 1
            continue
        pairs.append(
            {
                "predicted_ms": predicted,
                "measured_ms": measured,
                "live_gates": sum(v == GATE_ON for v in arch.values()),
                "rounds": timing["rounds"],
                "session_spread": timing["session_spread"],
            }
        )
        archs.append(arch)
    return pairs, archs, skipped


def validate(
    cost: Any, n: int = 20, seed: int = 0, p_on: float = 0.7, min_ms: float = 0.0, attribute: bool = False
) -> dict[str, Any]:
    """Compare ``cost(arch)`` with whole-model measurements on ``n`` random connected architectures.

    Gates are on with probability ``p_on``; each architecture is pruned, frozen, exported whole and measured
    with the same protocol as the table; architectures measured below ``min_ms`` are skipped (counted in
    ``skipped``). Returns MAPE (%), the share within +-10 %, Spearman's rank correlation and the
    ``(predicted, measured)`` pairs with their (pruned) ``archs``, so other tables can be scored on the same
    measurements. With ``attribute=True``, the architecture with the largest error is profiled
    (``attribute_arch``) and the result has its ``attribution``.
    """
    cost._require_bound()
    if cost.mode != "additive":  # only a gate space gets a table
        raise NotImplementedError("LatencyCost.validate needs a gate space (predictions come from the table)")
    from scipy.stats import spearmanr

    pairs, archs, skipped = _measured_pairs(cost, n, seed, p_on, min_ms)
    errors = [abs(p["predicted_ms"] - p["measured_ms"]) / p["measured_ms"] for p in pairs]
    signed = [(p["predicted_ms"] - p["measured_ms"]) / p["measured_ms"] for p in pairs]
    rho = spearmanr([p["predicted_ms"] for p in pairs], [p["measured_ms"] for p in pairs]).statistic
    report = {
        "n": len(pairs),
        "skipped": skipped,
        "mape_pct": 100 * statistics.fmean(errors),
        "mean_signed_error_pct": 100 * statistics.fmean(signed),
        "max_error_pct": 100 * max(errors),
        "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
        "spearman": float(rho),
        "pairs": pairs,
        "archs": archs,
    }
    if attribute and archs:
        worst = max(range(len(errors)), key=errors.__getitem__)
        report["attribution"] = {"index": worst, **attribute_arch(cost, archs[worst])}
    return report


# -- attribution ------------------------------------------------------------------------------------------------------
def _profile(cost: Any, arch: Arch, warmup: int, runs: int) -> tuple[Any, list[dict[str, Any]]]:
    """The exported ONNX graph of ``arch`` and the events of ORT's profiler over ``warmup + runs`` runs."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(cost.space.freeze(arch), cost.input_shape, path, cost.dynamo)
        graph = onnx.load(path).graph
        sess = ort_cpu_session(path, cost.threads, profile_prefix=os.path.join(tmp, "profile"))
        x = np.random.default_rng(0).standard_normal(cost.input_shape).astype(np.float32)
        feed = {i.name: x for i in sess.get_inputs()}
        for _ in range(warmup + runs):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            return graph, json.load(f)


def _kernels(events: list[dict[str, Any]], runs: int) -> tuple[list[tuple[str, dict]], list[dict[str, Any]]]:
    """The kernel events of the last ``runs`` model runs, by exported node name (``_kernel_time`` and ``_nchwc``
    stripped), and those model runs."""
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[-runs:]
    t0 = model_runs[0]["ts"] if model_runs else 0
    kernels = []
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= t0:
            name = e["name"][: -len("_kernel_time")]
            kernels.append((name[: -len("_nchwc")] if name.endswith("_nchwc") else name, e))
    return kernels, model_runs


class _GateOfKernel:
    """Which gate a profiled kernel belongs to, from the exported graph's node names and name scopes."""

    def __init__(self, graph: Any, labels: set[str], executed: set[str]):
        self.by_name = {n.name: n for n in graph.node}
        self.by_value = {v: n for n in graph.node for v in n.output}
        self.labels, self.executed = labels, executed

    def __call__(self, name: str, op: str) -> str | None:
        node = self.by_name.get(name) or self.by_value.get(name)
        if node is None:
            return None
        gate = self.gate_of(node)
        if gate is None and op == "Conv" and node.op_type != "Conv":
            gate = self.fused_conv_gate(node)
        return gate

    def gate_of(self, node: Any) -> str | None:
        """The gate label that is a component of the node's name or ``pkg.torch.onnx.name_scopes``."""
        scope = node.name + " " + " ".join(p.value for p in node.metadata_props if "name_scopes" in p.key)
        return next((t for t in re.split(r"[/.\[\]'\", ]+", scope) if t in self.labels), None)

    def fused_conv_gate(self, node: Any) -> str | None:
        # A Conv kernel named after the Add/Relu fused into it: the nearest Conv upstream that did not run
        # as a kernel of its own.
        todo, seen = [node], set()
        while todo:
            n = todo.pop(0)
            for v in n.input:
                src = self.by_value.get(v)
                if src is None or src.name in seen:
                    continue
                seen.add(src.name)
                if (
                    src.op_type == "Conv"
                    and src.name not in self.executed
                    and not set(src.output) & self.executed
                ):
                    return self.gate_of(src)
                if src.op_type in ("Add", "Relu", "Sum", "BatchNormalization"):
                    todo.append(src)
        return None


def _split_kernel_time(
    kernels: list[tuple[str, dict]], gate_of: _GateOfKernel, runs: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-run kernel milliseconds by gate, and by kind: blocks, nodes (Add, Sum, Relu), layout (reorders), other."""
    gate_ms: dict[str, float] = {}
    kind_ms = {"blocks": 0.0, "nodes": 0.0, "layout": 0.0, "other": 0.0}
    for name, e in kernels:
        op = e.get("args", {}).get("op_name", "")
        gate = gate_of(name, op)
        ms = e["dur"] / 1e3 / max(1, runs)
        if gate is not None:
            gate_ms[gate] = gate_ms.get(gate, 0.0) + ms
            kind_ms["blocks"] += ms
        elif op in ("Add", "Sum", "Relu"):
            kind_ms["nodes"] += ms
        elif op.startswith("Reorder"):
            kind_ms["layout"] += ms
        else:
            kind_ms["other"] += ms
    return gate_ms, kind_ms


def attribute_arch(
    cost: Any, arch: Arch, warmup: int | None = None, runs: int | None = None
) -> dict[str, Any]:
    """Where the whole-model time of ``arch`` goes, from ORT's per-node profiler, next to the table's terms.

    The pruned model is exported and run with ``enable_profiling``; every ``<node>_kernel_time`` event of the
    timed runs is mapped back to the exported graph (strip ``_kernel_time`` and ``_nchwc``, look the name up
    as a node, else as the value a node produces) and attributed to the gate whose label is a component of
    that node's name or ``pkg.torch.onnx.name_scopes``; other kernels are ``nodes`` (Add, Sum, Relu: the
    aggregations), ``layout`` (ORT's NCHW <-> NCHWc reorders) or ``other`` (stem, classifier, resize...).
    Per-run means in ms. Profiling inflates batch-1 latency (~30 %, reference section 3) and kernels cover
    85-88 % of a run there: compare shares and per-gate ratios, not absolute numbers.
    """
    cost._require_bound()
    arch = cost.space.prune(arch)
    warmup = cost.warmup if warmup is None else warmup
    runs = cost.runs if runs is None else runs
    graph, events = _profile(cost, arch, warmup, runs)
    kernels, model_runs = _kernels(events, runs)
    gate_of = _GateOfKernel(graph, set(cost.space.graph.labels), {name for name, _ in kernels})
    gate_ms, kind_ms = _split_kernel_time(kernels, gate_of, runs)
    terms = cost.terms(arch)
    per_gate = sorted(
        ({"gate": g, "profiled_ms": gate_ms.get(g, 0.0), "table_ms": c} for g, c in terms["blocks"].items()),
        key=lambda r: -abs(r["profiled_ms"] - r["table_ms"]),
    )
    return {
        "profiled_run_ms": {  # kernel times are per-run means: compare them with the mean
            "median": statistics.median(e["dur"] for e in model_runs) / 1e3 if model_runs else None,
            "mean": statistics.fmean(e["dur"] for e in model_runs) / 1e3 if model_runs else None,
        },
        "profiled_kernels_ms": kind_ms,
        "table_ms": {
            "fixed": terms["fixed"],
            "blocks": sum(terms["blocks"].values()),
            "nodes": sum(terms["nodes"].values()),
        },
        "predicted_ms": cost.cost(arch),
        "gates": per_gate,
    }
