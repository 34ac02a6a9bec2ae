"""The on-disk cache of measured latency entries: one JSON file, entries keyed by what was measured and where.

An entry's key is a digest of its signature (module repr or node signature), input shape, batch, threads,
exporter, onnxruntime and torch versions and CPU model, so a later bind on the same machine measures nothing and
another machine or library version measures afresh.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluators.latency.ort import cpu_model

__all__ = ["LatencyCache", "default_cache_dir", "measurement_context"]

_log = logging.getLogger(__name__)

_FORMAT = "nni-bsn latency table v1"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/nni-bsn/latency`` (``~/.cache/nni-bsn/latency`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nni-bsn" / "latency"


def measurement_context(batch: int, threads: int, dynamo: bool) -> dict[str, Any]:
    """What, besides the block and its shape, a measurement depends on: part of every entry's key."""
    import onnxruntime as ort

    return {
        "batch": batch,
        "threads": threads,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "exporter": "dynamo" if dynamo else "torchscript",
        "cpu": cpu_model(),
    }


class LatencyCache:
    """The entries of ``<cache_dir>/latency_table.json`` and the measurements still to make.

    ``request(signature, module, input_shape)`` names an entry (and remembers how to measure it);
    ``measure(timer)`` measures every requested entry the file does not hold yet with ``timer(module, shape)``
    (a ``measure_onnx`` result), saves them, and returns every stored entry by key.
    """

    def __init__(self, cache_dir: str | os.PathLike, context: Mapping[str, Any], protocol: Mapping[str, Any]):
        self.cache_dir = Path(cache_dir)
        self.context = dict(context)
        self.protocol = dict(protocol)  # recorded beside each new entry
        self._pending: dict[str, tuple[dict[str, Any], nn.Module, Any]] = {}

    @staticmethod
    def path_in(cache_dir: str | os.PathLike) -> Path:
        """The JSON file of the cache in ``cache_dir``."""
        return Path(cache_dir) / "latency_table.json"

    @property
    def path(self) -> Path:
        return self.path_in(self.cache_dir)

    def key(self, signature: str, input_shape: Sequence[int]) -> tuple[str, dict[str, Any]]:
        """The entry key of ``signature`` at ``input_shape``, and the fields it digests."""
        fields = {"block": signature, "input_shape": list(input_shape), **self.context}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
        return digest, fields

    def request(self, signature: str, module: nn.Module, shape: Sequence[int], inputs: int = 1) -> str:
        """The key of the entry of ``module`` at input ``shape`` (``inputs`` inputs of that shape); the first
        request of a key decides which module is measured."""
        key, fields = self.key(signature, shape)
        self._pending.setdefault(key, (fields, module, shape if inputs == 1 else [shape] * inputs))
        return key

    def load(self) -> dict[str, Any]:
        """Every stored entry by key (none when the file is missing or unreadable)."""
        try:
            with open(self.path) as f:
                return json.load(f).get("entries", {})
        except (OSError, ValueError):
            return {}

    def save(self, new: Mapping[str, Any]) -> None:
        """Add ``new`` entries to the file (atomically: a concurrent reader sees the old or the new file)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        entries = self.load()
        entries.update(new)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".json.tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"format": _FORMAT, "entries": entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def measure(self, timer: Callable[[nn.Module, Any], dict[str, Any]]) -> tuple[dict[str, Any], int]:
        """Measure the requested entries the file lacks and save them: ``(every stored entry, how many new)``."""
        stored = self.load()
        new: dict[str, Any] = {}
        for key, (fields, module, shape_in) in self._pending.items():
            if key in stored or key in new:
                continue
            _log.info("LatencyCost: measuring %s at %s", fields["block"][:60], shape_in)
            new[key] = {
                "key": fields,
                **timer(module, shape_in),
                "measured_at": _dt.datetime.now().isoformat(timespec="seconds"),
                **self.protocol,
            }
        self._pending.clear()
        if new:
            self.save(new)
            stored.update(new)
        return stored, len(new)
