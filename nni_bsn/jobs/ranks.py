"""A job on several processes (``--devices``) or machines (``--num-nodes``): which process is global rank 0 (it alone
writes), what the devices asked for will run, Lightning's DDP strategy with a bounded wait, and the one line a rank
says when another died."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from nni_bsn.jobs.config import UsageError

__all__ = [
    "is_worker_process",
    "check_devices",
    "ddp_strategy",
    "is_distributed_failure",
    "lost_rank_message",
    "release_process_group",
    "launched_ranks",
    "row_rendezvous_env",
]


def is_worker_process() -> bool:
    """Whether this process is a DDP worker other than global rank 0: started by Lightning re-running the
    command (``LOCAL_RANK``/``NODE_RANK``), by torchrun (``RANK``) or by SLURM's srun (``SLURM_PROCID``)."""
    names = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    return any(int(os.environ.get(name) or 0) > 0 for name in names)


def launched_ranks() -> int:
    """How many processes a launcher started for this job: torchrun's ``WORLD_SIZE``, SLURM's ``SLURM_NTASKS``;
    1 when nothing launched it (Lightning then starts ``--devices`` processes itself)."""
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        if int(os.environ.get(name) or 1) > 1:
            return int(os.environ[name])
    return 1


def row_rendezvous_env(index: int) -> dict[str, str] | None:
    """The environment of compare's row process ``index`` under a launcher (None without one): every row is a DDP
    job of its own, so its ranks meet at a port of their own, the launch's port + 1 + ``index`` (the same on every
    node, which runs the same rows in the same order), in a store that the row's global rank 0 hosts; the launch's
    own store (torchrun's agent) would still hold the previous row's keys."""
    if launched_ranks() == 1:
        return None
    base = os.environ.get("MASTER_PORT")
    if base is None:  # SLURM without MASTER_PORT: Lightning's SLURMEnvironment default
        job = os.environ.get("SLURM_JOB_ID")
        base = str(int(job[-4:]) + 15000 if job else 12910)
    port = int(base) + 1 + index % 1000
    return {**os.environ, "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "False"}


def check_devices(accelerator: str, devices: int, gpus: int, cores: int, num_nodes: int = 1) -> str | None:
    """What ``--accelerator``/``--devices``/``--num-nodes`` will run, as a note to print (or None);
    :class:`UsageError` if they ask for GPUs that are not there or more CPU processes than cores (on this node)."""
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and gpus > 0)
    if on_gpu and devices > gpus:
        found = (
            f"{gpus} CUDA GPU(s) are visible to torch here"
            if gpus
            else "no CUDA GPU is visible to torch here"
        )
        raise UsageError(
            f"--accelerator {accelerator} --devices {devices}: {found}; use --accelerator cpu, or fewer --devices"
        )
    if not on_gpu and devices > cores:
        raise UsageError(
            f"--devices {devices} on CPU would run {devices} DDP processes on {cores} core(s); "
            f"give --devices {cores} or less (1: no DDP)"
        )
    if num_nodes > 1:
        kind = "GPU(s)" if on_gpu else "CPU process(es), gloo"
        return f"--num-nodes {num_nodes}: DDP over {num_nodes * devices} ranks, {devices} {kind} on each node"
    if on_gpu or devices == 1:
        return None
    return f"--devices {devices} on CPU: Lightning runs {devices} DDP processes (gloo), one per device"


def ddp_strategy(accelerator: str, devices: int, num_nodes: int, timeout: float) -> Any | None:
    """Lightning's DDP strategy for more than one process in all (None for one): unused parameters allowed (path
    sampling leaves the unsampled blocks without gradient at each step), gloo on the CPU, and ``timeout`` seconds
    for any collective, so that a rank whose peer died or hangs stops instead of waiting forever."""
    if devices * num_nodes == 1:
        return None
    from pytorch_lightning.strategies import DDPStrategy

    return DDPStrategy(
        find_unused_parameters=True,
        process_group_backend="gloo" if accelerator == "cpu" else None,
        timeout=timedelta(seconds=timeout),
    )


# What torch's backends say when a peer is gone or a collective waited too long (gloo, NCCL, the TCP store).
_PEER_LOST = ("connection closed by peer", "connection reset", "timed out", "timeout", "broken pipe", "nccl")


def is_distributed_failure(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another rank died or hung (in a DDP run only)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    return isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _PEER_LOST)


def lost_rank_message(e: BaseException, partial: Path, timeout: float) -> str:
    """The one line a rank prints when another rank died or stopped answering."""
    import torch.distributed as dist

    from nni_bsn.jobs.checkpoints import has_checkpoint

    rank, world = dist.get_rank(), dist.get_world_size()
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0][:160]  # gloo's "[file.cc:561] ..." prefix
    resumable = (
        f"the checkpoint in {partial}/ is kept: run the same command with --resume to continue"
        if has_checkpoint(partial)
        else "no checkpoint was written yet"
    )
    return (
        f"rank {rank} of {world} stopped: another rank died or did not answer within --ddp-timeout {timeout:g} s "
        f"({first}); {resumable}"
    )


class RankLost(Exception):
    """Another DDP rank died or stopped answering; the message is the one line to print."""


@contextlib.contextmanager
def stop_on_lost_rank(partial: Path, timeout: float) -> Iterator[None]:
    """Turn a collective that failed because another rank died or hung into :class:`RankLost`, one line."""
    try:
        yield
    except Exception as e:
        if not is_distributed_failure(e):
            raise
        raise RankLost(lost_rank_message(e, partial, timeout)) from None


def release_process_group() -> None:
    """Destroy the DDP process group if this process holds one: left to the interpreter's exit, gloo's threads
    can abort the process (``terminate called without an active exception``, exit -6) after a finished job."""
    import sys

    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
