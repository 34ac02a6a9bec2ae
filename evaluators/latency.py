"""Latency measured with ONNX Runtime on the CPU: a lookup table kept on disk, its validation and attribution.

Protocol (reference/costs_and_peers.md section 7.3): every gated block is exported alone to ONNX at the input
shape it sees in the super network, and every aggregation node's unfused additions as a tiny graph at its shape;
each is run in ORT sessions (``CPUExecutionProvider``, ``ORT_ENABLE_ALL`` -- the deployed graph --, sequential
executor, ``inter_op_num_threads=1``, ``intra_op_num_threads`` set explicitly), warmed up, then timed with
``perf_counter_ns`` around ``session.run``; the entry is the median over runs, and the median over fresh sessions,
re-measured when the sessions disagree by more than 5 %. A whole reference architecture is measured to calibrate
the fixed part. Entries are keyed by signature, input shape, batch, threads, exporter, onnxruntime and torch
versions and CPU model, and saved as JSON, so a later bind on the same machine measures nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import AdditiveCost, Arch
from .blocks import GATE_OFF, GATE_ON, block_shapes, choice_modules, is_gate_space

__all__ = [
    "LatencyCost",
    "measure_onnx",
    "ort_cpu_session",
    "time_session",
    "export_onnx",
    "node_signature",
    "cpu_model",
    "default_cache_dir",
]

_log = logging.getLogger(__name__)


def cpu_model() -> str:
    """The CPU model string (``model name`` of /proc/cpuinfo, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/nni-bsn/latency`` (``~/.cache/nni-bsn/latency`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nni-bsn" / "latency"


def _as_shapes(input_shape: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """One shape (``(1, 3, 32, 32)``) or several (``[(1, 8, 4, 4), (1, 8, 4, 4)]``) as a list of tuples."""
    if len(input_shape) and isinstance(input_shape[0], (list, tuple)):
        return [tuple(int(d) for d in s) for s in input_shape]  # type: ignore[union-attr]
    return [tuple(int(d) for d in input_shape)]  # type: ignore[arg-type]


def export_onnx(
    module: nn.Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    path: str | os.PathLike,
    dynamo: bool = True,
) -> None:
    """Export ``module`` (eval mode) at fixed input shape(s), quietly (the dynamo exporter prints progress).

    One input is named ``x``; several (a list of shapes) ``x0, x1, ...``."""
    shapes = _as_shapes(input_shape)
    xs = tuple(torch.zeros(*s) for s in shapes)
    names = ["x"] if len(shapes) == 1 else [f"x{i}" for i in range(len(shapes))]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                module.eval(), xs, str(path), input_names=names, output_names=["y"], dynamo=dynamo
            )


def _spread(values: Sequence[float]) -> float:
    """(max - min) / median: how much the session medians disagree."""
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else 0.0


def ort_cpu_session(path: str | os.PathLike, threads: int = 1) -> Any:
    """A fresh ONNX Runtime CPU session as deployed: all graph optimisations, sequential, explicit threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_session(session: Any, feed: Mapping[str, np.ndarray], warmup: int, runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` timed ``session.run`` calls (``perf_counter_ns``), after ``warmup`` untimed."""
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def measure_onnx(
    path: str | os.PathLike,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    sessions: int = 3,
    retries: int = 3,
    tolerance: float = 0.05,
) -> dict[str, Any]:
    """Median latency (ms) of an ONNX file in ONNX Runtime on the CPU, robust to a shared machine.

    A *round* is ``sessions`` fresh sessions, each with ``warmup`` untimed and ``runs`` timed runs of
    ``session.run`` (``perf_counter_ns``); its session medians are compared, and when they disagree by more than
    ``tolerance`` (``(max - min) / median``) another round is run, up to ``retries`` extra rounds. The result is
    the median of every session median of every round (a load spike in one session moves it little), plus p90,
    CV over all timed runs, the spread of the last round, and the session medians.
    """
    shapes = _as_shapes(input_shape)
    rng = np.random.default_rng(0)
    medians: list[float] = []
    all_times: list[float] = []
    rounds = 0
    spread = 0.0
    while True:
        round_medians = []
        for _ in range(sessions):
            sess = ort_cpu_session(path, threads)
            feed = {}
            for i, inp in enumerate(sess.get_inputs()):  # an input the graph ignores may be dropped
                static = all(isinstance(d, int) for d in inp.shape)
                shape = tuple(inp.shape) if static else shapes[min(i, len(shapes) - 1)]
                feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
            times = time_session(sess, feed, warmup, runs)
            round_medians.append(statistics.median(times))
            all_times += times
            del sess
        medians += round_medians
        rounds += 1
        spread = _spread(round_medians)
        if spread <= tolerance or rounds > retries:
            break
        _log.info(
            "measure_onnx: session medians disagree by %.1f %% (> %.0f %%): re-measuring (round %d)",
            100 * spread,
            100 * tolerance,
            rounds + 1,
        )
    mean = statistics.fmean(all_times)
    return {
        "median_ms": statistics.median(medians),
        "p90_ms": float(np.percentile(all_times, 90)),
        "cv": statistics.pstdev(all_times) / mean if mean > 0 else 0.0,
        "session_spread": spread,
        "rounds": rounds,
        "session_medians_ms": medians,
    }


class _Echo(nn.Module):
    """The cheapest graph with an input and an output of the block's input shape: what one ORT run costs
    beyond the block's own kernels (binding, allocation, executor), measured to subtract it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class _NodeSum(nn.Module):
    """An aggregation node as the pruned model runs it: ``live`` inputs summed, then ``zeros`` constant zero maps
    added (what an 'off' or dead gate leaves in the sum: ORT keeps those additions), then ReLU."""

    def __init__(self, live: int, zeros: int, shape: Sequence[int]):
        super().__init__()
        self.live, self.zeros, self.shape = live, zeros, tuple(shape)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        for _ in range(self.zeros):
            out = out + torch.zeros(self.shape)
        return torch.relu(out)

    def extra_repr(self) -> str:
        return f"live={self.live}, zeros={self.zeros}, shape={self.shape}"


def node_signature(pattern: Sequence[bool]) -> tuple[int, int]:
    """``(live inputs, constant additions)`` of a node whose inputs, in summation order, are live or zero.

    Zero maps that come first are constants added together, which ORT folds into one; every later zero is one
    addition that runs. ``(False, False, True)`` -> ``(1, 1)``; ``(True, False, False)`` -> ``(1, 2)``.
    """
    live = sum(bool(p) for p in pattern)
    lead = 0
    for p in pattern:
        if p:
            break
        lead += 1
    return live, (len(pattern) - live) - max(0, lead - 1)


class LatencyCost(AdditiveCost):
    """Latency (ms) of the pruned architecture in ONNX Runtime on this CPU, from a lookup table.

    On a gate space (both fabrics of ``search_spaces``)::

        cost(arch) = fixed + sum of the block entries of the live gates + sum of the node entries of the live nodes

    What is in the table:

    - **Block entries**: each gated block exported and timed alone at its real input shape, minus
      (``subtract_overhead=True``) the time of a one-ReLU graph at that shape -- the per-run overhead (input
      binding, output allocation, executor) that a block inside the whole model does not pay again.
    - **Node entries**: every node of ``space.graph`` that has at least one gated input aggregates its inputs
      (sum, then ReLU: ``AddReLU`` of the CNF, the residual sums of the ResNet fabric), and what runs there depends
      on the architecture. Its *live* inputs are the gated or ungated edges on an input -> output path; every other
      input is a zero map left by an 'off' or dead gate, a constant that ORT still *adds* (it does not simplify
      ``x + 0``; leading zeros fold into one constant). With ``nodes="constants"`` (default) a node with ``c``
      constant additions has the entry of a tiny graph ``relu(x + 0 + ... + 0)`` (``c`` zero constants) at the
      node's shape, minus the one-ReLU overhead: the additions ORT runs as separate kernels. The sum of the live
      inputs and the ReLU are not counted: ORT fuses them into the convolutions that produce the inputs (NCHWc
      Conv with a fused sum input and activation, as its optimized graph shows). With ``nodes="all"`` the tiny
      graph also sums the ``k`` live inputs as graph inputs (``k - 1`` unfused additions, ``k`` input bindings);
      validation found it overestimates (see benchmarks/RESULTS.md). ``nodes="none"``: blocks only. A node with
      no live input is a constant and costs 0. Per-node input lists, in summation order (the order of
      ``space.graph.edges``, which is the order both fabrics sum in), are precomputed at bind, so ``cost(arch)``
      is one reachability sweep plus table look-ups (tens of microseconds).
    - **fixed**: calibrated on one measured *reference* architecture, the cheapest input -> output path of the
      gate graph by block entries (for the ResNet fabric, every gate off): its whole-model latency minus its block
      and node entries. It holds what runs in every architecture -- the stem, ungated skips and projections, the
      classifier, the per-run overhead of ORT -- which the model with every gate off does not show on the CNF
      (there ORT folds the whole network into a constant).

    Not in the table: layout conversions that depend on neighbours (ORT runs convolutions in NCHWc and reorders
    to NCHW around unfused node additions; every block entry, measured alone in NCHW, includes one reorder in and
    one out, so a chain of fused convolutions is slightly overestimated), and interactions between blocks
    (caches). ``validate`` measures how far the sum is from whole-model measurements; ``validate(...,
    attribute=True)`` profiles the worst architecture with ORT's per-node profiler (``attribute_arch``) and says
    where its time goes against the table.

    Every entry follows the protocol of reference/costs_and_peers.md section 7.3 (``measure_onnx``):
    ``CPUExecutionProvider``, ``ORT_ENABLE_ALL`` (the deployed graph), sequential executor,
    ``inter_op_num_threads=1``, ``intra_op_num_threads`` set explicitly, ``warmup`` untimed and ``runs`` timed runs
    per session, ``sessions`` fresh sessions, re-measured (up to ``retries`` more rounds) when the session medians
    disagree by more than ``tolerance``, and the median of the session medians. Entries are keyed by signature
    (module repr or node signature, input shape), batch, threads, exporter, onnxruntime and torch versions and CPU
    model, and saved as JSON, so a later bind on the same machine measures nothing. Identical blocks and nodes are
    measured once.

    Spaces that are not gate spaces are measured per architecture (whole model exported and timed, memoised).

    Parameters
    ----------
    input_shape
        Input shape, batch included (the batch is part of every table key).
    threads
        ``intra_op_num_threads`` of every session (1 to 1 per core; never above ``os.cpu_count()``).
    warmup, runs, sessions
        Untimed runs, timed runs per session (the median is kept), fresh sessions per round (median of medians).
    retries, tolerance
        Extra rounds of ``sessions`` sessions allowed when the session medians of a round disagree by more than
        ``tolerance`` (relative spread).
    cache_dir
        Where the JSON table lives (default ``~/.cache/nni-bsn/latency``).
    dynamo
        Use the dynamo ONNX exporter (default, needs onnxscript); ``False`` uses the legacy TorchScript one.
    subtract_overhead
        Subtract the one-ReLU per-run overhead from block and node entries (default). ``False`` keeps raw entries.
    nodes
        Node entries: ``"constants"`` (default: the zero additions ORT runs), ``"all"`` (live sums too, as
        standalone graphs) or ``"none"`` (blocks only); ``True``/``False`` mean ``"constants"``/``"none"``.
    """

    name = "latency"
    unit = "ms"

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 3, 32, 32),
        threads: int = 1,
        warmup: int = 10,
        runs: int = 50,
        sessions: int = 3,
        cache_dir: str | os.PathLike | None = None,
        dynamo: bool = True,
        subtract_overhead: bool = True,
        nodes: str | bool = "constants",
        retries: int = 3,
        tolerance: float = 0.05,
    ) -> None:
        super().__init__(verify=0)
        n_cpu = os.cpu_count() or 1
        if not isinstance(threads, int) or not 1 <= threads <= n_cpu:
            raise ValueError(
                f"LatencyCost: threads must be an integer in [1, {n_cpu}] (os.cpu_count()), got {threads!r}"
            )
        if warmup < 0 or runs < 1 or sessions < 1 or retries < 0 or tolerance < 0:
            raise ValueError(
                "LatencyCost: warmup, retries and tolerance must be >= 0, runs and sessions >= 1"
            )
        self.input_shape = tuple(int(d) for d in input_shape)
        self.threads, self.warmup, self.runs, self.sessions = threads, warmup, runs, sessions
        self.retries, self.tolerance = retries, tolerance
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.dynamo = dynamo
        self.subtract_overhead = subtract_overhead
        nodes = {True: "constants", False: "none"}.get(nodes, nodes)  # type: ignore[call-overload]
        if nodes not in ("constants", "all", "none"):
            raise ValueError(f"LatencyCost: nodes must be 'constants', 'all' or 'none', got {nodes!r}")
        self.nodes = nodes
        self.measured = 0

    # -- table -------------------------------------------------------------------------------------------------
    @property
    def table_path(self) -> Path:
        """The JSON lookup table file."""
        return self.cache_dir / "latency_table.json"

    def _context(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "batch": self.input_shape[0],
            "threads": self.threads,
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "exporter": "dynamo" if self.dynamo else "torchscript",
            "cpu": cpu_model(),
        }

    def _key(self, signature: str, input_shape: Sequence[int]) -> tuple[str, dict[str, Any]]:
        fields = {"block": signature, "input_shape": list(input_shape), **self._context()}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
        return digest, fields

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.table_path) as f:
                return json.load(f).get("entries", {})
        except (OSError, ValueError):
            return {}

    def _save(self, new: Mapping[str, Any]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        entries = self._load()
        entries.update(new)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".json.tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"format": "nni-bsn latency table v1", "entries": entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.table_path)

    def _time(
        self, module: nn.Module, input_shape: Sequence[int] | Sequence[Sequence[int]]
    ) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "block.onnx")
            export_onnx(module, input_shape, path, self.dynamo)
            return measure_onnx(
                path,
                input_shape,
                self.threads,
                self.warmup,
                self.runs,
                self.sessions,
                self.retries,
                self.tolerance,
            )

    def _measure_jobs(self, jobs: Mapping[str, tuple[dict[str, Any], nn.Module, Any]]) -> dict[str, Any]:
        """Measure the jobs not in the table yet, save them; return the whole table."""
        stored = self._load()
        new: dict[str, Any] = {}
        for key, (fields, module, shape_in) in jobs.items():
            if key in stored or key in new:
                continue
            _log.info("LatencyCost: measuring %s at %s", fields["block"][:60], shape_in)
            new[key] = {
                "key": fields,
                **self._time(module, shape_in),
                "measured_at": _dt.datetime.now().isoformat(timespec="seconds"),
                "warmup": self.warmup,
                "runs": self.runs,
                "sessions": self.sessions,
            }
        if new:
            self._save(new)
            stored.update(new)
        self.measured += len(new)
        return stored

    # -- binding ---------------------------------------------------------------------------------------------------
    def _bind(self, space: Any) -> None:
        self._prune = getattr(space, "prune", None)
        self._memo = {}
        self.table, self.fixed, self.measured = {}, 0.0, 0
        self.entries: dict[
            str, str
        ] = {}  # gate label, '<node>...', '<overhead>...' or '<reference>' -> table key
        self.node_entries: dict[Any, dict[int, float]] = {}  # node -> {pattern: ms}
        self._gated = False
        if not is_gate_space(space):
            self.mode = "exact"
            return
        graph = space.graph
        labels = graph.labels
        model_on = space.freeze({label: GATE_ON for label in labels})
        paths = {label: mods[0][0] for label, mods in choice_modules(space).items()}
        shapes = block_shapes(model_on, list(paths.values()), torch.zeros(*self.input_shape))
        jobs: dict[str, tuple[dict[str, Any], nn.Module, Any]] = {}

        def overhead_key(shape: tuple[int, ...]) -> str:
            key, fields = self._key("overhead: one ReLU", shape)
            jobs.setdefault(key, (fields, _Echo(), shape))
            return key

        for label in labels:
            module = model_on.get_submodule(paths[label])
            shape_in = shapes[paths[label]][0]
            key, fields = self._key(f"{type(module).__name__}:{module!r}", shape_in)
            self.entries[label] = key
            jobs.setdefault(key, (fields, module, shape_in))
            self.entries[f"<overhead>{label}"] = overhead_key(shape_in)

        # Nodes: inputs in summation order (graph.edges order), shape from a gated input's block output.
        names = {index: node for node, index in graph.nodes.items()}
        node_inputs: dict[int, list[int]] = {}
        node_shape: dict[int, tuple[int, ...]] = {}
        for i, (_, t, label) in enumerate(graph.edges):
            node_inputs.setdefault(t, []).append(i)
            if label is not None:
                node_shape.setdefault(t, tuple(shapes[paths[label]][1]))
        self._node_plan: list[
            tuple[int, list[int], list[str | None]]
        ] = []  # (node, input edges, pattern keys)
        if self.nodes != "none":
            for t, inputs in node_inputs.items():
                if t not in node_shape:  # only ungated inputs: the same in every architecture (in `fixed`)
                    continue
                if len(inputs) > 12:
                    raise ValueError(f"LatencyCost: node {names[t]!r} has {len(inputs)} inputs (at most 12)")
                shape = node_shape[t]
                pattern_keys: list[str | None] = [None]
                for p in range(1, 2 ** len(inputs)):
                    live, zeros = node_signature([bool(p >> b & 1) for b in range(len(inputs))])
                    if self.nodes == "constants":  # the sum of live inputs is fused into their convolutions
                        live = 1
                    if (live, zeros) == (1, 0):  # relu(x): the overhead graph itself
                        key = overhead_key(shape)
                    else:
                        key, fields = self._key(
                            f"node: sum of {live} inputs + {zeros} zero constants, ReLU", shape
                        )
                        jobs.setdefault(key, (fields, _NodeSum(live, zeros, shape), [shape] * live))
                    self.entries[f"<node>{names[t]}:{live},{zeros}"] = key
                    self.entries[f"<overhead><node>{names[t]}"] = overhead_key(shape)
                    pattern_keys.append(key)
                self._node_plan.append((t, inputs, pattern_keys))

        stored = self._measure_jobs(jobs)

        def entry(key: str, overhead: str) -> float:
            t = stored[key]["median_ms"]
            if self.subtract_overhead:
                t = max(0.0, t - stored[overhead]["median_ms"])
            return t

        self.table = {
            label: {GATE_ON: entry(self.entries[label], self.entries[f"<overhead>{label}"]), GATE_OFF: 0.0}
            for label in labels
        }
        self._graph = graph
        self._edges_st = [(s, t) for s, t, _ in graph.edges]
        self._edge_labels = [label for _, _, label in graph.edges]
        self._n_nodes = len(graph.nodes)
        on = [self.table[label][GATE_ON] for label in labels]
        self._gate_costs = [
            (i, on[j]) for j, i in enumerate(i for i, lb in enumerate(self._edge_labels) if lb)
        ]
        self._nodes_compiled: list[tuple[list[int], list[float]]] = []
        for t, inputs, pattern_keys in self._node_plan:
            oh = self.entries[f"<overhead><node>{names[t]}"]
            costs = [0.0] + [entry(key, oh) for key in pattern_keys[1:]]  # type: ignore[arg-type]
            self.node_entries[names[t]] = {p: c for p, c in enumerate(costs) if p}
            self._nodes_compiled.append((inputs, costs))

        # fixed: calibrated on the cheapest path architecture, measured whole.
        self.fixed = 0.0
        self._on = on
        self._off = [0.0] * len(labels)
        self._off_zero = True
        self.mode = "additive"
        self._gated = True
        self.reference = self._reference_arch()
        model_ref = space.freeze(self.reference)
        digest = hashlib.sha256(repr(model_ref).encode()).hexdigest()[:16]
        key, fields = self._key(
            f"whole model, reference architecture: {type(space).__name__} {digest}", self.input_shape
        )
        self.entries["<reference>"] = key
        stored = self._measure_jobs({key: (fields, model_ref, self.input_shape)})
        self.reference_ms = stored[key]["median_ms"]
        self.fixed = self.reference_ms - self.cost(self.reference)
        if self.fixed < 0:
            _log.warning(
                "LatencyCost: the table overestimates the reference architecture (fixed part %.4f ms < 0)",
                self.fixed,
            )

    def _reference_arch(self) -> dict[str, str]:
        """The cheapest input -> output path by block entries (ungated edges are free), pruned."""
        graph = self._graph
        dist = [float("inf")] * self._n_nodes
        via: list[int | None] = [None] * self._n_nodes
        dist[graph.source] = 0.0
        for i, ((s, t), label) in enumerate(zip(self._edges_st, self._edge_labels)):
            w = 0.0 if label is None else self.table[label][GATE_ON]
            if dist[s] + w < dist[t]:
                dist[t], via[t] = dist[s] + w, i
        arch = {label: GATE_OFF for label in graph.labels}
        t = graph.sink
        while t != graph.source and via[t] is not None:
            i = via[t]
            if self._edge_labels[i] is not None:
                arch[self._edge_labels[i]] = GATE_ON  # type: ignore[index]
            t = self._edges_st[i][0]
        return graph.prune(arch)

    def _live_edges(self, arch: Arch) -> list[bool]:
        """Whether each edge of the gate graph (gated or not) is present and on an input -> output path."""
        try:
            present = [label is None or arch[label] == GATE_ON for label in self._edge_labels]
        except KeyError as e:
            raise KeyError(f"architecture has no value for gate {e.args[0]!r}") from None
        fwd = [False] * self._n_nodes
        fwd[self._graph.source] = True
        for (s, t), p in zip(self._edges_st, present):
            if p and fwd[s]:
                fwd[t] = True
        bwd = [False] * self._n_nodes
        bwd[self._graph.sink] = True
        for (s, t), p in zip(reversed(self._edges_st), reversed(present)):
            if p and bwd[t]:
                bwd[s] = True
        return [p and fwd[s] and bwd[t] for (s, t), p in zip(self._edges_st, present)]

    def cost(self, arch: Arch) -> float:
        """Latency (ms) of ``arch`` counted on its pruned form: fixed + live blocks + live nodes."""
        if not self._gated:
            return super().cost(arch)
        live = self._live_edges(arch)
        total = self.fixed
        for i, c in self._gate_costs:
            if live[i]:
                total += c
        for inputs, costs in self._nodes_compiled:
            p = 0
            for b, i in enumerate(inputs):
                if live[i]:
                    p |= 1 << b
            total += costs[p]
        return float(total)

    def expected_cost(self, probabilities: Mapping[str, Mapping[Any, Any]]) -> Any:
        """Expected cost of the *sampled* (unpruned) architecture under independent gates; floats or tensors.

        Blocks: ``p(on) * entry``; nodes: the sum over input patterns of the pattern's probability times its
        entry (ungated inputs always present). Pruning is not applied (as in ``AdditiveCost.expected_cost``)."""
        self._require_bound()
        if not self._gated:
            return super().expected_cost(probabilities)
        q: list[Any] = []
        for label in self._edge_labels:
            if label is None:
                q.append(1.0)
            elif label not in probabilities:
                raise KeyError(f"expected_cost: no probabilities for choice {label!r}")
            else:
                q.append(probabilities[label].get(GATE_ON, 0.0))
        total: Any = self.fixed
        for i, c in self._gate_costs:
            total = total + q[i] * c
        for inputs, costs in self._nodes_compiled:
            for p, c in enumerate(costs):
                if not c:
                    continue
                w: Any = 1.0
                for b, i in enumerate(inputs):
                    w = w * (q[i] if p >> b & 1 else 1.0 - q[i])
                total = total + w * c
        return total

    def min_cost(self) -> float | None:
        """A lower bound of the cheapest connected architecture: fixed + the cheapest path's block entries (node
        entries, >= 0, left out)."""
        return super().min_cost()

    def terms(self, arch: Arch) -> dict[str, Any]:
        """The table's terms for ``arch`` (pruned): fixed, live blocks (per gate) and live nodes (per node)."""
        self._require_bound()
        if not self._gated:
            raise NotImplementedError("LatencyCost.terms needs a gate space")
        live = self._live_edges(arch)
        blocks = {self._edge_labels[i]: c for i, c in self._gate_costs if live[i]}
        names = {index: node for node, index in self._graph.nodes.items()}
        nodes = {}
        for (t, _, _), (inputs, costs) in zip(self._node_plan, self._nodes_compiled):
            p = sum(1 << b for b, i in enumerate(inputs) if live[i])
            if p:
                nodes[names[t]] = costs[p]
        return {"fixed": self.fixed, "blocks": blocks, "nodes": nodes}

    def attribute_arch(
        self, arch: Arch, warmup: int | None = None, runs: int | None = None
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
        import re

        import onnx
        import onnxruntime as ort

        self._require_bound()
        arch = self.space.prune(arch)
        warmup = self.warmup if warmup is None else warmup
        runs = self.runs if runs is None else runs
        labels = set(self._graph.labels)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            export_onnx(self.space.freeze(arch), self.input_shape, path, self.dynamo)
            graph = onnx.load(path).graph
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, "profile")
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            x = np.random.default_rng(0).standard_normal(self.input_shape).astype(np.float32)
            feed = {i.name: x for i in sess.get_inputs()}
            for _ in range(warmup):
                sess.run(None, feed)
            for _ in range(runs):
                sess.run(None, feed)
            with open(sess.end_profiling()) as f:
                events = json.load(f)
        by_name = {n.name: n for n in graph.node}
        by_value = {v: n for n in graph.node for v in n.output}
        model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[
            -runs:
        ]
        t0 = model_runs[0]["ts"] if model_runs else 0
        kernels = []
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= t0:
                name = e["name"][: -len("_kernel_time")]
                kernels.append((name[: -len("_nchwc")] if name.endswith("_nchwc") else name, e))
        executed = {name for name, _ in kernels}

        def gate_of(node: Any) -> str | None:
            scope = node.name + " " + " ".join(p.value for p in node.metadata_props if "name_scopes" in p.key)
            return next((t for t in re.split(r"[/.\[\]'\", ]+", scope) if t in labels), None)

        def fused_conv_gate(node: Any) -> str | None:
            # A Conv kernel named after the Add/Relu fused into it: the nearest Conv upstream that did not run
            # as a kernel of its own.
            todo, seen = [node], set()
            while todo:
                n = todo.pop(0)
                for v in n.input:
                    src = by_value.get(v)
                    if src is None or src.name in seen:
                        continue
                    seen.add(src.name)
                    if src.op_type == "Conv" and src.name not in executed and not set(src.output) & executed:
                        return gate_of(src)
                    if src.op_type in ("Add", "Relu", "Sum", "BatchNormalization"):
                        todo.append(src)
            return None

        gate_ms: dict[str, float] = {}
        kind_ms = {"blocks": 0.0, "nodes": 0.0, "layout": 0.0, "other": 0.0}
        for name, e in kernels:
            node = by_name.get(name) or by_value.get(name)
            op = e.get("args", {}).get("op_name", "")
            gate = None
            if node is not None:
                gate = gate_of(node)
                if gate is None and op == "Conv" and node.op_type != "Conv":
                    gate = fused_conv_gate(node)
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
        terms = self.terms(arch)
        per_gate = sorted(
            (
                {"gate": g, "profiled_ms": gate_ms.get(g, 0.0), "table_ms": c}
                for g, c in terms["blocks"].items()
            ),
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
            "predicted_ms": self.cost(arch),
            "gates": per_gate,
        }

    def _measure(self, model: Any) -> tuple[float, dict[str, float]]:
        raise NotImplementedError("LatencyCost measures blocks by export, not by module path")

    def _exact(self, model: Any) -> float:
        return self.measure_model(model)

    def measure_model(self, model: nn.Module) -> float:
        """Measured latency (ms) of a whole frozen model, same protocol as the table entries (not cached)."""
        return self._time(model, self.input_shape)["median_ms"]

    # -- validation ---------------------------------------------------------------------------------------------------
    def validate(
        self, n: int = 20, seed: int = 0, p_on: float = 0.7, min_ms: float = 0.0, attribute: bool = False
    ) -> dict[str, Any]:
        """Compare ``cost(arch)`` with whole-model measurements on ``n`` random connected architectures.

        Gates are on with probability ``p_on``; each architecture is pruned, frozen, exported whole and measured
        with the same protocol as the table; architectures measured below ``min_ms`` are skipped (counted in
        ``skipped``). Returns MAPE (%), the share within +-10 %, Spearman's rank correlation and the
        ``(predicted, measured)`` pairs with their (pruned) ``archs``, so other tables can be scored on the same
        measurements. With ``attribute=True``, the architecture with the largest error is profiled
        (``attribute_arch``) and the result has its ``attribution``.
        """
        self._require_bound()
        if not self._gated:
            raise NotImplementedError(
                "LatencyCost.validate needs a gate space (predictions come from the table)"
            )
        from scipy.stats import spearmanr

        rng = random.Random(seed)
        labels = self.space.graph.labels
        pairs: list[dict[str, Any]] = []
        archs: list[dict[str, str]] = []
        tries = skipped = 0
        while len(pairs) < n and tries < 100 * n:
            tries += 1
            arch = {label: GATE_ON if rng.random() < p_on else GATE_OFF for label in labels}
            if not self.space.is_connected(arch):
                continue
            arch = self.space.prune(arch)
            predicted = self.cost(arch)
            timing = self._time(self.space.freeze(arch), self.input_shape)
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
            report["attribution"] = {"index": worst, **self.attribute_arch(archs[worst])}
        return report

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            counted="ONNX Runtime CPU latency (median ms): fixed part (calibrated on a measured reference "
            "architecture) + per-block table entries of the live gates + per-node entries of the live "
            "aggregation nodes (live inputs, constant zero additions, shape)",
            backend=f"onnxruntime on {cpu_model()}",
            subtract_overhead=self.subtract_overhead,
            nodes=self.nodes,
            input_shape=list(self.input_shape),
            threads=self.threads,
            warmup=self.warmup,
            runs=self.runs,
            sessions=self.sessions,
            retries=self.retries,
            tolerance=self.tolerance,
            table=str(self.table_path),
            measured_at_bind=self.measured,
        )
        if self.is_bound and self._gated:
            d.update(
                reference_ms=self.reference_ms,
                node_entries=len(set(v for k, v in self.entries.items() if k.startswith("<node>"))),
            )
        with contextlib.suppress(Exception):
            d.update(self._context())
        return d
