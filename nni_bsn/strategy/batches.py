"""Batches as BSN's step sees them: split between the step's sampled architectures, and counted."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["split_batch", "batch_size"]


def split_batch(batch: Any, k: int) -> list[Any]:
    """Split every tensor of a batch (tensor, tuple/list or dict of tensors) into ``k`` chunks along dim 0."""
    if k == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        return list(torch.tensor_split(batch, k))
    if isinstance(batch, (tuple, list)):
        parts = [split_batch(b, k) for b in batch]
        return [type(batch)(p[i] for p in parts) for i in range(k)]
    if isinstance(batch, dict):
        parts = {key: split_batch(v, k) for key, v in batch.items()}
        return [{key: p[i] for key, p in parts.items()} for i in range(k)]
    return [batch] * k


def batch_size(batch: Any) -> int:
    """The number of examples of a batch (its first tensor's first dimension)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (tuple, list)) and batch:
        return batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return batch_size(next(iter(batch.values())))
    return 1
