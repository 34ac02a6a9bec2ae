"""What every dataset of :mod:`nni_bsn.data` shares: its errors, its info, and splits that never depend on the
user's seed (every run and every strategy sees the same train, validation and test images)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "SPLIT_SEED", "DataDir", "DataError", "DataInfo", "Splits", "TransformedSubset", "check_image_size",
    "check_labels", "holdout_split", "make_info", "train_subset",
]  # fmt: skip

SPLIT_SEED = 0
"""Seed of every train/val/test split, whatever seed the user passes."""

DataDir = str | os.PathLike | None


class DataError(ValueError):
    """A dataset cannot be loaded: unknown name, missing, incomplete or corrupt files, bad size."""


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a dataset.

    Read as attributes (``info.num_classes``) or as a mapping (``info['num_classes']``).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    sizes: dict[str, int] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    #: How a raw image becomes an input, for whoever uses the found network
    #: (:func:`nni_bsn.preprocess.preprocessing`).
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def as_dict(self) -> dict[str, Any]:
        """A plain (JSON-able) dict of the fields."""
        out = asdict(self)
        out["classes"] = list(self.classes)
        return out


Splits = tuple[Dataset, Dataset, Dataset, DataInfo]


def make_info(name: str, num_classes: int, size: int, splits: tuple, classes: Any, steps: dict) -> DataInfo:
    """The :class:`DataInfo` of ``splits`` = ``(train, val, test)``, its images prepared as ``steps`` says."""
    sizes = {"train": len(splits[0]), "val": len(splits[1]), "test": len(splits[2])}
    return DataInfo(name, num_classes, steps["channels"], size, sizes, tuple(classes), steps)


def check_image_size(image_size: int | None, default: int) -> int:
    if image_size is None:
        return default
    if not isinstance(image_size, int) or image_size < 2 or image_size & (image_size - 1):
        raise DataError(f"image_size must be a power of two >= 2 (e.g. 8, 16, 32), got {image_size!r}")
    return image_size


def check_labels(what: str, labels: Any, num_classes: int) -> None:
    """:class:`DataError` unless all labels are in ``0..num_classes-1`` (not an IndexError mid-epoch)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        lo, hi = labels.min(), labels.max()
        raise DataError(f"{what}: labels must be in 0..{num_classes - 1}, found {lo}..{hi} (corrupt data?)")


def holdout_split(n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, val)`` indices of ``n`` images, holding out ``val_fraction`` of them (fixed seed)."""
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_subset(train_idx: np.ndarray, labels: np.ndarray, train_size: int | None) -> np.ndarray:
    """The first ``train_size`` (all if ``None``) of ``train_idx``, whose labels are ``labels``, in a fixed
    order that cycles through the classes: class-balanced, and contained in every larger subset."""
    if train_size is None:
        return train_idx
    if not isinstance(train_size, int) or not 1 <= train_size <= len(train_idx):
        raise DataError(f"train_size must be an integer in 1..{len(train_idx)}, got {train_size!r}")
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(train_idx))
    rank = np.empty(len(train_idx), dtype=np.int64)
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        rank[members] = np.arange(len(members))
    order = np.lexsort((labels, rank))  # by rank within the class first, then by class
    return np.sort(train_idx[order[:train_size]])


class TransformedSubset(Dataset):
    """``base[indices[i]]`` with ``transform`` applied to the image."""

    def __init__(self, base: Dataset, indices: np.ndarray, transform: Callable):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, target = self.base[int(self.indices[i])]
        return self.transform(img), target
