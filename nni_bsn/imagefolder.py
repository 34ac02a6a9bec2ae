"""One's own images, in torchvision's ``ImageFolder`` layout (``nni-bsn search --dataset imagefolder --data-dir DIR``).

Two layouts, one folder of images per class (any format PIL reads; the folder names are the class names):

- ``DIR/train/<class>/``, with ``DIR/val/<class>/`` and ``DIR/test/<class>/`` when they exist; a missing one is
  held out of ``train/`` (15% of its images each, stratified, fixed seed);
- ``DIR/<class>/`` only: split 70 / 15 / 15 into train, validation and test (stratified, fixed seed).

Images are converted to grey if every one looked at is grey (the first of each class and the first 16), else to
RGB; resized to ``image_size`` x ``image_size`` (bilinear, antialiased; the aspect ratio is not kept); scaled to
[0, 1] and normalised with mean 0.5 and std 0.5 per channel, as CIFAR is. No augmentation.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from nni_bsn.preprocess import preprocessing
from nni_bsn.splits import (
    SPLIT_SEED,
    DataDir,
    DataError,
    Splits,
    TransformedSubset,
    check_image_size,
    make_info,
    train_subset,
)

__all__ = ["imagefolder_datasets", "HELD_OUT_FRACTION", "MEAN_STD"]

HELD_OUT_FRACTION = 0.15
"""The share of the training images held out for a missing ``val/`` or ``test/`` (each)."""
MEAN_STD = (0.5, 0.5)
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_LAYOUT = (
    "expected DIR/<class>/<images> or DIR/train/<class>/<images> (optional val/ and test/ beside train/)"
)


def _load(path: str, mode: str):
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert(mode)


def _folder(root: Path, what: str):
    """torchvision's ImageFolder of ``root`` (images left as files), or a one-line :class:`DataError`."""
    from torchvision.datasets import ImageFolder

    try:
        found = ImageFolder(str(root))
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"imagefolder: {what} {root}: {str(e).splitlines()[0]} ({_LAYOUT})") from None
    if len(found.classes) < 2:
        names = ", ".join(found.classes)
        raise DataError(
            f"imagefolder: {root} has {len(found.classes)} class folder ({names}); a classifier needs at least 2"
        )
    return found


def _mode(folder) -> str:
    """``'L'`` if every image looked at (the first of each class and the first 16) is grey, else ``'RGB'``."""
    from PIL import Image, UnidentifiedImageError

    first = {}
    for i, label in enumerate(folder.targets):
        first.setdefault(label, i)
    for i in sorted({*first.values(), *range(min(16, len(folder)))}):
        path = folder.samples[i][0]
        try:
            with Image.open(path) as image:
                if image.mode not in _GREY_MODES:
                    return "RGB"
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"imagefolder: cannot read the image {path}: {e}") from None
    return "L"


def _hold_out(labels: np.ndarray, idx: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``idx`` split into the kept and the held-out ``fraction`` (stratified when every class allows it)."""
    from sklearn.model_selection import train_test_split

    try:
        kept, held = train_test_split(idx, test_size=fraction, stratify=labels[idx], random_state=SPLIT_SEED)
    except ValueError:  # a class too small to be in both parts
        kept, held = train_test_split(idx, test_size=fraction, random_state=SPLIT_SEED)
    return np.sort(kept), np.sort(held)


def imagefolder_datasets(
    data_dir: DataDir = None, image_size: int | None = None, train_size: int | None = None
) -> Splits:
    """``(train, val, test, info)`` of the images under ``data_dir`` (see the module's docstring for the layouts,
    the split and the preprocessing). ``image_size`` defaults to 32; ``train_size``: see ``get_datasets``.
    A missing or empty folder, fewer than 2 classes, or ``val/`` / ``test/`` with other classes than ``train/``
    raise :class:`DataError`."""
    from torchvision import transforms as T

    size = check_image_size(image_size, 32)
    if data_dir is None:
        raise DataError(f"imagefolder: give the folder of your images with --data-dir ({_LAYOUT})")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"imagefolder: folder {root} not found; {_LAYOUT}")
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if split_dirs and "train" not in split_dirs:
        raise DataError(f"imagefolder: {root} has {'/ and '.join(split_dirs)}/ but no train/; {_LAYOUT}")
    pool = _folder(split_dirs.get("train", root), "folder")
    mode = _mode(pool)
    loader = functools.partial(_load, mode=mode)
    parts = {}
    for split in ("val", "test"):
        if split in split_dirs:
            given = _folder(split_dirs[split], f"{split}/ folder")
            if given.classes != pool.classes:
                raise DataError(
                    f"imagefolder: {split_dirs[split]} has the classes {given.classes}, train/ has {pool.classes}; "
                    "give them the same class folders"
                )
            parts[split] = (given, np.arange(len(given)))
    labels = np.asarray(pool.targets)
    train_idx = np.arange(len(pool))
    missing = [s for s in ("test", "val") if s not in parts]
    for k, split in enumerate(missing):
        # the share of what is left that is HELD_OUT_FRACTION of the whole (15% then 15/85)
        train_idx, held = _hold_out(labels, train_idx, HELD_OUT_FRACTION / (1 - k * HELD_OUT_FRACTION))
        parts[split] = (pool, held)
    train_idx = train_subset(train_idx, labels[train_idx], train_size)
    channels = 1 if mode == "L" else 3
    transform = T.Compose(
        [
            T.Resize((size, size), antialias=True),
            T.ToTensor(),
            T.Normalize((MEAN_STD[0],) * channels, (MEAN_STD[1],) * channels),
        ]
    )
    splits = []
    for folder, idx in ((pool, train_idx), parts["val"], parts["test"]):
        folder.loader = loader  # every split read as grey, or every one as RGB
        splits.append(TransformedSubset(folder, idx, transform))
    pixels = f"{'grey' if channels == 1 else 'RGB'} bytes divided by 255"
    steps = preprocessing(channels, size, *MEAN_STD, pixels, None)
    return *splits, make_info("imagefolder", len(pool.classes), size, tuple(splits), pool.classes, steps)
