"""From a found architecture to a deployable file: freeze, load weights, ONNX export, ONNX Runtime parity, latency.

``load_frozen_model(space, arch, weights)`` builds the plain torch model of one architecture (the space's
``freeze``) and loads trained weights strictly. ``export_onnx`` writes it as ONNX with a dynamic batch axis
(input ``'input'``, output ``'logits'``), checks the file with ``onnx.checker`` and proves it in a fresh ONNX Runtime
session: the outputs on the given example and on a second batch size must match torch to ``tolerance``, or
``ExportError`` is raised and no file is left at ``path``. ``measure_ort_latency`` times a file in ONNX Runtime with
the protocol of ``reference/costs_and_peers.md`` section 3: explicit intra-op threads (never more than the cores),
warm-up runs, ``perf_counter_ns`` around ``session.run``, the median reported.

The cost report (MACs, parameters, budgets) lives elsewhere; this module only proves the file runs and says how fast.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "ExportError",
    "export_onnx",
    "measure_ort_latency",
    "export_and_time",
    "load_frozen_model",
    "save_weights",
    "write_metadata",
    "read_metadata",
    "INPUT_NAME",
    "OUTPUT_NAME",
]

_log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Above this many bytes of weights an ONNX protobuf cannot hold them inline (hard limit 2 GiB).
_INLINE_WEIGHTS_LIMIT = 1_800_000_000


class ExportError(RuntimeError):
    """The exported ONNX file is invalid, or ONNX Runtime does not reproduce the torch model."""


def _ort_session(path: str | os.PathLike, threads: int = 1):
    """A fresh CPU ONNX Runtime session with the deployed graph optimisations and explicit threads."""
    from evaluators.latency.ort import ort_cpu_session

    return ort_cpu_session(path, threads)


def _second_batch(example: torch.Tensor) -> torch.Tensor:
    """A batch of another size built from the example's rows, each slightly perturbed so no two rows are equal."""
    b = example.shape[0]
    idx = torch.arange(b + 2) % b
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn((b + 2, *example.shape[1:]), generator=gen, dtype=example.dtype)
    return example[idx] + 0.05 * noise * (example.std() if example.numel() > 1 else 1.0)


def _export(
    model: nn.Module, example: torch.Tensor, path: Path, opset: int | None, dynamo: bool, external_data: bool
) -> None:
    """One ``torch.onnx.export`` call with a dynamic batch axis; the exporter's stdout and warnings are swallowed."""
    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": opset,
    }
    if dynamo:
        # A tuple matches the positional inputs, so the name of forward's argument does not matter.
        kwargs.update(
            dynamo=True, external_data=external_data, dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
    else:
        kwargs.update(dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), **kwargs)


def _opset_of(onnx_model: Any) -> int | None:
    for imp in onnx_model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    opset: int | None = None,
    tolerance: float = 1e-4,
    dynamo: bool = True,
) -> dict[str, Any]:
    """Export ``model`` (switched to eval mode) to ONNX at ``path``, with a dynamic batch axis, and prove it.

    The file is checked with ``onnx.checker.check_model`` and run in a fresh ONNX Runtime CPU session on
    ``example`` and on a batch of another size; both must match the torch outputs within ``tolerance``
    (max absolute difference). The dynamo exporter is tried first; if it cannot export the model, the legacy
    TorchScript exporter is used (``dynamo=False`` skips the first attempt). The file is written to a temporary
    folder and moved to ``path`` only once every check passed.

    Returns
    -------
    dict
        ``path``, ``exporter`` (``'dynamo'`` or ``'torchscript'``), ``fallback_reason`` (the dynamo error that
        made it fall back, or None), ``opset``, ``ir_version``, ``nodes``, ``input_name``, ``output_name``, ``input_shape`` (the
        symbolic ONNX input shape, ``'batch'`` first), ``batch_sizes_checked``, ``max_abs_diff`` (over all checked
        batches), ``max_abs_diff_per_batch``, ``tolerance``, ``export_seconds``, ``external_data``, ``files``.

    Raises
    ------
    ExportError
        When both exporters fail, the checker rejects the file, or ONNX Runtime differs from torch by more than
        ``tolerance``.
    """
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or example.shape[0] < 1:
        raise ValueError(f"export_onnx: example must be a tensor with a batch dimension, got {example!r:.80}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = example.detach().to("cpu", torch.float32)
    other = _second_batch(example)
    with torch.no_grad():
        expected = {b.shape[0]: model(b).detach().cpu().numpy() for b in (example, other)}
    inputs = {example.shape[0]: example, other.shape[0]: other}
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    external = weight_bytes > _INLINE_WEIGHTS_LIMIT

    tmpdir = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=path.parent))
    try:
        tmp_path = tmpdir / path.name
        t0 = time.perf_counter()
        exporter, fallback_reason = _export_with_fallback(model, example, tmp_path, opset, dynamo, external)
        export_seconds = time.perf_counter() - t0
        proto, diffs = _prove(tmp_path, exporter, inputs, expected, tolerance)
        max_diff = max(diffs.values())
        files = []
        for f in sorted(tmpdir.iterdir()):
            os.replace(f, path.parent / f.name)
            files.append(str(path.parent / f.name))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    graph_input = proto.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    return {
        "path": str(path),
        "exporter": exporter,
        "fallback_reason": fallback_reason,
        "opset": _opset_of(proto),
        "ir_version": int(proto.ir_version),
        "nodes": len(proto.graph.node),
        "input_name": graph_input.name,
        "output_name": proto.graph.output[0].name,
        "input_shape": dims,
        "batch_sizes_checked": sorted(diffs),
        "max_abs_diff": max_diff,
        "max_abs_diff_per_batch": diffs,
        "tolerance": tolerance,
        "export_seconds": round(export_seconds, 3),
        "external_data": external,
        "files": files,
    }


def _export_with_fallback(
    model: nn.Module, example: torch.Tensor, path: Path, opset: int | None, dynamo: bool, external: bool
) -> tuple[str, str | None]:
    """Export with the dynamo exporter, or the TorchScript one if it fails (or ``dynamo`` is off).

    Returns the exporter used and the dynamo error that made it fall back (None if it did not)."""
    fallback_reason = None
    if dynamo:
        try:
            _export(model, example, path, opset, dynamo=True, external_data=external)
            return "dynamo", None
        except Exception as e:  # any dynamo failure means: try the other exporter
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            fallback_reason = f"{type(e).__name__}: {msg}"[:300]
            _log.warning(
                "dynamo ONNX exporter failed (%s); falling back to the TorchScript exporter", fallback_reason
            )
            for f in path.parent.iterdir():
                f.unlink()
    try:
        _export(model, example, path, opset, dynamo=False, external_data=external)
    except Exception as e:
        raise ExportError(
            f"export_onnx: no ONNX exporter could export {type(model).__name__}: "
            + (f"dynamo: {fallback_reason}; " if fallback_reason else "")
            + f"torchscript: {type(e).__name__}: {e}"
        ) from e
    return "torchscript", fallback_reason


def _prove(
    path: Path,
    exporter: str,
    inputs: Mapping[int, torch.Tensor],
    expected: Mapping[int, np.ndarray],
    tolerance: float,
) -> tuple[Any, dict[int, float]]:
    """Check the file with ``onnx.checker`` and ONNX Runtime against torch; its proto and the differences."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportError(f"export_onnx: onnx.checker rejected the {exporter} export: {e}") from e
    proto = onnx.load(str(path), load_external_data=False)
    diffs = _parity(path, inputs, expected)
    max_diff = max(diffs.values())
    if not np.isfinite(max_diff) or max_diff > tolerance:
        raise ExportError(
            f"export_onnx: ONNX Runtime differs from torch by {max_diff:.3g} (> tolerance {tolerance:g}) "
            f"with the {exporter} exporter; per batch size: {diffs}. The model may hold train-mode or "
            "data-dependent code that the exporter traced differently."
        )
    return proto, diffs


def _parity(
    path: Path, inputs: Mapping[int, torch.Tensor], expected: Mapping[int, np.ndarray]
) -> dict[int, float]:
    """Max |torch - ORT| per batch size, in one fresh session (a shape mismatch raises ExportError)."""
    try:
        sess = _ort_session(path, threads=1)
    except Exception as e:
        raise ExportError(f"export_onnx: ONNX Runtime cannot load the exported file: {e}") from e
    name = sess.get_inputs()[0].name
    diffs = {}
    for b, x in inputs.items():
        try:
            got = sess.run(None, {name: x.numpy()})[0]
        except Exception as e:
            raise ExportError(
                f"export_onnx: ONNX Runtime failed at batch size {b} (is the batch axis dynamic?): {e}"
            ) from e
        if got.shape != expected[b].shape:
            raise ExportError(
                f"export_onnx: ONNX Runtime output shape {got.shape} != torch {expected[b].shape} "
                f"at batch size {b}"
            )
        diffs[b] = float(np.max(np.abs(got.astype(np.float64) - expected[b]))) if got.size else 0.0
    return diffs


def measure_ort_latency(
    path: str | os.PathLike,
    input_shape: tuple[int, ...] | list[int],
    *,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
) -> dict[str, Any]:
    """Latency of an ONNX file in ONNX Runtime on this CPU, in milliseconds.

    One fresh session (``CPUExecutionProvider``, ``ORT_ENABLE_ALL``, sequential executor, ``inter_op=1``,
    ``intra_op=threads``), ``warmup`` untimed runs, then ``runs`` runs timed one by one with ``perf_counter_ns``.
    Report the median: single runs have outliers of several times the median on a shared machine.

    Returns
    -------
    dict
        ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``, ``cv``, ``threads``, ``batch``, ``input_shape``,
        ``warmup``, ``runs``, ``onnxruntime`` (version), ``cpu`` (model string), ``cpu_count``.
    """
    import onnxruntime as ort

    from evaluators.latency.ort import cpu_model, time_session

    cores = os.cpu_count() or 1
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"measure_ort_latency: threads must be an integer >= 1, got {threads!r}")
    if threads > cores:
        raise ValueError(
            f"measure_ort_latency: threads={threads} is more than the {cores} cores of this machine; "
            "oversubscribed threads make latency noisy and slow. Use threads <= os.cpu_count()."
        )
    if warmup < 0 or runs < 1:
        raise ValueError(
            f"measure_ort_latency: need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}"
        )
    if not Path(path).is_file():
        raise FileNotFoundError(f"measure_ort_latency: no ONNX file at {path}")
    shape = tuple(int(d) for d in input_shape)
    sess = _ort_session(path, threads=threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}
    times = time_session(sess, feed, warmup, runs)
    mean = statistics.fmean(times)
    return {
        "median_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": mean,
        "min_ms": min(times),
        "cv": statistics.pstdev(times) / mean if mean > 0 else 0.0,
        "threads": threads,
        "batch": shape[0],
        "input_shape": list(shape),
        "warmup": warmup,
        "runs": runs,
        "onnxruntime": ort.__version__,
        "cpu": cpu_model(),
        "cpu_count": cores,
    }


def export_and_time(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    input_shape: tuple[int, ...],
    *,
    tolerance: float = 1e-4,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`export_onnx` then :func:`measure_ort_latency` at ``input_shape``: the export's and the latency's dicts."""
    info = export_onnx(model, example, path, tolerance=tolerance)
    return info, measure_ort_latency(path, input_shape)


def load_frozen_model(
    space: nn.Module | Callable[[], nn.Module],
    arch: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
) -> nn.Module:
    """The plain torch model of ``arch`` (``space.freeze(arch)``), with trained weights loaded strictly if given.

    ``space`` is a model space or a zero-argument factory that builds one. ``state_dict`` is a state dict or the
    path of a file written by :func:`save_weights`. ``arch`` is used as given: pass the pruned architecture (as the
    BSN export selects it) to build only what reaches the output.
    """
    if isinstance(space, type) or (callable(space) and not hasattr(space, "freeze")):
        space = space()
    if not hasattr(space, "freeze"):
        raise TypeError(
            f"load_frozen_model: expected a model space with .freeze(arch), got {type(space).__name__}"
        )
    model = space.freeze(dict(arch))
    if state_dict is not None:
        if isinstance(state_dict, (str, os.PathLike)):
            state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"load_frozen_model: the weights do not fit the frozen architecture (were they saved "
                f"for another architecture or space?): {e}"
            ) from e
    return model


def save_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Write ``model.state_dict()`` with ``torch.save``, atomically (``path.tmp`` then ``os.replace``); return path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_metadata(path: str | os.PathLike, properties: Mapping[str, Any]) -> None:
    """Set ``properties`` as the ONNX model's ``metadata_props`` (a value that is not a string is written as JSON),
    replacing the file atomically; external weight files are left as they are."""
    import json

    import onnx

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    kept = {p.key: p.value for p in proto.metadata_props if p.key not in properties}
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in properties.items()}
    onnx.helper.set_model_props(proto, {**kept, **values})
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ONNX model's ``metadata_props`` as a dict of strings."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
