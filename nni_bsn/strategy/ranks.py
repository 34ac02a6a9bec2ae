"""BSN on several DDP ranks (devices or nodes): every rank samples the same architectures, averages what they
scored, and is checked to hold the same logits and export the same architecture.

The scheme: at each step every rank draws the step's architectures from a generator seeded with a seed shared by
all ranks (rank 0's, broadcast once) and the step number, runs each on its own shard of the batch (the weights'
gradients are averaged by DDP), then averages the samples' losses over the ranks before the logits' update. Every
rank thus computes the same reward, baseline and logits' gradient, as one process would on the whole global batch
(the gradient is averaged across ranks too, as a guard). Single-process runs draw from torch's global generator,
as before.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["world_size", "shared_seed", "step_generator", "mean_over_ranks", "average_gradients", "agreement"]


def world_size() -> int:
    """The number of DDP ranks (1 outside DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shared_seed(device: torch.device) -> int:
    """Rank 0's seed (torch's initial seed there), the same on every rank."""
    seed = torch.tensor([torch.initial_seed() % (2**62)], dtype=torch.long, device=device)
    if world_size() > 1:
        dist.broadcast(seed, src=0)
    return int(seed.item())


def step_generator(generator: torch.Generator, seed: int, step: int) -> torch.Generator:
    """``generator`` seeded for ``step`` of a run seeded ``seed``: the same draws on every rank, and the same after
    ``--resume`` as without the interruption."""
    generator.manual_seed((seed * 1_000_003 + step) % (2**62))
    return generator


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged element-wise over the ranks (unchanged outside DDP)."""
    world = world_size()
    if world == 1:
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / world


def average_gradients(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients averaged over the ranks in one collective (flattened together; unchanged outside DDP)."""
    if world_size() == 1 or not grads:
        return grads
    flat = mean_over_ranks(torch.cat([g.reshape(-1) for g in grads]))
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]


def _digest(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        data = value.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    else:
        data = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def agreement(logits: list[torch.Tensor], arch: dict[str, Any]) -> dict[str, Any]:
    """Whether every rank holds the same logits and exports the same architecture: each rank's digests (SHA-256,
    16 hex digits) gathered on every rank, in rank order."""
    flat = torch.cat([t.detach().reshape(-1).cpu() for t in logits]) if logits else torch.zeros(0)
    mine = {"logits": _digest(flat), "arch": _digest(arch)}
    world = world_size()
    ranks = [mine]
    if world > 1:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    same = all(r == ranks[0] for r in ranks)
    return {
        "world_size": world,
        "agreed": same,
        "logits_sha256": [r["logits"] for r in ranks],
        "arch_sha256": [r["arch"] for r in ranks],
    }
