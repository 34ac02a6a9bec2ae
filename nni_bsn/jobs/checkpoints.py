"""A search's checkpoints, written where ``--resume`` looks so that no kill can strand them.

They live in ``<out>.partial/`` from the first one on (never in the hidden temporary output folder): a search
killed by SIGKILL, an out-of-memory kill or a lost node is resumed by the same command with ``--resume``. Each is
written whole to a hidden file and then renamed over ``last.ckpt``, the one before it kept as ``previous.ckpt``:
a kill during a write leaves both intact, and a truncated or corrupt ``last.ckpt`` is refused by name and
``previous.ckpt`` used instead. A comparison's searches keep theirs in ``<out>.partial/checkpoints/<row>/``, each
with the identity of its job (:func:`resume_or_start`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from nni_bsn.jobs.config import UsageError

__all__ = [
    "LAST",
    "PREVIOUS",
    "RotatingCheckpointIO",
    "checkpoint_callbacks",
    "resume_or_start",
    "has_checkpoint",
    "start_fresh",
    "load_resumable",
    "keep_final",
    "require_checkpoint",
]

LAST, PREVIOUS = "last.ckpt", "previous.ckpt"


class RotatingCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic (a whole hidden file, synced, then renamed) and keeping the
    checkpoint before ``last.ckpt`` as ``previous.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialised first: only the file write below can meet a full disk
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OSError(e.errno, e.strerror, str(path)) from None
        if path.name == LAST and path.is_file():
            os.replace(path, path.with_name(PREVIOUS))
        os.replace(tmp, path)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


def has_checkpoint(partial: Path) -> bool:
    """Whether ``partial`` holds a checkpoint to resume from."""
    return any((partial / name).is_file() for name in (LAST, PREVIOUS))


def start_fresh(partial: Path, force: bool) -> None:
    """Before a search that does not resume: an interrupted search's checkpoints in ``partial`` are discarded
    with ``force``, and otherwise refused (they are the progress of a search the user may want to resume)."""
    if not has_checkpoint(partial):
        shutil.rmtree(partial, ignore_errors=True)  # a configuration or a hidden write left by a kill
        return
    if not force:
        raise UsageError(
            f"an interrupted search's checkpoint is in {partial}/; run the same command with --resume to "
            "continue it, or with --force to discard it and start anew"
        )
    shutil.rmtree(partial)


def load_resumable(partial: Path, progress) -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint in ``partial`` and its contents; a corrupt ``last.ckpt`` is named and
    ``previous.ckpt`` used; :class:`UsageError` if there is none to resume from."""
    require_checkpoint(partial)
    problems = []
    for path in (partial / LAST, partial / PREVIOUS):
        if not path.is_file():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated zip, unpickling error, an edited file: all mean "unreadable"
            problems.append(f"{path} cannot be read ({type(e).__name__})")
            continue
        if problems:
            progress(f"{problems[0]}; resuming from the checkpoint before it, {path}")
        return path, state
    raise UsageError(f"nothing to resume: {'; '.join(problems)}; start anew with --force instead of --resume")


def require_checkpoint(partial: Path) -> None:
    """:class:`UsageError` if ``partial`` holds no checkpoint to resume from."""
    if not has_checkpoint(partial):
        raise UsageError(
            f"nothing to resume: {partial / LAST} does not exist (a search keeps its checkpoints there until it "
            "finishes)"
        )


def keep_final(partial: Path, workdir: Path) -> None:
    """The finished search's last checkpoint, linked (or copied) into ``workdir/checkpoints/``."""
    target = workdir / "checkpoints"
    target.mkdir(parents=True, exist_ok=True)
    for name in (LAST, "search_config.json"):
        source = partial / name
        if not source.is_file():
            continue
        try:
            os.link(source, target / name)
        except OSError:
            shutil.copyfile(source, target / name)


def checkpoint_callbacks(folder: Path) -> list[Any]:
    """Lightning callbacks writing one ``last.ckpt`` in ``folder`` every 10 batches (two optimizer steps a batch)
    and at every epoch end; with :class:`RotatingCheckpointIO` as the trainer's plugin, atomically and keeping the
    one before (no version counter: it would add ``last-v1.ckpt`` beside it)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    return [
        ModelCheckpoint(
            dirpath=folder, save_last=True, save_top_k=0, every_n_train_steps=20, enable_version_counter=False
        ),
        ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0, enable_version_counter=False),
    ]


def resume_or_start(folder: Path, identity: dict[str, Any], resume: bool, progress) -> Path | None:
    """The checkpoint to continue a job's search from: with ``resume``, the newest readable one in ``folder`` if the
    same job (``identity``) wrote it. Otherwise ``folder`` is emptied for a fresh start and ``identity`` recorded
    in it; ``None``."""
    marker = folder / "identity.json"
    if resume and has_checkpoint(folder):
        try:
            same = json.loads(marker.read_text()) == identity
        except (OSError, ValueError):
            same = False
        try:
            if same:
                return load_resumable(folder, progress)[0]
            progress(f"the checkpoint in {folder} is of other options: starting anew")
        except UsageError as e:
            progress(f"{e}: starting anew")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    marker.write_text(json.dumps(identity, sort_keys=True))
    return None
