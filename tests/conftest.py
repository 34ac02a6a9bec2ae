"""Shared test set-up: a private HOME for NNI, fixed seeds, two threads, small data fixtures."""

from __future__ import annotations

import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path

# NNI computes its home directory (~/nni-experiments, the experiment manifest and its lock) when it is first
# imported, so HOME must point to a private folder before any test module imports nni.
_TEST_HOME = tempfile.mkdtemp(prefix="nni-bsn-test-home-")
os.environ["HOME"] = _TEST_HOME
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import nni_bsn  # noqa: E402,F401  (the filters of NNI's import warnings, before nni is imported)
import nni_bsn.compat  # noqa: E402,F401  (the filelock guard, before any experiment runs)

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def digits_loaders():
    """Digits at 8x8, batch 32: ``(train, val, test, info)``. Limit the batches in the Trainer."""
    from nni_bsn.data import get_dataloaders

    return get_dataloaders("digits", batch_size=32, image_size=8, seed=0)


def write_cifar_folder(
    root: Path, name: str = "cifar10", n_train: int = 40, n_test: int = 10, skip: tuple[str, ...] = ()
) -> Path:
    """Write a tiny dataset in torchvision's CIFAR on-disk format under ``root``; return ``root``.

    CIFAR-10: ``cifar-10-batches-py/data_batch_1..5`` (``n_train`` images spread over the five batches),
    ``test_batch`` and ``batches.meta``. CIFAR-100: ``cifar-100-python/train``, ``test`` and ``meta``.
    Images are random uint8 rows of 3072 values (channel-major 32x32); labels cycle through the classes.
    The real files were pickled by Python 2, so their keys load as ``str`` under torchvision's
    ``encoding='latin1'`` (``b'data'`` with ``encoding='bytes'``); ``str`` keys give the same result here.
    Files in ``skip`` are not written.
    """
    rng = np.random.default_rng(1)
    if name == "cifar10":
        folder, num_classes, label_key = root / "cifar-10-batches-py", 10, "labels"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file = "test_batch", "batches.meta"
        meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n_train // 5}
    else:
        folder, num_classes, label_key = root / "cifar-100-python", 100, "fine_labels"
        train_files, test_file, meta_file = ["train"], "test", "meta"
        meta = {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        }
    folder.mkdir(parents=True, exist_ok=True)

    def dump(fname: str, n: int, offset: int) -> None:
        if fname in skip:
            return
        entry = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            label_key: [(offset + i) % num_classes for i in range(n)],
            "filenames": [f"img{offset + i}.png" for i in range(n)],
        }
        if name == "cifar100":
            entry["coarse_labels"] = [((offset + i) % num_classes) // 5 for i in range(n)]
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    per_file = np.array_split(np.arange(n_train), len(train_files))
    for fname, chunk in zip(train_files, per_file):
        dump(fname, len(chunk), int(chunk[0]) if len(chunk) else 0)
    dump(test_file, n_test, 0)
    if meta_file not in skip:
        with open(folder / meta_file, "wb") as f:
            pickle.dump(meta, f, protocol=2)
    return root


@pytest.fixture
def cifar_folder(tmp_path):
    """Factory: ``cifar_folder(name='cifar10', n_train=40, n_test=10, skip=())`` -> root folder in tmp_path."""

    def make(name: str = "cifar10", **kwargs) -> Path:
        return write_cifar_folder(tmp_path / "data", name, **kwargs)

    return make
