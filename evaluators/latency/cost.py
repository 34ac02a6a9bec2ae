"""Latency measured with ONNX Runtime on the CPU, as a lookup table kept on disk.

Every gated block is exported alone to ONNX at the input shape it sees in the super network, and every
aggregation node's unfused additions as a tiny graph at its shape (``nodes.py``); each is measured with the
protocol of ``ort.py`` and kept in the on-disk cache of ``cache.py``. A whole reference architecture is
measured to calibrate the fixed part. How well the table predicts whole models, and where the time of one model
goes: ``diagnostics.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluators.base import Arch
from evaluators.blocks import GATE_OFF, GATE_ON, all_gates, block_shapes, choice_modules, is_gate_space
from evaluators.latency import diagnostics
from evaluators.latency.cache import LatencyCache, default_cache_dir, measurement_context
from evaluators.latency.nodes import NodeSum, aggregation_nodes, pattern_signatures
from evaluators.latency.ort import TimingProtocol, cpu_model, measure_module
from evaluators.table import TableCost

__all__ = ["LatencyCost"]

_log = logging.getLogger(__name__)


class _Echo(nn.Module):
    """The cheapest graph with an input and an output of the block's input shape: what one ORT run costs
    beyond the block's own kernels (binding, allocation, executor), measured to subtract it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class LatencyCost(TableCost):
    """Latency (ms) of the pruned architecture in ONNX Runtime on this CPU, from a lookup table.

    On a gate space (both fabrics of ``search_spaces``)::

        cost(arch) = fixed + sum of the block entries of the live gates + sum of the node entries of the live nodes

    What is in the table:

    - **Block entries**: each gated block exported and timed alone at its real input shape, minus
      (``subtract_overhead=True``) the time of a one-ReLU graph at that shape -- the per-run overhead (input
      binding, output allocation, executor) that a block inside the whole model does not pay again.
    - **Node entries** (``nodes.py``: which inputs of a node are live, and the zero constants ORT still
      adds): with ``nodes="constants"`` (default) a node with ``c`` constant additions has the entry of a tiny
      graph ``relu(x + 0 + ... + 0)`` (``c`` zero constants) at the node's shape, minus the one-ReLU overhead: the
      additions ORT runs as separate kernels. The sum of the live inputs and the ReLU are not counted: ORT fuses
      them into the convolutions that produce the inputs (NCHWc Conv with a fused sum input and activation, as its
      optimized graph shows). With ``nodes="all"`` the tiny graph also sums the ``k`` live inputs as graph inputs
      (``k - 1`` unfused additions, ``k`` input bindings); validation found it overestimates (see
      benchmarks/RESULTS.md). ``nodes="none"``: blocks only. A node with no live input is a constant and costs 0.
      Per-node input lists are precomputed at bind, so ``cost(arch)`` is one ``space.graph.live_edges`` sweep plus
      table look-ups (tens of microseconds).
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

    Every entry follows the protocol of reference/costs_and_peers.md section 7.3 (``ort.measure_onnx``), and is
    keyed by signature (module repr or node signature, input shape), batch, threads, exporter, onnxruntime and
    torch versions and CPU model in a JSON file (``cache.LatencyCache``), so a later bind on the same
    machine measures nothing. Identical blocks and nodes are measured once.

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
        super().__init__()
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

    # -- measuring ---------------------------------------------------------------------------------------------
    @property
    def table_path(self) -> Path:
        """The JSON lookup table file."""
        return LatencyCache.path_in(self.cache_dir)

    def _context(self) -> dict[str, Any]:
        return measurement_context(self.input_shape[0], self.threads, self.dynamo)

    @property
    def protocol(self) -> TimingProtocol:
        """How every entry and whole model is timed."""
        return TimingProtocol(
            self.threads, self.warmup, self.runs, self.sessions, self.retries, self.tolerance
        )

    def time_module(self, module: nn.Module, input_shape: Any = None) -> dict[str, Any]:
        """``measure_onnx`` result of ``module`` at ``input_shape`` (default: the cost's), with this cost's
        protocol and exporter; not cached."""
        return measure_module(
            module, self.input_shape if input_shape is None else input_shape, self.dynamo, self.protocol
        )

    def measure_model(self, model: nn.Module) -> float:
        """Measured latency (ms) of a whole frozen model, same protocol as the table entries (not cached)."""
        return self.time_module(model)["median_ms"]

    def _exact(self, model: Any) -> float:
        return self.measure_model(model)

    def _measure_requested(self, cache: LatencyCache) -> dict[str, Any]:
        stored, new = cache.measure(self.time_module)
        self.measured += new
        return stored

    # -- binding ---------------------------------------------------------------------------------------------------
    def _bind(self, space: Any) -> None:
        self._reset(space)
        self.measured = 0
        # Table key of every entry: a gate label, '<node>...', '<overhead>...' or '<reference>' -> key.
        self.entries: dict[str, str] = {}
        self.node_entries: dict[Any, dict[int, float]] = {}  # node -> {pattern: ms}
        if not is_gate_space(space):
            return
        graph = space.graph
        recorded = {"warmup": self.warmup, "runs": self.runs, "sessions": self.sessions}
        cache = LatencyCache(self.cache_dir, self._context(), recorded)
        model_on = space.freeze(all_gates(space))
        paths = {label: mods[0][0] for label, mods in choice_modules(space).items()}
        shapes = block_shapes(model_on, list(paths.values()), torch.zeros(*self.input_shape))
        self._request_blocks(cache, graph, model_on, paths, shapes)
        self._request_nodes(cache, graph, {label: shapes[paths[label]][1] for label in graph.labels})
        self._compile(graph, self._measure_requested(cache))
        self._use_gates(graph)
        self._calibrate(space, cache)

    def _request_blocks(
        self, cache: LatencyCache, graph: Any, model: nn.Module, paths: dict, shapes: dict
    ) -> None:
        """Ask for each gated block's entry at its input shape, and for the overhead graph at that shape."""
        for label in graph.labels:
            module = model.get_submodule(paths[label])
            shape_in = shapes[paths[label]][0]
            self.entries[label] = cache.request(f"{type(module).__name__}:{module!r}", module, shape_in)
            self.entries[f"<overhead>{label}"] = cache.request("overhead: one ReLU", _Echo(), shape_in)

    def _request_nodes(self, cache: LatencyCache, graph: Any, gate_out_shape: dict) -> None:
        """Ask for the entry of every input pattern of every aggregation node (``nodes`` decides which graph)."""
        names = {index: node for node, index in graph.nodes.items()}
        # (node, its input edges in summation order, the table key of each input pattern; None for no input)
        self._node_plan: list[tuple[int, list[int], list[str | None]]] = []
        if self.nodes == "none":
            return
        for t, inputs, shape in aggregation_nodes(graph, gate_out_shape):
            if len(inputs) > 12:
                raise ValueError(f"LatencyCost: node {names[t]!r} has {len(inputs)} inputs (at most 12)")
            overhead = cache.request("overhead: one ReLU", _Echo(), shape)
            pattern_keys: list[str | None] = [None]
            for live, zeros in pattern_signatures(len(inputs), fuse_live=self.nodes == "constants"):
                if (live, zeros) == (1, 0):  # relu(x): the overhead graph itself
                    key = overhead
                else:
                    signature = f"node: sum of {live} inputs + {zeros} zero constants, ReLU"
                    key = cache.request(signature, NodeSum(live, zeros, shape), shape, inputs=live)
                self.entries[f"<node>{names[t]}:{live},{zeros}"] = key
                self.entries[f"<overhead><node>{names[t]}"] = overhead
                pattern_keys.append(key)
            self._node_plan.append((t, inputs, pattern_keys))

    def _compile(self, graph: Any, stored: Mapping[str, Any]) -> None:
        """The measured entries as the table ``cost`` reads: per-gate costs by edge, per-pattern node costs."""

        def entry(key: str, overhead: str) -> float:
            t = stored[key]["median_ms"]
            if self.subtract_overhead:
                t = max(0.0, t - stored[overhead]["median_ms"])
            return t

        labels = graph.labels
        self.table = {
            label: {GATE_ON: entry(self.entries[label], self.entries[f"<overhead>{label}"]), GATE_OFF: 0.0}
            for label in labels
        }
        self._edge_labels = [label for _, _, label in graph.edges]
        gate_edges = [i for i, label in enumerate(self._edge_labels) if label is not None]
        self._gate_costs = [(i, self.table[label][GATE_ON]) for i, label in zip(gate_edges, labels)]
        names = {index: node for node, index in graph.nodes.items()}
        self._nodes_compiled: list[tuple[list[int], list[float]]] = []
        for t, inputs, pattern_keys in self._node_plan:
            overhead = self.entries[f"<overhead><node>{names[t]}"]
            costs = [0.0] + [entry(key, overhead) for key in pattern_keys[1:]]  # type: ignore[arg-type]
            self.node_entries[names[t]] = {p: c for p, c in enumerate(costs) if p}
            self._nodes_compiled.append((inputs, costs))

    def _calibrate(self, space: Any, cache: LatencyCache) -> None:
        """``fixed``: the measured latency of the reference architecture (the cheapest path by block entries,
        measured whole) minus what the table says of it."""
        self.fixed = 0.0
        _, self.reference = space.graph.cheapest_path({label: c[GATE_ON] for label, c in self.table.items()})
        model_ref = space.freeze(self.reference)
        digest = hashlib.sha256(repr(model_ref).encode()).hexdigest()[:16]
        signature = f"whole model, reference architecture: {type(space).__name__} {digest}"
        key = self.entries["<reference>"] = cache.request(signature, model_ref, self.input_shape)
        self.reference_ms = self._measure_requested(cache)[key]["median_ms"]
        self.fixed = self.reference_ms - self.cost(self.reference)
        if self.fixed < 0:
            _log.warning(
                "LatencyCost: the table overestimates the reference architecture (fixed part %.4f ms < 0)",
                self.fixed,
            )

    # -- queries ---------------------------------------------------------------------------------------------------
    def cost(self, arch: Arch) -> float:
        """Latency (ms) of ``arch`` counted on its pruned form: fixed + live blocks + live nodes."""
        if not self._gated:
            return self._exact_cost(arch)
        live = self._graph.live_edges(arch)
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
        live = self._graph.live_edges(arch)
        blocks = {self._edge_labels[i]: c for i, c in self._gate_costs if live[i]}
        names = {index: node for node, index in self._graph.nodes.items()}
        nodes = {}
        for (t, _, _), (inputs, costs) in zip(self._node_plan, self._nodes_compiled):
            p = sum(1 << b for b, i in enumerate(inputs) if live[i])
            if p:
                nodes[names[t]] = costs[p]
        return {"fixed": self.fixed, "blocks": blocks, "nodes": nodes}

    # -- diagnostics (diagnostics.py) -------------------------------------------------------------------------
    def attribute_arch(
        self, arch: Arch, warmup: int | None = None, runs: int | None = None
    ) -> dict[str, Any]:
        """Where the whole-model time of ``arch`` goes, from ORT's per-node profiler, next to the table's terms
        (``diagnostics.attribute_arch``)."""
        return diagnostics.attribute_arch(self, arch, warmup, runs)

    def validate(
        self, n: int = 20, seed: int = 0, p_on: float = 0.7, min_ms: float = 0.0, attribute: bool = False
    ) -> dict[str, Any]:
        """``cost(arch)`` against whole-model measurements on ``n`` random connected architectures
        (``diagnostics.validate``)."""
        return diagnostics.validate(self, n, seed, p_on, min_ms, attribute)

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
            **asdict(self.protocol),
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
