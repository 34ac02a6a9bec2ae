"""Latency measured with ONNX Runtime on the CPU: a per-block lookup table kept on disk, and its validation.

Protocol (reference/costs_and_peers.md section 7.3): every gated block is exported alone to ONNX at the input
shape it sees in the super network, run in an ORT session (``CPUExecutionProvider``, ``ORT_ENABLE_ALL`` -- the
deployed graph --, sequential executor, ``inter_op_num_threads=1``, ``intra_op_num_threads`` set explicitly),
warmed up, then timed with ``perf_counter_ns`` around ``session.run``; the entry is the median over runs, and the
median over ``sessions`` fresh sessions. Entries are keyed by block signature (module repr + input shape), batch,
threads, exporter, onnxruntime and torch versions and CPU model, and saved as JSON, so a later bind on the same
machine measures nothing.
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

from .base import AdditiveCost
from .blocks import GATE_OFF, GATE_ON, block_shapes, choice_modules, is_gate_space

__all__ = ["LatencyCost", "measure_onnx", "cpu_model", "default_cache_dir"]

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


def export_onnx(module: nn.Module, input_shape: Sequence[int], path: str | os.PathLike, dynamo: bool = True) -> None:
    """Export ``module`` (eval mode) at a fixed ``input_shape``, quietly (the dynamo exporter prints progress)."""
    x = torch.zeros(*input_shape)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module.eval(), (x,), str(path), input_names=["x"], output_names=["y"], dynamo=dynamo)


def measure_onnx(
    path: str | os.PathLike,
    input_shape: Sequence[int],
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    sessions: int = 3,
) -> dict[str, float]:
    """Median latency (ms) of an ONNX file in ONNX Runtime on the CPU: ``sessions`` fresh sessions, each with
    ``warmup`` untimed and ``runs`` timed runs; the median of the per-session medians, plus p90 and CV."""
    import onnxruntime as ort

    feed_value = np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(np.float32)
    medians, all_times = [], []
    for _ in range(sessions):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {i.name: feed_value for i in sess.get_inputs()}  # an input the graph ignores may be dropped
        for _ in range(warmup):
            sess.run(None, feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        medians.append(statistics.median(times))
        all_times += times
        del sess
    mean = statistics.fmean(all_times)
    return {
        "median_ms": statistics.median(medians),
        "p90_ms": float(np.percentile(all_times, 90)),
        "cv": statistics.pstdev(all_times) / mean if mean > 0 else 0.0,
        "session_spread": (max(medians) - min(medians)) / statistics.median(medians) if medians[0] > 0 else 0.0,
    }


class _Echo(nn.Module):
    """The cheapest graph with an input and an output of the block's input shape: what one ORT run costs
    beyond the block's own kernels (binding, allocation, executor), measured to subtract it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class LatencyCost(AdditiveCost):
    """Latency (ms) of the pruned architecture in ONNX Runtime on this CPU, from a per-block lookup table.

    ``cost(arch) = fixed + sum of the table entries of the live gated blocks``, where ``fixed`` is the measured
    latency of the whole model with every gate off (stem, classifier, ungated skips and the per-run overhead of
    ORT; what an 'off' gate leaves -- zeros that ORT folds into constants -- is free), and each block entry is the
    block exported and timed alone at its real input shape, minus (``subtract_overhead=True``) the time of a
    one-ReLU graph at that shape: the per-run overhead (input binding, output allocation, executor) that a block
    inside the whole model does not pay again. Without it, small blocks are overestimated several times over.
    Not in any entry: the node additions and ReLUs between blocks. ``validate`` measures how far this sum is
    from whole-model measurements. Attribution of whole-model time with ORT's per-node profiler is not
    implemented.

    Identical blocks (same module repr and input shape) are measured once. Spaces that are not gate spaces are
    measured per architecture (whole model exported and timed, memoised).

    Parameters
    ----------
    input_shape
        Input shape, batch included (the batch is part of every table key).
    threads
        ``intra_op_num_threads`` of every session (1 to 1 per core; never above ``os.cpu_count()``).
    warmup, runs, sessions
        Untimed runs, timed runs per session (the median is kept), fresh sessions per entry (median of medians).
    cache_dir
        Where the JSON table lives (default ``~/.cache/nni-bsn/latency``).
    dynamo
        Use the dynamo ONNX exporter (default, needs onnxscript); ``False`` uses the legacy TorchScript one.
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
    ) -> None:
        super().__init__(verify=0)
        n_cpu = os.cpu_count() or 1
        if not isinstance(threads, int) or not 1 <= threads <= n_cpu:
            raise ValueError(f"LatencyCost: threads must be an integer in [1, {n_cpu}] (os.cpu_count()), got {threads!r}")
        if warmup < 0 or runs < 1 or sessions < 1:
            raise ValueError("LatencyCost: warmup must be >= 0, runs and sessions >= 1")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.threads, self.warmup, self.runs, self.sessions = threads, warmup, runs, sessions
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.dynamo = dynamo
        self.subtract_overhead = subtract_overhead
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

    def _time(self, module: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "block.onnx")
            export_onnx(module, input_shape, path, self.dynamo)
            return measure_onnx(path, input_shape, self.threads, self.warmup, self.runs, self.sessions)

    # -- binding ---------------------------------------------------------------------------------------------------
    def _bind(self, space: Any) -> None:
        self._prune = getattr(space, "prune", None)
        self._memo = {}
        self.table, self.fixed, self.measured = {}, 0.0, 0
        self.entries: dict[str, str] = {}  # gate label (or '<fixed>') -> table key
        self._gated = False
        if not is_gate_space(space):
            self.mode = "exact"
            return
        labels = space.graph.labels
        model_on = space.freeze({label: GATE_ON for label in labels})
        model_off = space.freeze({label: GATE_OFF for label in labels})
        paths = {label: mods[0][0] for label, mods in choice_modules(space).items()}
        shapes = block_shapes(model_on, list(paths.values()), torch.zeros(*self.input_shape))
        jobs: dict[str, tuple[dict[str, Any], nn.Module, tuple[int, ...]]] = {}
        for label in labels:
            module = model_on.get_submodule(paths[label])
            shape_in = shapes[paths[label]][0]
            key, fields = self._key(f"{type(module).__name__}:{module!r}", shape_in)
            self.entries[label] = key
            jobs.setdefault(key, (fields, module, shape_in))
            if self.subtract_overhead:
                key, fields = self._key("overhead: one ReLU", shape_in)
                self.entries[f"<overhead>{label}"] = key
                jobs.setdefault(key, (fields, _Echo(), shape_in))
        digest = hashlib.sha256(repr(model_off).encode()).hexdigest()[:16]
        key, fields = self._key(f"whole model, every gate off: {type(space).__name__} {digest}", self.input_shape)
        self.entries["<fixed>"] = key
        jobs.setdefault(key, (fields, model_off, self.input_shape))

        stored = self._load()
        new: dict[str, Any] = {}
        for key, (fields, module, shape_in) in jobs.items():
            if key in stored:
                continue
            _log.info("LatencyCost: measuring %s at %s", fields["block"][:60], shape_in)
            new[key] = {"key": fields, **self._time(module, shape_in),
                        "measured_at": _dt.datetime.now().isoformat(timespec="seconds"),
                        "warmup": self.warmup, "runs": self.runs, "sessions": self.sessions}
        if new:
            self._save(new)
            stored.update(new)
        self.measured = len(new)
        def entry(label: str) -> float:
            t = stored[self.entries[label]]["median_ms"]
            if self.subtract_overhead:
                t = max(0.0, t - stored[self.entries[f"<overhead>{label}"]]["median_ms"])
            return t

        self.table = {label: {GATE_ON: entry(label), GATE_OFF: 0.0} for label in labels}
        self.fixed = stored[self.entries["<fixed>"]]["median_ms"]
        self.mode = "additive"
        self._gated = True
        self._graph = space.graph
        self._on = [self.table[label][GATE_ON] for label in labels]
        self._off = [0.0] * len(labels)
        self._off_zero = True

    def _measure(self, model: Any) -> tuple[float, dict[str, float]]:
        raise NotImplementedError("LatencyCost measures blocks by export, not by module path")

    def _exact(self, model: Any) -> float:
        return self.measure_model(model)

    def measure_model(self, model: nn.Module) -> float:
        """Measured latency (ms) of a whole frozen model, same protocol as the table entries (not cached)."""
        return self._time(model, self.input_shape)["median_ms"]

    # -- validation ---------------------------------------------------------------------------------------------------
    def validate(self, n: int = 20, seed: int = 0, p_on: float = 0.7, min_ms: float = 0.0) -> dict[str, Any]:
        """Compare ``cost(arch)`` with whole-model measurements on ``n`` random connected architectures.

        Gates are on with probability ``p_on``; each architecture is pruned, frozen, exported whole and measured
        with the same protocol as the table; architectures measured below ``min_ms`` are skipped (counted in
        ``skipped``). Returns MAPE (%), the share within +-10 %, Spearman's rank correlation and the
        ``(predicted, measured)`` pairs.
        """
        self._require_bound()
        if not self._gated:
            raise NotImplementedError("LatencyCost.validate needs a gate space (predictions come from the table)")
        from scipy.stats import spearmanr

        rng = random.Random(seed)
        labels = self.space.graph.labels
        pairs: list[dict[str, Any]] = []
        tries = skipped = 0
        while len(pairs) < n and tries < 100 * n:
            tries += 1
            arch = {label: GATE_ON if rng.random() < p_on else GATE_OFF for label in labels}
            if not self.space.is_connected(arch):
                continue
            arch = self.space.prune(arch)
            predicted = self.cost(arch)
            measured = self.measure_model(self.space.freeze(arch))
            if measured < min_ms:
                skipped += 1
                continue
            pairs.append({"predicted_ms": predicted, "measured_ms": measured,
                          "live_gates": sum(v == GATE_ON for v in arch.values())})
        errors = [abs(p["predicted_ms"] - p["measured_ms"]) / p["measured_ms"] for p in pairs]
        signed = [(p["predicted_ms"] - p["measured_ms"]) / p["measured_ms"] for p in pairs]
        rho = spearmanr([p["predicted_ms"] for p in pairs], [p["measured_ms"] for p in pairs]).statistic
        return {
            "n": len(pairs),
            "skipped": skipped,
            "mape_pct": 100 * statistics.fmean(errors),
            "mean_signed_error_pct": 100 * statistics.fmean(signed),
            "max_error_pct": 100 * max(errors),
            "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
            "spearman": float(rho),
            "pairs": pairs,
        }

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            counted="ONNX Runtime CPU latency (median ms): whole model with every gate off + per-block table "
            "entries of the live gates",
            backend=f"onnxruntime on {cpu_model()}", subtract_overhead=self.subtract_overhead,
            input_shape=list(self.input_shape),
            threads=self.threads, warmup=self.warmup, runs=self.runs, sessions=self.sessions,
            table=str(self.table_path), measured_at_bind=self.measured,
        )
        with contextlib.suppress(Exception):
            d.update(self._context())
        return d
