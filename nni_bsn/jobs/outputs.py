"""Where the jobs write: an output folder that appears only once complete, the checkpoints kept for resuming,
files written atomically, and the versions every report records."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nni_bsn.jobs.config import UsageError

__all__ = ["partial_dir", "lock_path", "output_lock", "atomic_output_dir", "write_json", "versions"]

_logger = logging.getLogger(__name__)


def partial_dir(out: str | os.PathLike) -> Path:
    """Where the checkpoints of an interrupted search into ``out`` are kept."""
    out = _named_folder(out)
    return out.with_name(out.name + ".partial")


def _named_folder(out: str | os.PathLike) -> Path:
    """``out`` as a path; a :class:`UsageError` if it names no folder of its own (``.``, ``..``, ``/``, empty)."""
    path = Path(out)
    if path.name in ("", ".", ".."):
        raise UsageError(
            f"--out {str(out)!r} names no new folder; give the name of a folder to create, e.g. --out bsn-search"
        )
    return path


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file beside ``out`` that a job holds while it writes ``out`` (and its ``.partial`` folder)."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of ``out`` for the block; raise :class:`UsageError` if another job holds it.

    An OS lock (``flock``): the kernel releases it when its process dies, so a killed job never leaves it stuck.
    The lock file is removed on release; a job that opened it just before checks it still locks the file at the
    path, and otherwise tries again on the new file.
    """
    path = lock_path(out)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(f"cannot write the output folder {out}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"another nni-bsn run is writing {out} (it holds {path}); wait for it or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed that file as we opened it: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def check_output_folder(out: str | os.PathLike) -> Path:
    """``out`` as a path, if it can become the job's output folder; a :class:`UsageError` if it names no folder of
    its own (``.``, ``..``, ``/``, empty) or names a file (``--force`` replaces folders only)."""
    path = _named_folder(out)
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"--out {path} is a file, not a folder; give a folder's name (--force replaces folders only)"
        )
    return path


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` that becomes ``out`` only when the block succeeds.

    Nothing half-written is ever left at ``out``: on failure the temporary folder is removed (a search keeps its
    checkpoints in ``<out>.partial`` throughout, so it can be resumed), and one left by a killed job is removed
    by the next job on ``out``. The job holds :func:`output_lock` throughout, so a
    second job on the same ``out`` is refused; an ``out`` that appeared during the job is never replaced without
    ``force`` (the result is then kept in the temporary folder, and the error names it).
    """
    out = check_output_folder(out)
    parent = out.parent if str(out.parent) else Path(".")
    if out.exists() and not force:
        raise UsageError(
            f"output folder {out} already exists; pass --force to replace it or choose another --out"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write the output folder {out}: {e.strerror or e}") from None
    with output_lock(out):
        if out.exists() and not force:  # written by a job that finished while this one started
            raise UsageError(
                f"output folder {out} already exists; pass --force to replace it or choose another --out"
            )
        _remove_stale_twins(out, parent)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
            tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the published folder private
        except OSError as e:
            raise UsageError(f"cannot write the output folder {out}: {e.strerror or e}") from None
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, out, force)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_twins(out: Path, parent: Path) -> None:
    """Remove the temporary folders that killed jobs on ``out`` left (the caller holds ``out``'s lock, so no
    running job owns one; a job's checkpoints are never in it, they are in ``<out>.partial``)."""
    for twin in parent.glob(f".{glob.escape(out.name)}.tmp-*"):
        if twin.is_dir():
            _logger.info("removing %s, left by a job that was killed", twin)
            shutil.rmtree(twin, ignore_errors=True)


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished ``tmp`` to ``out``; an ``out`` that appeared meanwhile is replaced only with ``force``."""
    if out.exists():
        if not force:
            raise UsageError(
                f"output folder {out} appeared while this run wrote its result; the result is kept in {tmp}"
            )
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

    from nni_bsn import __version__

    return {
        "nni-bsn": __version__,
        "nni": nni.__version__,
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
