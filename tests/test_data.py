"""nni_bsn.data: digits splits, CIFAR from a local folder in torchvision's format, clear errors, no downloads."""

from __future__ import annotations

import pytest
import torch
from nni.nas.evaluator.pytorch import Classification
from nni.nas.evaluator.pytorch import DataLoader as TracedDataLoader

from nni_bsn.data import CIFAR_FILES, DataError, DataInfo, get_dataloaders, get_datasets


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
    evaluator = Classification(num_classes=10, train_dataloaders=train, val_dataloaders=val, max_epochs=1,
                               accelerator="cpu", logger=False, enable_progress_bar=False,
                               enable_checkpointing=False, enable_model_summary=False)
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
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*digits, cifar10, cifar100"):
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
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0   # normalised with mean 0.5, std 0.5
    xt, yt = next(iter(test))
    assert xt.shape == (8, 3, 32, 32)
    assert yt.tolist() == [i % num_classes for i in range(8)]   # test set, in file order
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


@pytest.mark.parametrize("name, skip", [("cifar10", ("data_batch_3", "batches.meta")), ("cifar100", ("test",))])
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
