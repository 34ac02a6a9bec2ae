"""ONNX export of found architectures: parity with torch, dynamic batch, fresh ONNX Runtime session, latency."""

from __future__ import annotations

import random

import numpy as np
import onnxruntime as ort
import pytest
import torch

from evaluators.blocks import GATE_OFF, GATE_ON
from nni_bsn.network.export import (
    ExportError,
    export_onnx,
    load_frozen_model,
    measure_ort_latency,
    save_weights,
)
from search_spaces import ConvolutionalNeuralFabric, ResNetFabric


def _connected_arch(space, seed):
    rng = random.Random(seed)
    while True:
        arch = {label: rng.choice([GATE_ON, GATE_OFF]) for label in space.gate_labels}
        if space.is_connected(arch):
            return space.prune(arch)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1),
        lambda: ResNetFabric(units=1, maps=(4, 8), shortcuts="slr", in_channels=1),
    ],
    ids=["cnf", "resnet-fabric"],
)
def test_onnx_export_matches_torch_within_1e4_and_loads_in_a_fresh_session(factory, tmp_path):
    space = factory()
    model = space.freeze(_connected_arch(space, 3))
    example = torch.randn(6, 1, 8, 8)
    info = export_onnx(model, example, tmp_path / "model.onnx")
    assert info["max_abs_diff"] <= 1e-4 and len(info["batch_sizes_checked"]) == 2
    assert info["exporter"] == "dynamo" and info["fallback_reason"] is None
    assert (info["input_name"], info["output_name"]) == ("input", "logits")
    assert info["input_shape"][0] == "batch" and info["opset"] >= 17
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # weights inline, no temp folder left
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    assert out.shape == (3, 10)
    assert np.abs(out - expected).max() <= 1e-4


def test_an_impossible_tolerance_is_an_export_error_and_leaves_no_file(tmp_path):
    space = ConvolutionalNeuralFabric(layers=2, channels=4, image_size=8, in_channels=1)
    model = space.freeze(_connected_arch(space, 1))
    with pytest.raises(ExportError):
        export_onnx(model, torch.randn(4, 1, 8, 8), tmp_path / "m.onnx", tolerance=-1.0)
    assert not (tmp_path / "m.onnx").exists()


def test_latency_is_a_median_in_milliseconds(tmp_path):
    space = ConvolutionalNeuralFabric(layers=2, channels=4, image_size=8, in_channels=1)
    export_onnx(space.freeze(_connected_arch(space, 2)), torch.randn(2, 1, 8, 8), tmp_path / "m.onnx")
    lat = measure_ort_latency(tmp_path / "m.onnx", (1, 1, 8, 8), warmup=2, runs=5)
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] and lat["mean_ms"] > 0
    assert (lat["threads"], lat["batch"], lat["runs"]) == (1, 1, 5)
    assert lat["onnxruntime"] == ort.__version__ and lat["cpu"]


def test_saved_weights_reload_into_a_fresh_frozen_model(tmp_path):
    space = ConvolutionalNeuralFabric(layers=2, channels=4, image_size=8, in_channels=1)
    arch = _connected_arch(space, 4)
    model = space.freeze(arch)
    save_weights(model, tmp_path / "w.pt")
    fresh = load_frozen_model(
        lambda: ConvolutionalNeuralFabric(layers=2, channels=4, image_size=8, in_channels=1),
        arch,
        tmp_path / "w.pt",
    )
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model.eval()(x), fresh.eval()(x))
    other = dict(arch)
    flip = next(label for label, v in arch.items() if v == GATE_ON)
    other[flip] = GATE_OFF
    with pytest.raises(ValueError, match="do not fit"):
        load_frozen_model(space, other, tmp_path / "w.pt")


def test_dynamo_failure_falls_back_to_the_torchscript_exporter_and_says_so(tmp_path, monkeypatch):
    import nni_bsn.network.export as export

    real = export._export

    def dynamo_breaks(model, example, path, opset, dynamo, external_data):
        if dynamo:
            raise RuntimeError("unsupported op for the test")
        return real(model, example, path, opset, dynamo, external_data)

    monkeypatch.setattr(export, "_export", dynamo_breaks)
    space = ResNetFabric(units=1, maps=(4, 8), in_channels=1)
    info = export_onnx(space.freeze(_connected_arch(space, 5)), torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    assert info["exporter"] == "torchscript" and "unsupported op for the test" in info["fallback_reason"]
    assert info["max_abs_diff"] <= 1e-4 and info["batch_sizes_checked"] == [1, 3]
    assert info["input_shape"][0] == "batch"


def test_latency_refuses_more_threads_than_cores(tmp_path):
    import os

    with pytest.raises(ValueError, match="cores"):
        measure_ort_latency(tmp_path / "absent.onnx", (1, 1, 8, 8), threads=(os.cpu_count() or 1) + 1)
