"""Measuring with ONNX Runtime on the CPU: export, sessions as deployed, the timing loop and its protocol.

Protocol (reference/costs_and_peers.md section 7.3): a module is exported alone to ONNX at a fixed input shape and
run in ORT sessions (``CPUExecutionProvider``, ``ORT_ENABLE_ALL`` -- the deployed graph --, sequential executor,
``inter_op_num_threads=1``, ``intra_op_num_threads`` set explicitly), warmed up, then timed with
``perf_counter_ns`` around ``session.run``; the result is the median over runs, and the median over fresh
sessions, re-measured when the sessions disagree by more than a tolerance (5 % by default).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "cpu_model",
    "export_onnx",
    "ort_session_options",
    "ort_cpu_session",
    "time_session",
    "TimingProtocol",
    "measure_onnx",
    "measure_module",
]

_log = logging.getLogger(__name__)

Shapes = Sequence[int] | Sequence[Sequence[int]]


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


def _as_shapes(input_shape: Shapes) -> list[tuple[int, ...]]:
    """One shape (``(1, 3, 32, 32)``) or several (``[(1, 8, 4, 4), (1, 8, 4, 4)]``) as a list of tuples."""
    if len(input_shape) and isinstance(input_shape[0], (list, tuple)):
        return [tuple(int(d) for d in s) for s in input_shape]  # type: ignore[union-attr]
    return [tuple(int(d) for d in input_shape)]  # type: ignore[arg-type]


def export_onnx(module: nn.Module, input_shape: Shapes, path: str | os.PathLike, dynamo: bool = True) -> None:
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


def ort_session_options(threads: int = 1, profile_prefix: str | os.PathLike | None = None) -> Any:
    """ORT session options as deployed: all graph optimisations, sequential, ``threads`` intra-op threads, one
    inter-op thread, quiet; with ``profile_prefix``, ORT's per-node profiler writes its JSON there."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    return so


def ort_cpu_session(
    path: str | os.PathLike, threads: int = 1, profile_prefix: str | os.PathLike | None = None
) -> Any:
    """A fresh ONNX Runtime CPU session of the ONNX file at ``path``, with ``ort_session_options``."""
    import onnxruntime as ort

    so = ort_session_options(threads, profile_prefix)
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


def _spread(values: Sequence[float]) -> float:
    """(max - min) / median: how much the session medians disagree."""
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else 0.0


def _random_feed(
    session: Any, shapes: list[tuple[int, ...]], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Standard-normal inputs for every input the session kept (an input the graph ignores may be dropped)."""
    feed = {}
    for i, inp in enumerate(session.get_inputs()):
        static = all(isinstance(d, int) for d in inp.shape)
        shape = tuple(inp.shape) if static else shapes[min(i, len(shapes) - 1)]
        feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


@dataclass(frozen=True)
class TimingProtocol:
    """How ``measure_onnx`` times an ONNX file, robust to a shared machine.

    A *round* is ``sessions`` fresh sessions with ``threads`` intra-op threads, each with ``warmup`` untimed and
    ``runs`` timed runs of ``session.run`` (``perf_counter_ns``); when the session medians of a round disagree by
    more than ``tolerance`` (``(max - min) / median``), another round is run, up to ``retries`` extra rounds.
    """

    threads: int = 1
    warmup: int = 10
    runs: int = 50
    sessions: int = 3
    retries: int = 3
    tolerance: float = 0.05


def measure_onnx(
    path: str | os.PathLike, input_shape: Shapes, protocol: TimingProtocol | None = None
) -> dict[str, Any]:
    """Median latency (ms) of an ONNX file in ONNX Runtime on the CPU, timed with ``protocol`` (default
    ``TimingProtocol()``).

    The result is the median of every session median of every round (a load spike in one session moves it
    little), plus p90, CV over all timed runs, the spread of the last round, the number of rounds, and the
    session medians.
    """
    protocol = protocol or TimingProtocol()
    threads, warmup, runs, sessions = protocol.threads, protocol.warmup, protocol.runs, protocol.sessions
    shapes = _as_shapes(input_shape)
    rng = np.random.default_rng(0)
    medians: list[float] = []
    all_times: list[float] = []
    rounds = 0
    while True:
        round_medians = []
        for _ in range(sessions):
            sess = ort_cpu_session(path, threads)
            times = time_session(sess, _random_feed(sess, shapes, rng), warmup, runs)
            round_medians.append(statistics.median(times))
            all_times += times
            del sess
        medians += round_medians
        rounds += 1
        spread = _spread(round_medians)
        if spread <= protocol.tolerance or rounds > protocol.retries:
            break
        _log.info(
            "measure_onnx: session medians disagree by %.1f %% (> %.0f %%): re-measuring (round %d)",
            100 * spread,
            100 * protocol.tolerance,
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


def measure_module(
    module: nn.Module, input_shape: Shapes, dynamo: bool = True, protocol: TimingProtocol | None = None
) -> dict[str, Any]:
    """``measure_onnx`` of ``module`` exported at ``input_shape`` (to a temporary file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "block.onnx")
        export_onnx(module, input_shape, path, dynamo)
        return measure_onnx(path, input_shape, protocol)
