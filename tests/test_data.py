"""nni_bsn.data: digits splits, CIFAR and Fashion-MNIST from local folders, clear errors, no downloads."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from nni.nas.evaluator.pytorch import Classification
from nni.nas.evaluator.pytorch import DataLoader as TracedDataLoader

import nni_bsn.data as data_module
from nni_bsn.data import (
    CIFAR_FILES,
    DATASETS,
    FASHION_MNIST_FILES,
    DataError,
    DataInfo,
    canonical_dataset_name,
    get_dataloaders,
    get_datasets,
)


def _labels(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


# ------------------------------------------------------------------------------------------------ digits


def test_digits_split_sizes_are_70_15_15_of_1797():
    train, val, test, info = get_datasets("digits")
    assert (len(train), len(val), len(test)) == (1257, 270, 270)
    assert info.sizes == {"train": 1257, "val": 270, "test": 270}
    assert len(train) + len(val) + len(test) == 1797


def test_digits_split_is_stratified():
    train, val, test, _ = get_datasets("digits")
    for ds in (train, val, test):
        counts = torch.bincount(torch.tensor(_labels(ds)), minlength=10)
        assert counts.min() >= 0.09 * len(ds) and counts.max() <= 0.115 * len(ds)


def test_digits_split_does_not_depend_on_user_seed():
    a = get_dataloaders("digits", batch_size=16, seed=0)
    b = get_dataloaders("digits", batch_size=16, seed=123)
    for la, lb in zip(a[:3], b[:3]):
        assert torch.equal(la.dataset.tensors[0], lb.dataset.tensors[0])
        assert torch.equal(la.dataset.tensors[1], lb.dataset.tensors[1])


def test_digits_train_order_is_deterministic_per_seed():
    def first_labels(seed):
        train = get_dataloaders("digits", batch_size=16, seed=seed)[0]
        return next(iter(train))[1]

    assert torch.equal(first_labels(3), first_labels(3))
    assert not torch.equal(first_labels(3), first_labels(4))


def test_digits_are_standardised_on_the_training_split():
    train, _, _, _ = get_datasets("digits")
    x = train.tensors[0]
    assert abs(float(x.mean())) < 1e-4
    assert abs(float(x.std()) - 1.0) < 1e-3


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_loader_shapes_at_each_image_size(size):
    train, val, test, info = get_dataloaders("digits", batch_size=10, image_size=size)
    assert info.image_size == size and info.in_channels == 1 and info.num_classes == 10
    for loader in (train, val, test):
        x, y = next(iter(loader))
        assert x.shape == (10, 1, size, size) and x.dtype == torch.float32
        assert y.shape == (10,) and y.dtype == torch.long
        assert int(y.min()) >= 0 and int(y.max()) <= 9


def test_loaders_are_nni_traced_and_accepted_by_classification(digits_loaders):
    train, val, _, _ = digits_loaders
    assert isinstance(train, TracedDataLoader) and isinstance(val, TracedDataLoader)
    evaluator = Classification(
        num_classes=10,
        train_dataloaders=train,
        val_dataloaders=val,
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    assert evaluator.train_dataloaders is train


def test_info_reads_as_attributes_and_as_mapping():
    info = get_datasets("digits")[3]
    assert isinstance(info, DataInfo)
    assert info["num_classes"] == info.num_classes == 10
    assert info.as_dict()["sizes"]["val"] == 270
    with pytest.raises(KeyError):
        info["nope"]


@pytest.mark.parametrize("bad", [0, 12, 24, "16"])
def test_bad_image_size_is_rejected(bad):
    with pytest.raises(DataError, match="power of two"):
        get_datasets("digits", image_size=bad)


def test_unknown_dataset_name_is_rejected():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*digits, cifar10, cifar100, fashion-mnist"):
        get_dataloaders("mnist")


# ------------------------------------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize("name, num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_from_a_local_folder_in_torchvision_format(cifar_folder, name, num_classes):
    root = cifar_folder(name, n_train=40, n_test=10)
    train, val, test, info = get_dataloaders(name, data_dir=root, batch_size=8)
    assert info.num_classes == num_classes and info.in_channels == 3 and info.image_size == 32
    assert info.sizes == {"train": 36, "val": 4, "test": 10}
    assert len(info.classes) == num_classes
    x, y = next(iter(train))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0  # normalised with mean 0.5, std 0.5
    xt, yt = next(iter(test))
    assert xt.shape == (8, 3, 32, 32)
    assert yt.tolist() == [i % num_classes for i in range(8)]  # test set, in file order
    assert int(y.max()) < num_classes


def test_cifar_accepts_the_dataset_folder_itself_as_data_dir(cifar_folder):
    root = cifar_folder("cifar10")
    info = get_datasets("cifar10", data_dir=root / "cifar-10-batches-py")[3]
    assert info.sizes["test"] == 10


def test_cifar_validation_split_is_fixed_and_disjoint_from_train(cifar_folder):
    root = cifar_folder("cifar10", n_train=50)
    a_train, a_val, _, _ = get_datasets("cifar10", data_dir=root)
    b_train, b_val, _, _ = get_datasets("cifar10", data_dir=root)
    assert list(a_val.indices) == list(b_val.indices)
    assert set(a_train.indices).isdisjoint(a_val.indices)
    assert len(a_train) + len(a_val) == 50 and len(a_val) == 5


def test_cifar_validation_and_test_are_the_normalised_images_without_augmentation(cifar_folder):
    root = cifar_folder("cifar10")
    _, val, test, _ = get_datasets("cifar10", data_dir=root)
    for ds, i in ((val, 0), (test, 3)):
        raw = torch.from_numpy(ds.base.data[ds.indices[i]]).permute(2, 0, 1).float() / 255
        assert torch.allclose(ds[i][0], (raw - 0.5) / 0.5, atol=1e-6)


def test_cifar_training_images_are_augmented(cifar_folder):
    root = cifar_folder("cifar10")
    train = get_datasets("cifar10", data_dir=root)[0]
    torch.manual_seed(0)
    views = [train[0][0] for _ in range(8)]
    assert any(not torch.equal(views[0], v) for v in views[1:])


def test_cifar_resizes_to_a_smaller_image_size(cifar_folder):
    root = cifar_folder("cifar100")
    train, _, _, info = get_dataloaders("cifar100", data_dir=root, batch_size=4, image_size=16)
    assert info.image_size == 16
    assert next(iter(train))[0].shape == (4, 3, 16, 16)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_folder_raises_one_line_error_naming_folder_and_files(tmp_path, name):
    folder, files = CIFAR_FILES[name]
    with pytest.raises(DataError) as excinfo:
        get_dataloaders(name, data_dir=tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(tmp_path / folder) in message
    assert all(f in message for f in files)
    assert "never downloads" in message


@pytest.mark.parametrize(
    "name, skip", [("cifar10", ("data_batch_3", "batches.meta")), ("cifar100", ("test",))]
)
def test_incomplete_cifar_folder_names_the_missing_files(cifar_folder, name, skip):
    root = cifar_folder(name, skip=skip)
    with pytest.raises(DataError) as excinfo:
        get_datasets(name, data_dir=root)
    message = str(excinfo.value)
    assert "\n" not in message and "incomplete" in message
    assert f"missing {', '.join(skip)};" in message


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_cifar_never_downloads(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_download)
    monkeypatch.setattr(tv_utils, "download_url", no_download)
    with pytest.raises(DataError):
        get_datasets("cifar10", data_dir=tmp_path)


def test_cifar_folder_from_environment_variable(cifar_folder, monkeypatch):
    root = cifar_folder("cifar10")
    monkeypatch.setenv("NNI_BSN_DATA", str(root))
    assert get_datasets("cifar10")[3].sizes["train"] == 36


def test_unreadable_cifar_file_raises_data_error(cifar_folder):
    root = cifar_folder("cifar10")
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read"):
        get_datasets("cifar10", data_dir=root)


def test_cifar_labels_out_of_range_raise_data_error_at_load(cifar_folder):
    root = cifar_folder("cifar10")
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    entry = pickle.loads(batch.read_bytes())
    entry["labels"][0] = 10
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DataError, match=r"cifar10: .*labels must be in 0\.\.9, found 0\.\.10") as excinfo:
        get_datasets("cifar10", data_dir=root)
    assert "\n" not in str(excinfo.value)


def test_cifar100_test_labels_out_of_range_raise_data_error(cifar_folder):
    root = cifar_folder("cifar100")
    test_file = root / "cifar-100-python" / "test"
    entry = pickle.loads(test_file.read_bytes())
    entry["fine_labels"][3] = -1
    test_file.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DataError, match=r"labels must be in 0\.\.99, found -1\.\."):
        get_datasets("cifar100", data_dir=root)


# ------------------------------------------------------------------------------------------------ train_size


def test_train_size_keeps_a_class_balanced_nested_subset_and_the_same_validation_split():
    full_train, full_val, _, _ = get_datasets("digits")
    small, val, _, info = get_datasets("digits", train_size=100)
    larger = get_datasets("digits", train_size=300)[0]
    assert len(small) == 100 and info.sizes == {"train": 100, "val": 270, "test": 270}
    assert torch.bincount(small.tensors[1], minlength=10).tolist() == [10] * 10
    assert torch.equal(val.tensors[0], full_val.tensors[0])
    rows = {tuple(x.flatten().tolist()) for x in larger.tensors[0]}
    assert all(tuple(x.flatten().tolist()) in rows for x in small.tensors[0])  # nested: a fixed order, cut
    assert torch.equal(small.tensors[0], get_datasets("digits", train_size=100)[0].tensors[0])


def test_train_size_subsets_cifar_training_images(cifar_folder):
    root = cifar_folder("cifar10", n_train=50)
    train, val, _, info = get_datasets("cifar10", data_dir=root, train_size=20)
    assert info.sizes["train"] == 20 and len(val) == 5
    assert set(train.indices) <= set(get_datasets("cifar10", data_dir=root)[0].indices)
    assert torch.bincount(torch.tensor(_labels(train)), minlength=10).tolist() == [2] * 10


@pytest.mark.parametrize("bad", [0, 1258, "100", 10.0])
def test_bad_train_size_is_rejected(bad):
    with pytest.raises(DataError, match="train_size must be an integer in 1..1257"):
        get_datasets("digits", train_size=bad)


# ------------------------------------------------------------------------------------------------ Fashion-MNIST


def _idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """``array`` (uint8) in the idx format: magic 0x0800 + ndim, one big-endian uint32 per dimension, the data."""
    magic = 0x0800 + array.ndim if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_fashion_folder(
    folder: Path, n_train: int = 36, n_test: int = 10, gz: bool = True, skip: tuple[str, ...] = ()
) -> Path:
    """Write the four Fashion-MNIST idx files (``.gz`` or raw) in ``folder``; return ``folder``.

    Images are random 28x28 uint8 whose top-left pixel holds the image's index (mod 256), so that a
    test can tell which image ended in which split; labels cycle through 0..9.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) % 256
        for name, array in (
            (f"{split}-images-idx3-ubyte", images),
            (f"{split}-labels-idx1-ubyte", np.arange(n) % 10),
        ):
            if name in skip:
                continue
            raw = _idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return folder


def _raw_train_images(folder: Path) -> np.ndarray:
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def _image_ids(dataset) -> list[int]:
    """The index each image was written with (its top-left pixel, at (2, 2) once padded to 32)."""
    mean, std = data_module.FASHION_MNIST_MEAN_STD
    return [round(float(v) * std * 255 + mean * 255) for v in dataset.tensors[0][:, 0, 2, 2]]


@pytest.fixture
def fashion_folder(tmp_path):
    """Factory: ``fashion_folder(layout='flat'|'torchvision', **write_fashion_folder kwargs)`` -> the data_dir."""

    def make(layout: str = "flat", **kwargs) -> Path:
        if layout == "flat":  # Debian's dataset-fashion-mnist: the four files in one folder
            return write_fashion_folder(tmp_path / "fashion-mnist", **kwargs)
        write_fashion_folder(tmp_path / "data" / "FashionMNIST" / "raw", **kwargs)  # torchvision's root
        return tmp_path / "data"

    return make


def test_fashion_mnist_is_a_dataset_name_in_every_spelling(fashion_folder):
    root = fashion_folder()
    assert "fashion-mnist" in DATASETS
    for spelling in ("fashion-mnist", "fashion_mnist", "fashionmnist", "FashionMNIST"):
        assert get_datasets(spelling, data_dir=root)[3].name == "fashion-mnist"


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_both_layouts_gzipped_or_raw(fashion_folder, layout, gz):
    root = fashion_folder(layout, gz=gz)
    train, val, test, info = get_dataloaders("fashion-mnist", data_dir=root, batch_size=8)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 32)
    assert info.sizes == {"train": 33, "val": 3, "test": 10}  # one training image in 12 held out
    assert info.classes[0] == "T-shirt/top" and len(info.classes) == 10
    assert isinstance(train, TracedDataLoader)
    x, y = next(iter(train))
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    xt, yt = next(iter(test))
    assert yt.tolist() == [i % 10 for i in range(8)]  # the test set, in file order
    assert _image_ids(test.dataset) == list(range(10))


def test_fashion_mnist_accepts_the_torchvision_dataset_folder_itself(fashion_folder):
    root = fashion_folder("torchvision")
    assert get_datasets("fashion-mnist", data_dir=root / "FashionMNIST")[3].sizes["test"] == 10
    assert get_datasets("fashion-mnist", data_dir=root / "FashionMNIST" / "raw")[3].sizes["test"] == 10


def test_fashion_mnist_prefers_the_raw_file_to_its_gz(fashion_folder):
    folder = fashion_folder(gz=False)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")  # torchvision keeps both
    assert get_datasets("fashion-mnist", data_dir=folder)[3].sizes["train"] == 33


def test_fashion_mnist_validation_split_is_fixed_and_disjoint_from_train(fashion_folder):
    root = fashion_folder(n_train=120)
    train, val, _, info = get_datasets("fashion-mnist", data_dir=root)
    assert (len(train), len(val)) == (110, 10)
    ids_train, ids_val = _image_ids(train), _image_ids(val)
    assert sorted(ids_train + ids_val) == list(range(120))
    assert ids_val == _image_ids(get_datasets("fashion-mnist", data_dir=root)[1])


def test_fashion_mnist_split_rule_gives_55000_and_5000_of_the_60000_training_images():
    train_idx, val_idx = data_module.holdout_split(60_000, data_module.FASHION_MNIST_VAL_FRACTION)
    assert (len(train_idx), len(val_idx)) == (55_000, 5_000)


def test_fashion_mnist_pads_28_to_32_with_background_and_keeps_every_pixel(fashion_folder):
    folder = fashion_folder(n_train=12)
    train, val, _, _ = get_datasets("fashion-mnist", data_dir=folder, image_size=32)
    mean, std = data_module.FASHION_MNIST_MEAN_STD
    raw = torch.from_numpy(_raw_train_images(folder).astype(np.float32)) / 255
    images = torch.cat([train.tensors[0], val.tensors[0]])
    ids = _image_ids(train) + _image_ids(val)
    assert torch.allclose(images[:, 0, 2:30, 2:30], (raw[ids] - mean) / std, atol=1e-5)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.allclose(images[:, 0][:, border], torch.tensor(-mean / std), atol=1e-6)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_fashion_mnist_image_sizes(fashion_folder, size):
    train, val, test, info = get_dataloaders(
        "fashion-mnist", data_dir=fashion_folder(), batch_size=4, image_size=size
    )
    assert info.image_size == size
    for loader in (train, val, test):
        assert next(iter(loader))[0].shape[1:] == (1, size, size)


def test_fashion_mnist_is_normalised_with_its_training_mean_and_std(fashion_folder):
    train = get_datasets("fashion-mnist", data_dir=fashion_folder(), image_size=16)[0]
    assert data_module.FASHION_MNIST_MEAN_STD == (0.2860, 0.3530)
    x = train.tensors[0] * 0.3530 + 0.2860  # back to [0, 1]: random uint8 images average 0.5
    assert float(x.min()) >= -1e-5 and float(x.max()) <= 1 + 1e-5 and abs(float(x.mean()) - 0.5) < 0.02


def test_fashion_mnist_train_size_is_balanced_and_keeps_validation_and_test(fashion_folder):
    root = fashion_folder(n_train=120)
    full_train, full_val, _, _ = get_datasets("fashion-mnist", data_dir=root)
    train, val, test, info = get_datasets("fashion-mnist", data_dir=root, train_size=20)
    assert info.sizes == {"train": 20, "val": 10, "test": 10}
    assert torch.bincount(train.tensors[1], minlength=10).tolist() == [2] * 10
    assert set(_image_ids(train)) <= set(_image_ids(full_train))
    assert torch.equal(val.tensors[0], full_val.tensors[0])
    with pytest.raises(DataError, match=r"train_size must be an integer in 1\.\.110"):
        get_datasets("fashion-mnist", data_dir=root, train_size=111)


def _one_line_error(root, **kwargs) -> str:
    with pytest.raises(DataError) as excinfo:
        get_datasets("fashion-mnist", data_dir=root, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith("fashion-mnist: ")
    return message


def test_missing_fashion_mnist_folder_names_the_expected_files(tmp_path):
    message = _one_line_error(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message
    assert all(name in message for name in FASHION_MNIST_FILES)
    assert "dataset-fashion-mnist" in message and "never downloads" in message


def test_incomplete_fashion_mnist_folder_names_the_missing_file(fashion_folder):
    root = fashion_folder("torchvision", skip=("t10k-labels-idx1-ubyte",))
    message = _one_line_error(root)
    assert f"folder {root / 'FashionMNIST' / 'raw'} is incomplete, missing t10k-labels-idx1-ubyte;" in message


def test_fashion_mnist_file_with_a_wrong_magic_number_is_a_data_error(fashion_folder):
    folder = fashion_folder(gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(np.zeros((2, 28, 28), np.uint8), magic=2049))
    message = _one_line_error(folder)
    assert str(path) in message and "magic number 2051" in message


def test_truncated_fashion_mnist_file_is_a_data_error(fashion_folder):
    folder = fashion_folder(gz=False)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    message = _one_line_error(folder)
    assert str(path) in message and "truncated" in message and "7840 bytes" in message


def test_truncated_gzip_file_is_a_data_error(fashion_folder):
    folder = fashion_folder(gz=True)
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    message = _one_line_error(folder)
    assert f"cannot read {path}" in message and "magic number 2049" in message


def test_fashion_mnist_labels_out_of_range_are_a_data_error(fashion_folder):
    folder = fashion_folder(gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.full(36, 10, np.uint8)))
    assert "labels must be in 0..9, found 10..10" in _one_line_error(folder)


def test_fashion_mnist_label_count_must_match_the_images(fashion_folder):
    folder = fashion_folder(gz=False)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(9, np.uint8)))
    assert "holds 9 labels for 10 images" in _one_line_error(folder)


def test_fashion_mnist_images_must_be_28x28(fashion_folder):
    folder = fashion_folder(gz=False)
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((10, 32, 32), np.uint8)))
    assert "expected 28x28" in _one_line_error(folder)


def test_fashion_mnist_default_folder_is_env_then_debian_then_data(fashion_folder, tmp_path, monkeypatch):
    debian = fashion_folder("flat", n_train=24)  # stands for /usr/share/datasets/fashion-mnist
    env_root = write_fashion_folder(tmp_path / "env", n_train=48)
    local = write_fashion_folder(tmp_path / "cwd" / "data" / "FashionMNIST" / "raw", n_train=60)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST_DIR", debian)
    monkeypatch.setenv("NNI_BSN_DATA", str(env_root))
    assert get_datasets("fashion-mnist")[3].sizes["val"] == 4  # $NNI_BSN_DATA
    assert get_datasets("fashion-mnist", data_dir=local)[3].sizes["val"] == 5  # explicit data_dir
    monkeypatch.delenv("NNI_BSN_DATA")
    assert get_datasets("fashion-mnist")[3].sizes["val"] == 2  # Debian's folder
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "not-installed")
    assert get_datasets("fashion-mnist")[3].sizes["val"] == 5  # ./data


def test_canonical_dataset_name_accepts_every_spelling_and_rejects_others():
    assert [canonical_dataset_name(n) for n in ("Fashion_MNIST", "CIFAR-10", "digits")] == [
        "fashion-mnist",
        "cifar10",
        "digits",
    ]
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        canonical_dataset_name("mnist")


def test_the_jobs_accept_every_dataset_the_loader_knows_under_its_aliases():
    from nni_bsn import data
    from nni_bsn.jobs.config import DATASETS, canonical_dataset, check_data_cost_budget

    assert DATASETS == data.DATASETS
    for alias in ("fashion-mnist", "fashion_mnist", "FashionMNIST", "CIFAR10", "digits"):
        check_data_cost_budget(alias, "macs", "50%")
        assert canonical_dataset(alias) == data.canonical_dataset_name(alias)
