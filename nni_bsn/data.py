"""Data for the searches: scikit-learn's digits (embedded default); CIFAR-10/100, Fashion-MNIST and one's own images
(torchvision's ImageFolder layout, :mod:`nni_bsn.imagefolder`) from a folder.

Nothing here downloads. ``digits`` ships inside scikit-learn's wheel; CIFAR is read from a folder in
torchvision's on-disk format (the extracted ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``);
Fashion-MNIST from its four idx files, in torchvision's layout or Debian's flat folder.
Splits never depend on the user's seed, so that every run and every strategy sees the same train,
validation and test images; the seed only drives the order of the training batches (and augmentation
through torch's global RNG). The loaders are NNI's traced ``DataLoader``, which NNI's evaluators accept.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nni.nas.evaluator.pytorch import DataLoader
from torch.utils.data import TensorDataset

from nni_bsn.preprocess import preprocessing
from nni_bsn.splits import (
    SPLIT_SEED,
    DataDir,
    DataError,
    DataInfo,
    Splits,
    TransformedSubset,
    check_image_size,
    check_labels,
    holdout_split,
    make_info,
    train_subset,
)

__all__ = [
    "DATASETS", "DataError", "DataInfo", "canonical_dataset_name", "get_datasets", "get_dataloaders",
    "digits_datasets", "cifar_datasets", "fashion_mnist_datasets", "CIFAR_FILES", "FASHION_MNIST_FILES",
]  # fmt: skip

DATASETS = ("digits", "cifar10", "cifar100", "fashion-mnist", "imagefolder")

DATA_DIR_ENV = "NNI_BSN_DATA"
"""Environment variable read for the data folder when ``data_dir`` is not given (default ``./data``)."""

# torchvision's on-disk layout: folder -> files expected in it.
CIFAR_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": (
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    ),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}
CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
# 45,000 train / 5,000 validation of the 50,000 training images, as in the paper's code
CIFAR_VAL_FRACTION = 0.1
CIFAR_MEAN_STD = (0.5, 0.5)  # the normalisation of the original BSN code


def canonical_dataset_name(name: str) -> str:
    """The name in :data:`DATASETS` that ``name`` spells, ignoring case, ``-`` and ``_``; else DataError."""
    key = str(name).lower().replace("-", "").replace("_", "")
    for canonical in DATASETS:
        if key == canonical.replace("-", ""):
            return canonical
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------------------------------
# digits


def digits_datasets(image_size: int | None = None, train_size: int | None = None) -> Splits:
    """scikit-learn's 1797 handwritten digits, split 70/15/15 (stratified, fixed seed), normalised.

    Images are 1x8x8 grey levels, standardised with the training split's mean and std, and upsampled
    bilinearly to ``image_size`` (a power of two; default 8) so that a fabric gets several scales.
    ``train_size``: a fixed class-balanced subset of the 1257 training images (see :func:`get_datasets`).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    size = check_image_size(image_size, 8)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    y = torch.as_tensor(digits.target)  # int64
    train_idx, rest = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=SPLIT_SEED)
    val_idx, test_idx = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=SPLIT_SEED)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    train_idx = train_subset(train_idx, digits.target[train_idx], train_size)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 8)
    splits = tuple(TensorDataset(x[i], y[i]) for i in (train_idx, val_idx, test_idx))
    steps = preprocessing(1, size, mean.item(), std.item(), "grey levels 0-16 divided by 16", 8)
    return *splits, make_info("digits", 10, size, splits, (str(c) for c in digits.target_names), steps)


# ---------------------------------------------------------------------------------------------------------------
# CIFAR


def _cifar_folder(name: str, data_dir: DataDir) -> Path:
    """The folder holding the CIFAR files; ``data_dir`` may be its parent (torchvision's ``root``) or itself."""
    folder, _ = CIFAR_FILES[name]
    root = Path(data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV, "data")).expanduser()
    return root if root.name == folder else root / folder


def _check_cifar_folder(name: str, path: Path) -> None:
    _, files = CIFAR_FILES[name]
    expected = ", ".join(files)
    hint = (
        f"expected {expected} in torchvision's on-disk format "
        f"(the extracted {CIFAR_ARCHIVES[name]}; nni-bsn never downloads)"
    )
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


def cifar_datasets(
    name: str = "cifar10",
    data_dir: DataDir = None,
    image_size: int | None = None,
    train_size: int | None = None,
) -> Splits:
    """CIFAR-10 or CIFAR-100 from a local folder: train (augmented), validation (held out), test.

    ``data_dir`` is torchvision's ``root`` (the folder that contains ``cifar-10-batches-py/`` or
    ``cifar-100-python/``) or that folder itself; default ``$NNI_BSN_DATA`` or ``./data``.
    10% of the training images (5,000 of 50,000) are held out for validation with a fixed seed; the
    test split is the official test set. Train images get pad-4 random crops and horizontal flips;
    all images are normalised with mean 0.5 and std 0.5 and resized to ``image_size`` if it is not 32.
    ``train_size`` keeps a fixed class-balanced subset of the 45,000 training images.
    Raises :class:`DataError` when the folder is missing, incomplete or unreadable, or holds a label
    outside ``0..num_classes-1``; never downloads.
    """
    from torchvision import transforms as T

    name = canonical_dataset_name(name)
    if name not in CIFAR_FILES:
        raise DataError(f"{name} is not a CIFAR dataset")
    size = check_image_size(image_size, 32)
    path = _cifar_folder(name, data_dir)
    _check_cifar_folder(name, path)
    cls = _torchvision_cifar(name)
    try:
        train_full = cls(str(path.parent), train=True, download=False)
        test_base = cls(str(path.parent), train=False, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, RuntimeError) as e:
        raise DataError(
            f"{name}: cannot read {path} as torchvision's CIFAR format ({type(e).__name__}: {e})"
        ) from e

    for split in (train_full, test_base):
        check_labels(f"{name}: {path}", split.targets, CIFAR_NUM_CLASSES[name])
    train_idx, val_idx = holdout_split(len(train_full), CIFAR_VAL_FRACTION)
    train_idx = train_subset(train_idx, np.asarray(train_full.targets)[train_idx], train_size)

    mean, std = CIFAR_MEAN_STD
    resize = [T.Resize(size, antialias=True)] if size != 32 else []
    normalise = [T.ToTensor(), T.Normalize((mean,) * 3, (std,) * 3)]
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *resize, *normalise])
    eval_tf = T.Compose([*resize, *normalise])
    train = TransformedSubset(train_full, train_idx, train_tf)
    val = TransformedSubset(train_full, val_idx, eval_tf)
    test = TransformedSubset(test_base, np.arange(len(test_base)), eval_tf)
    steps = preprocessing(3, size, mean, std, "RGB bytes divided by 255", 32)
    return (
        train,
        val,
        test,
        make_info(name, CIFAR_NUM_CLASSES[name], size, (train, val, test), train_full.classes, steps),
    )


# ---------------------------------------------------------------------------------------------------------------
# Fashion-MNIST

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four idx files, each read raw or gzipped (``.gz``)."""

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` installs the idx files (``dpkg -L dataset-fashion-mnist``)."""

FASHION_MNIST_VAL_FRACTION = 5_000 / 60_000  # 55,000 train / 5,000 validation of the 60,000 training images
FASHION_MNIST_MEAN_STD = (0.2860, 0.3530)  # of the 60,000 training images (the 55,000: 0.2862, 0.3531)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array with ``ndim`` dimensions in an idx file (raw or ``.gz``); DataError if malformed."""
    magic = 0x0800 + ndim  # 0x08: unsigned bytes, then the number of dimensions (2049 labels, 2051 images)
    expected = f"an idx file of unsigned bytes with magic number {magic} and {ndim} dimension(s)"
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"fashion-mnist: cannot read {path} ({e}); expected {expected}") from e
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"fashion-mnist: {path} is corrupt or not Fashion-MNIST's; expected {expected}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise DataError(f"fashion-mnist: {path} is truncated: {len(raw) - header} of {size} bytes for {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_mnist_files(root: Path) -> dict[str, Path]:
    """The four idx files under ``root``: torchvision's ``FashionMNIST/raw/`` (``root`` may also be
    ``FashionMNIST/``) or a flat folder (Debian's). The raw file comes second, to replace its ``.gz``."""
    folders = (root / "FashionMNIST" / "raw", root / "raw", root)
    names = FASHION_MNIST_FILES
    found = [{n: f for n in names for f in (d / f"{n}.gz", d / n) if f.is_file()} for d in folders]
    best = max(range(len(folders)), key=lambda i: len(found[i]))  # the first of the most complete folders
    if len(found[best]) == len(names):
        return found[best]
    hint = (
        f"expected {', '.join(names)} (raw or .gz) in torchvision's FashionMNIST/raw/ or in a flat "
        f"folder (apt-get install dataset-fashion-mnist puts them in {DEBIAN_FASHION_MNIST_DIR}); "
        "nni-bsn never downloads"
    )
    if found[best]:
        missing = ", ".join(n for n in names if n not in found[best])
        raise DataError(f"fashion-mnist: folder {folders[best]} is incomplete, missing {missing}; {hint}")
    raise DataError(f"fashion-mnist: no Fashion-MNIST files in {root} or {folders[0]}; {hint}")


def _read_fashion_mnist_split(files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 28, 28), labels (N,))`` of ``split`` (``train`` or ``t10k``), uint8, checked."""
    image_file, label_file = files[f"{split}-images-idx3-ubyte"], files[f"{split}-labels-idx1-ubyte"]
    images, labels = _read_idx(image_file, 3), _read_idx(label_file, 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"fashion-mnist: {image_file} holds {images.shape[1:]} images, expected 28x28")
    if len(labels) != len(images):
        raise DataError(f"fashion-mnist: {label_file} holds {len(labels)} labels for {len(images)} images")
    check_labels(f"fashion-mnist: {label_file}", labels, len(FASHION_MNIST_CLASSES))
    return images, labels


def _fashion_mnist_tensors(images: np.ndarray, labels: np.ndarray, size: int) -> TensorDataset:
    """Normalised ``(N, 1, size, size)`` float images and int64 labels, in memory."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    if size >= 32:
        x = F.pad(x, (2, 2, 2, 2))  # 0 is the background: every pixel is kept, the object stays centred
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 28)
    mean, std = FASHION_MNIST_MEAN_STD
    return TensorDataset(x.sub_(mean).div_(std), torch.from_numpy(labels.astype(np.int64)))


def fashion_mnist_datasets(
    data_dir: DataDir = None, image_size: int | None = None, train_size: int | None = None
) -> Splits:
    """Fashion-MNIST from its four local idx files: 55,000 train, 5,000 validation, the official 10,000 test.

    ``data_dir`` holds torchvision's ``FashionMNIST/raw/`` or the four files (Debian's flat folder), raw or
    gzipped; default ``$NNI_BSN_DATA``, else :data:`DEBIAN_FASHION_MNIST_DIR` if it exists, else ``./data``.
    One in 12 training images is held out for validation (fixed seed). One grey channel, normalised with the
    60,000 training images' mean 0.2860 and std 0.3530. ``image_size`` 32 (default) pads 28x28 with 2 pixels
    of background (0) on each side, which keeps every pixel; below 32 (16, 8, ...) the images are resized
    (bilinear, antialiased); above 32 the padded image is upsampled. No augmentation (every epoch and every
    strategy sees the same tensors, prepared once in memory, in seconds). ``train_size``: see get_datasets.
    A missing, incomplete or corrupt file raises :class:`DataError`; never downloads.
    """
    size = check_image_size(image_size, 32)
    debian = DEBIAN_FASHION_MNIST_DIR if DEBIAN_FASHION_MNIST_DIR.is_dir() else "data"
    root = data_dir or os.environ.get(DATA_DIR_ENV) or debian
    files = _fashion_mnist_files(Path(root).expanduser())
    train_images, train_labels = _read_fashion_mnist_split(files, "train")
    test_images, test_labels = _read_fashion_mnist_split(files, "t10k")
    train_idx, val_idx = holdout_split(len(train_labels), FASHION_MNIST_VAL_FRACTION)
    train_idx = train_subset(train_idx, train_labels[train_idx], train_size)
    train = _fashion_mnist_tensors(train_images[train_idx], train_labels[train_idx], size)
    val = _fashion_mnist_tensors(train_images[val_idx], train_labels[val_idx], size)
    test = _fashion_mnist_tensors(test_images, test_labels, size)
    steps = preprocessing(
        1, size, *FASHION_MNIST_MEAN_STD, "grey bytes divided by 255", 28, 2 if size >= 32 else 0
    )
    return (
        train,
        val,
        test,
        make_info("fashion-mnist", 10, size, (train, val, test), FASHION_MNIST_CLASSES, steps),
    )


# ---------------------------------------------------------------------------------------------------------------
# entry points


def get_datasets(
    name: str = "digits",
    data_dir: DataDir = None,
    image_size: int | None = None,
    train_size: int | None = None,
) -> Splits:
    """``(train, val, test, info)`` datasets for ``name`` in :data:`DATASETS`. ``train_size`` (default all)
    keeps that many training images, a fixed subset (seed 0) that cycles through the classes, so it is
    class-balanced and contained in every larger one; the validation and test splits stay whole."""
    key = canonical_dataset_name(name)
    if key == "digits":
        return digits_datasets(image_size, train_size)
    if key == "fashion-mnist":
        return fashion_mnist_datasets(data_dir, image_size, train_size)
    if key == "imagefolder":
        from nni_bsn.imagefolder import imagefolder_datasets

        return imagefolder_datasets(data_dir, image_size, train_size)
    return cifar_datasets(key, data_dir, image_size, train_size)


def get_dataloaders(
    name: str = "digits",
    data_dir: DataDir = None,
    batch_size: int = 64,
    image_size: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    train_size: int | None = None,
) -> tuple[DataLoader, DataLoader, DataLoader, DataInfo]:
    """``(train_loader, val_loader, test_loader, info)`` for ``name`` in :data:`DATASETS` (``fashion-mnist``
    may also be spelled ``fashion_mnist`` or ``fashionmnist``). The loaders are NNI's traced ``DataLoader``.
    The training loader shuffles with a
    generator seeded by ``seed``; validation and test loaders keep a fixed order. ``info`` gives
    ``num_classes``, ``in_channels``, ``image_size`` and the split ``sizes``. ``train_size`` keeps a fixed
    class-balanced subset of the training images (see :func:`get_datasets`).

    >>> train, val, test, info = get_dataloaders("digits", batch_size=32, image_size=16)
    >>> info.num_classes, info.in_channels, info.image_size
    (10, 1, 16)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    train, val, test, info = get_datasets(name, data_dir, image_size, train_size)
    generator = torch.Generator().manual_seed(int(seed))
    common = {"batch_size": batch_size, "num_workers": num_workers, "persistent_workers": num_workers > 0}
    train_loader = DataLoader(train, shuffle=True, generator=generator, **common)
    val_loader = DataLoader(val, shuffle=False, **common)
    test_loader = DataLoader(test, shuffle=False, **common)
    return train_loader, val_loader, test_loader, info
