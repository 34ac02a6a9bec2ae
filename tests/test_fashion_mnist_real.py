"""Fashion-MNIST on the real files: Debian's dataset-fashion-mnist package, skipped where it is not installed.

``.ci/run`` installs the package where apt is available (``apt-get install dataset-fashion-mnist``); the
files are read from :data:`nni_bsn.data.DEBIAN_FASHION_MNIST_DIR`, the folder the package installs.
"""

from __future__ import annotations

import pytest
import torch

from nni_bsn.data import DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_FILES, get_dataloaders


def _installed() -> bool:
    return all((DEBIAN_FASHION_MNIST_DIR / f"{name}.gz").is_file() for name in FASHION_MNIST_FILES)


pytestmark = pytest.mark.skipif(
    not _installed(),
    reason=f"Debian's dataset-fashion-mnist is not installed (no {DEBIAN_FASHION_MNIST_DIR}); "
    "apt-get install dataset-fashion-mnist to run this test",
)


def test_real_fashion_mnist_splits_shapes_and_labels():
    train, val, test, info = get_dataloaders(
        "fashion-mnist", data_dir=DEBIAN_FASHION_MNIST_DIR, batch_size=256
    )
    assert info.sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 32)
    for loader, n in ((train, 55_000), (val, 5_000), (test, 10_000)):
        x, y = loader.dataset.tensors
        assert x.shape == (n, 1, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.long and int(y.min()) == 0 and int(y.max()) == 9
    counts = torch.bincount(test.dataset.tensors[1], minlength=10)
    assert counts.tolist() == [1_000] * 10  # the official test set: 1,000 images per class
    x = train.dataset.tensors[0][:, :, 2:30, 2:30]  # the original 28x28, inside the background padding
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1.0) < 0.01  # normalised with its own stats
    batch, labels = next(iter(train))
    assert batch.shape == (256, 1, 32, 32) and labels.shape == (256,)
