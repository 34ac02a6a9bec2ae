"""Where the jobs write: an output folder that appears only once complete, the checkpoints kept for resuming,
files written atomically, and the versions every report records."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import UsageError

__all__ = ["partial_dir", "atomic_output_dir", "write_json", "versions"]

_logger = logging.getLogger(__name__)


def partial_dir(out: str | os.PathLike) -> Path:
    """Where the checkpoints of an interrupted search into ``out`` are kept."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` that becomes ``out`` only when the block succeeds.

    Nothing half-written is ever left at ``out``: on failure the temporary folder is removed (its checkpoints
    are kept in ``<out>.partial`` so a search can be resumed).
    """
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(
            f"output folder {out} already exists; pass --force to replace it or choose another --out"
        )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as e:
        raise UsageError(f"cannot write the output folder {out}: {e.strerror or e}") from None
    try:
        yield tmp
    except BaseException:
        ckpt = tmp / "checkpoints"
        if ckpt.is_dir() and any(ckpt.iterdir()):
            partial = partial_dir(out)
            shutil.rmtree(partial, ignore_errors=True)
            shutil.move(str(ckpt), str(partial))
            _logger.warning("search interrupted: checkpoints kept in %s", partial)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically (a temporary file beside ``path``, then ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    """The versions of nni-bsn and of the libraries its results depend on."""
    import nni
    import onnxruntime
    import pytorch_lightning
    import torch

    from . import __version__

    return {
        "nni-bsn": __version__,
        "nni": nni.__version__,
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
