"""Data for the searches: scikit-learn's digits (embedded default) and CIFAR-10/100 from a local folder.

Nothing here downloads. ``digits`` ships inside scikit-learn's wheel; CIFAR is read from a folder in
torchvision's on-disk format (the extracted ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``).

Splits never depend on the user's seed, so that every run and every strategy sees the same train,
validation and test images; the seed only drives the order of the training batches (and augmentation
through torch's global RNG).

The loaders are NNI's traced ``DataLoader`` so that NNI's Lightning evaluators accept them as they are.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from nni.nas.evaluator.pytorch import DataLoader
from torch.utils.data import Dataset, TensorDataset

__all__ = [
    "DATASETS",
    "DataError",
    "DataInfo",
    "get_datasets",
    "get_dataloaders",
    "digits_datasets",
    "cifar_datasets",
    "CIFAR_FILES",
]

DATASETS = ("digits", "cifar10", "cifar100")

SPLIT_SEED = 0
"""Seed of every train/val/test split, whatever seed the user passes."""

DATA_DIR_ENV = "NNI_BSN_DATA"
"""Environment variable read for the CIFAR folder when ``data_dir`` is not given (default ``./data``)."""

# torchvision's on-disk layout: folder -> files expected in it.
CIFAR_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": ("cifar-10-batches-py",
                ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}
CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR_VAL_FRACTION = 0.1   # 45,000 train / 5,000 validation of the 50,000 training images, as in the paper's code
CIFAR_MEAN_STD = (0.5, 0.5)  # the normalisation of the original BSN code


class DataError(ValueError):
    """A dataset cannot be loaded: unknown name, missing or incomplete folder, bad image size."""


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


def _canonical_name(name: str) -> str:
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return key


def _check_image_size(image_size: int | None, default: int) -> int:
    if image_size is None:
        return default
    if not isinstance(image_size, int) or image_size < 2 or image_size & (image_size - 1):
        raise DataError(f"image_size must be a power of two >= 2 (e.g. 8, 16, 32), got {image_size!r}")
    return image_size


# ---------------------------------------------------------------------------------------------------------------
# digits


def digits_datasets(image_size: int | None = None) -> tuple[Dataset, Dataset, Dataset, DataInfo]:
    """scikit-learn's 1797 handwritten digits, split 70/15/15 (stratified, fixed seed), normalised.

    Images are 1x8x8 grey levels, standardised with the training split's mean and std, and upsampled
    bilinearly to ``image_size`` (a power of two; default 8) so that a fabric gets several scales.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    size = _check_image_size(image_size, 8)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.long)
    idx = np.arange(len(y))
    train_idx, rest = train_test_split(idx, test_size=0.3, stratify=digits.target, random_state=SPLIT_SEED)
    val_idx, test_idx = train_test_split(rest, test_size=0.5, stratify=digits.target[rest], random_state=SPLIT_SEED)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 8)
    splits = [TensorDataset(x[i], y[i]) for i in (train_idx, val_idx, test_idx)]
    info = DataInfo(
        name="digits", num_classes=10, in_channels=1, image_size=size,
        sizes={"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
        classes=tuple(str(c) for c in digits.target_names),
    )
    return splits[0], splits[1], splits[2], info


# ---------------------------------------------------------------------------------------------------------------
# CIFAR


def _cifar_folder(name: str, data_dir: str | os.PathLike | None) -> Path:
    """The folder holding the CIFAR files; ``data_dir`` may be its parent (torchvision's ``root``) or itself."""
    folder, _ = CIFAR_FILES[name]
    root = Path(data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV, "data")).expanduser()
    return root if root.name == folder else root / folder


def _check_cifar_folder(name: str, path: Path) -> None:
    _, files = CIFAR_FILES[name]
    expected = ", ".join(files)
    hint = (f"expected {expected} in torchvision's on-disk format "
            f"(the extracted {CIFAR_ARCHIVES[name]}; nni-bsn never downloads)")
    if not path.is_dir():
        raise DataError(f"{name}: folder {path} not found; {hint}")
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise DataError(f"{name}: folder {path} is incomplete, missing {', '.join(missing)}; {hint}")


def _torchvision_cifar(name: str) -> type:
    """torchvision's CIFAR class, with file presence (checked by us) instead of its md5 checks.

    The md5 check would reject the small folders the tests write in the same format, and reading
    170 MB twice to checksum it adds nothing to the clear error raised by ``_check_cifar_folder``.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if name == "cifar10" else CIFAR100
    return type(
        f"Local{base.__name__}",
        (base,),
        {
            "train_list": [[f, None] for f, _ in base.train_list],
            "test_list": [[f, None] for f, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


class _TransformedSubset(Dataset):
    """``base[indices[i]]`` with ``transform`` applied to the image."""

    def __init__(self, base: Dataset, indices: np.ndarray, transform: Callable):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, target = self.base[int(self.indices[i])]
        return self.transform(img), target


def cifar_datasets(
    name: str = "cifar10", data_dir: str | os.PathLike | None = None, image_size: int | None = None
) -> tuple[Dataset, Dataset, Dataset, DataInfo]:
    """CIFAR-10 or CIFAR-100 from a local folder: train (augmented), validation (held out), test.

    ``data_dir`` is torchvision's ``root`` (the folder that contains ``cifar-10-batches-py/`` or
    ``cifar-100-python/``) or that folder itself; default ``$NNI_BSN_DATA`` or ``./data``.
    10% of the training images (5,000 of 50,000) are held out for validation with a fixed seed; the
    test split is the official test set. Train images get pad-4 random crops and horizontal flips;
    all images are normalised with mean 0.5 and std 0.5 and resized to ``image_size`` if it is not 32.
    Raises :class:`DataError` when the folder is missing or incomplete; never downloads.
    """
    from torchvision import transforms as T

    name = _canonical_name(name)
    if name not in CIFAR_FILES:
        raise DataError(f"{name} is not a CIFAR dataset")
    size = _check_image_size(image_size, 32)
    path = _cifar_folder(name, data_dir)
    _check_cifar_folder(name, path)
    cls = _torchvision_cifar(name)
    try:
        train_full = cls(str(path.parent), train=True, download=False)
        test_base = cls(str(path.parent), train=False, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, RuntimeError) as e:
        raise DataError(f"{name}: cannot read {path} as torchvision's CIFAR format ({type(e).__name__}: {e})") from e

    n = len(train_full)
    n_val = max(1, round(n * CIFAR_VAL_FRACTION)) if n > 1 else 0
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    train_idx, val_idx = np.sort(perm[n_val:]), np.sort(perm[:n_val])

    mean, std = CIFAR_MEAN_STD
    resize = [T.Resize(size, antialias=True)] if size != 32 else []
    normalise = [T.ToTensor(), T.Normalize((mean,) * 3, (std,) * 3)]
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *resize, *normalise])
    eval_tf = T.Compose([*resize, *normalise])
    train = _TransformedSubset(train_full, train_idx, train_tf)
    val = _TransformedSubset(train_full, val_idx, eval_tf)
    test = _TransformedSubset(test_base, np.arange(len(test_base)), eval_tf)
    info = DataInfo(
        name=name, num_classes=CIFAR_NUM_CLASSES[name], in_channels=3, image_size=size,
        sizes={"train": len(train), "val": len(val), "test": len(test)},
        classes=tuple(train_full.classes),
    )
    return train, val, test, info


# ---------------------------------------------------------------------------------------------------------------
# entry points


def get_datasets(
    name: str = "digits", data_dir: str | os.PathLike | None = None, image_size: int | None = None
) -> tuple[Dataset, Dataset, Dataset, DataInfo]:
    """``(train, val, test, info)`` datasets for ``name`` in :data:`DATASETS`."""
    key = _canonical_name(name)
    if key == "digits":
        return digits_datasets(image_size)
    return cifar_datasets(key, data_dir, image_size)


def get_dataloaders(
    name: str = "digits",
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    image_size: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader, DataLoader, DataInfo]:
    """``(train_loader, val_loader, test_loader, info)`` for ``name`` (``digits``, ``cifar10``, ``cifar100``).

    The loaders are NNI's traced ``DataLoader``. The training loader shuffles with a generator seeded
    by ``seed``; validation and test loaders keep a fixed order. ``info`` gives ``num_classes``,
    ``in_channels``, ``image_size`` and the split ``sizes``.

    Example
    -------
    >>> train, val, test, info = get_dataloaders("digits", batch_size=32, image_size=16)
    >>> info.num_classes, info.in_channels, info.image_size
    (10, 1, 16)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    train, val, test, info = get_datasets(name, data_dir, image_size)
    generator = torch.Generator().manual_seed(int(seed))
    common = {"batch_size": batch_size, "num_workers": num_workers, "persistent_workers": num_workers > 0}
    train_loader = DataLoader(train, shuffle=True, generator=generator, **common)
    val_loader = DataLoader(val, shuffle=False, **common)
    test_loader = DataLoader(test, shuffle=False, **common)
    return train_loader, val_loader, test_loader, info
