"""Every script in examples/ runs as a user would run it (its own process), on tiny data, and does what it says."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nni_bsn

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT_S = 240


def _run(*argv: str, cwd: Path) -> str:
    """Run ``python *argv`` with the checkout importable; its stdout, or a failure showing its output."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _example_module(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_imagefolder(root: Path, classes=("red", "green", "blue", "grey"), train=12, val=4) -> Path:
    """A 4-class ImageFolder of 12x12 PNGs, one colour per class with noise: train/<class>/, val/<class>/."""
    from PIL import Image

    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "grey": (128, 128, 128)}
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.array(colours[name]) + rng.normal(0, 20, (12, 12, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory) -> Path:
    """The output folder of a tiny `nni-bsn search` on digits (CNF 2x4 at 8x8, 1 epoch, 128 images)."""
    out = tmp_path_factory.mktemp("search") / "found"
    tiny = ["--epochs", "1", "--layers", "2", "--channels", "4", "--image-size", "8", "--train-size", "128"]
    _run("-m", "nni_bsn", "search", *tiny, "--out", str(out), cwd=out.parent)
    return out


def test_search_imagefolder_finds_a_network_whose_weights_load_into_its_architecture(tmp_path):
    import torch

    from nni_bsn.network.export import load_frozen_model
    from search_spaces import ConvolutionalNeuralFabric

    data = _write_imagefolder(tmp_path / "images")
    out = tmp_path / "found"
    tiny = ["--image-size", "8", "--layers", "2", "--channels", "4", "--epochs", "1", "--batch-size", "16"]
    stdout = _run(str(EXAMPLES / "search_imagefolder.py"), str(data), *tiny, "--out", str(out), cwd=tmp_path)
    assert "val accuracy" in stdout
    result = json.loads((out / "result.json").read_text())
    assert result["classes"] == ["blue", "green", "grey", "red"]  # ImageFolder's sorted class names
    assert result["preprocessing"] == {"image_size": 8, "channels": 3, "mean": 0.5, "std": 0.5}
    assert 0.0 <= result["val_accuracy"] <= 1.0
    assert result["costs"]["macs"] <= result["budgets"]["macs"]
    space_args = {k: v for k, v in result["space"].items() if k != "name"}
    arch = json.loads((out / "arch.json").read_text())
    assert set(arch) == set(ConvolutionalNeuralFabric(**space_args).gate_labels)
    model = load_frozen_model(lambda: ConvolutionalNeuralFabric(**space_args), arch, out / "weights.pt")
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
    assert not (out / "nni").exists()  # NNI's experiment files are not left in the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["found", "images"]  # nothing else in the cwd


def test_hub_space_example_exports_a_nasbench201_architecture_within_its_macs_budget(tmp_path):
    tiny = ["--epochs", "1", "--channels", "4", "--image-size", "8", "--train-size", "64", "--budget", "50%"]
    result = json.loads(_run(str(EXAMPLES / "hub_space_macs.py"), *tiny, cwd=tmp_path))
    assert list(tmp_path.iterdir()) == []  # no checkpoints or logs left in the current directory
    assert len(result["arch"]) == 6 and all(
        k.startswith("cell/") for k in result["arch"]
    )  # NasBench201's edges
    assert 0 < result["costs"]["macs"] <= result["budgets"]["macs"]


def test_compare_example_writes_a_row_for_bsn_and_for_darts(tmp_path):
    out = tmp_path / "cmp"
    tiny = ["--epochs", "1", "--layers", "2", "--channels", "4", "--image-size", "8", "--limit-batches", "4"]
    stdout = _run(str(EXAMPLES / "compare_bsn_darts.py"), *tiny, "--out", str(out), cwd=tmp_path)
    report = json.loads((out / "compare.json").read_text())
    strategies = [row["strategy"] for row in report["rows"]]
    assert "BSN" in strategies and "DARTS" in strategies
    bsn = report["rows"][strategies.index("BSN")]
    assert bsn["status"] == "ok" and 0.0 <= bsn["test_acc"] <= 1.0 and bsn["within_budget"] is True
    assert f"BSN: test accuracy {bsn['test_acc']:.4f}" in stdout
    for name in ("compare.md", "compare.csv", "accuracy_vs_cost.png"):
        assert (out / name).is_file()


def test_run_onnx_preprocesses_a_raw_digit_as_the_search_did_and_onnx_runtime_agrees_with_torch(
    tiny_search, tmp_path
):
    from nni_bsn.data import get_datasets

    result = json.loads(_run(str(EXAMPLES / "run_onnx.py"), str(tiny_search), "--index", "3", cwd=tmp_path))
    test = get_datasets("digits", image_size=8)[2]
    image, label = test[3]
    assert result["label"] == int(label)
    assert result["input_shape"] == [1, 1, 8, 8]
    assert 0 <= result["predicted"] < 10
    assert result["max_abs_diff_torch_onnx"] <= 1e-4
    raw, raw_label = _example_module("run_onnx").test_digit(3)
    assert raw_label == int(label)
    recorded = nni_bsn.load_found(tiny_search).preprocess(raw)  # report.json's preprocessing, applied
    np.testing.assert_allclose(recorded[0].numpy(), image.numpy(), atol=1e-5)


def test_run_onnx_takes_an_image_file_and_the_recorded_preprocessing_matches_16x16_digits(
    tiny_search, tmp_path
):
    from PIL import Image

    from nni_bsn.data import get_datasets
    from nni_bsn.preprocess import preprocess

    test, info = (lambda splits: (splits[2], splits[3]))(get_datasets("digits", image_size=16))
    raw, _ = _example_module("run_onnx").test_digit(5)
    np.testing.assert_allclose(preprocess(raw, info.preprocessing)[0].numpy(), test[5][0].numpy(), atol=1e-5)
    png = tmp_path / "digit.png"
    Image.fromarray((raw * 255).astype(np.uint8)).save(png)
    result = json.loads(
        _run(str(EXAMPLES / "run_onnx.py"), str(tiny_search), "--image", str(png), cwd=tmp_path)
    )
    assert result["label"] is None and result["max_abs_diff_torch_onnx"] <= 1e-4
