"""What a new user meets first: progress that fits where it is written, ``-v`` on either side of the command, and
an output folder that says how to feed the found network (report.json, the ONNX metadata, ``load_found``)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nni_bsn.cli import build_parser
from nni_bsn.network.training import EpochLog, StderrProgressBar, progress_options

REPO = Path(__file__).resolve().parents[1]
TINY = ["--layers", "2", "--channels", "4", "--image-size", "8", "--batch-size", "128"]
EPOCHS = 2


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One CLI search on digits, its standard output and error piped (not a terminal), with the ONNX export."""
    tmp = tmp_path_factory.mktemp("search")
    argv = [
        sys.executable,
        "-m",
        "nni_bsn",
        "search",
        *TINY,
        "--epochs",
        str(EPOCHS),
        "--out",
        str(tmp / "out"),
    ]
    proc = subprocess.run(argv, cwd=tmp, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "out", proc


def test_a_search_on_a_pipe_writes_one_line_per_epoch_and_no_carriage_return(searched):
    _, proc = searched
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    epochs = [line for line in proc.stderr.splitlines() if re.match(r"nni-bsn: epoch \d+/\d+: ", line)]
    assert [line.split(":")[1] for line in epochs] == [f" epoch {e}/{EPOCHS}" for e in range(1, EPOCHS + 1)]
    assert all("train_loss" in line and "val_acc" in line and "expected macs" in line for line in epochs)
    assert all(re.search(r"gates > 0\.5: \d+/\d+, \d+ s$", line) for line in epochs)
    # our lines on stderr, the summary on stdout, each whole
    assert all(line.startswith("nni-bsn: ") for line in proc.stderr.splitlines())
    assert proc.stdout.splitlines()[0].startswith("architecture: ")
    assert not any(line.startswith("nni-bsn") for line in proc.stdout.splitlines())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_lightnings_bar_on_a_terminal_and_epoch_lines_elsewhere():
    on_terminal = progress_options("nni-bsn", stream=_Terminal())
    assert on_terminal["enable_progress_bar"] is True
    assert [type(c) for c in on_terminal["callbacks"]] == [StderrProgressBar]
    piped = progress_options("nni-bsn", callbacks=["timer"], stream=io.StringIO())
    assert piped["enable_progress_bar"] is False
    assert piped["callbacks"][0] == "timer" and isinstance(piped["callbacks"][1], EpochLog)


@pytest.mark.parametrize("argv", [["-v", "search"], ["search", "-v"], ["search", "--verbose"]])
def test_verbose_is_accepted_before_and_after_the_command(argv):
    assert build_parser().parse_args(argv).verbose is True


def test_verbose_is_off_unless_given():
    assert build_parser().parse_args(["search"]).verbose is False
    assert build_parser().parse_args(["export", "arch.json"]).verbose is False


def test_report_and_onnx_metadata_record_the_same_preprocessing_as_the_data(searched):
    from nni_bsn.data import get_datasets
    from nni_bsn.jobs.found import ONNX_PREPROCESSING_KEY
    from nni_bsn.network.export import read_metadata

    out, _ = searched
    steps = json.loads((out / "report.json").read_text())["preprocessing"]
    info = get_datasets("digits", image_size=8)[3]
    assert {k: steps[k] for k in info.preprocessing} == info.preprocessing
    assert steps["channels"] == 1 and steps["image_size"] == 8 and steps["native_size"] == 8
    assert steps["classes"] == [str(d) for d in range(10)]
    assert steps["input_shape"] == ["batch", 1, 8, 8] and steps["grey_to_rgb"] is False
    assert json.loads(read_metadata(out / "model.onnx")[ONNX_PREPROCESSING_KEY]) == steps


def test_load_found_gives_the_trained_network_that_onnx_runtime_agrees_with(searched):
    import numpy as np
    import onnxruntime as ort
    import torch

    import nni_bsn
    from nni_bsn.data import get_datasets

    out, _ = searched
    found = nni_bsn.load_found(out)
    assert not found.model.training and found.classes == [str(d) for d in range(10)]
    saved = torch.load(out / "weights.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in found.model.state_dict().items())
    x = torch.stack([get_datasets("digits", image_size=8)[2][i][0] for i in range(4)])
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(found.model(x).numpy(), onnx_logits, atol=1e-4)


def test_the_recorded_preprocessing_turns_raw_cifar_images_into_the_datasets_inputs(cifar_folder):
    import numpy as np

    from nni_bsn.data import get_datasets
    from nni_bsn.preprocess import preprocess

    _, _, test, info = get_datasets("cifar10", cifar_folder(), image_size=32)
    assert info.preprocessing["mean"] == [0.5] * 3 and info.preprocessing["channels"] == 3
    raw = test.base.data[2] / 255.0  # (32, 32, 3) bytes as the files hold them
    np.testing.assert_allclose(preprocess(raw, info.preprocessing)[0].numpy(), test[2][0].numpy(), atol=1e-6)


# ------------------------------------------------------------------------------------------------ imagefolder


def _write_images(root: Path, classes=("ant", "bee", "cat", "dog"), n=12, size=8, rgb=False) -> Path:
    """``root/<class>/<i>.png``: ``n`` noisy images per class, each class its own brightness."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            level = 40 + 180 * c / max(1, len(classes) - 1)
            pixels = rng.normal(level, 15, (size, size, 3) if rgb else (size, size))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_imagefolder_search_from_the_cli_and_load_found_on_its_output(tmp_path):
    from PIL import Image

    import nni_bsn

    data = _write_images(tmp_path / "images")
    out = tmp_path / "found"
    argv = [sys.executable, "-m", "nni_bsn", "search", "--dataset", "imagefolder", "--data-dir", str(data)]
    argv += [*TINY, "--epochs", "1", "--no-onnx", "--out", str(out)]
    proc = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    # 48 images: 15% held out for test, then 15% of the 48 for validation (each rounded up: 7.2 -> 8)
    assert report["dataset"]["sizes"] == {"train": 32, "val": 8, "test": 8}
    steps = report["preprocessing"]
    assert steps["classes"] == ["ant", "bee", "cat", "dog"] and steps["channels"] == 1
    assert steps["mean"] == [0.5] and steps["std"] == [0.5] and steps["image_size"] == 8
    found = nni_bsn.load_found(out)
    x = found.preprocess(Image.open(data / "cat" / "3.png"))
    assert x.shape == (1, 1, 8, 8) and found.model(x).shape == (1, 4)


def test_imagefolder_splits_train_val_test_folders_and_detects_rgb(tmp_path):
    from nni_bsn.data import get_datasets

    for split, n in (("train", 10), ("test", 3)):
        _write_images(tmp_path / split, classes=("a", "b"), n=n, size=12, rgb=True)
    train, val, test, info = get_datasets("imagefolder", tmp_path, image_size=8)
    assert info.sizes == {"train": 17, "val": 3, "test": 6}  # val/ missing: 15% of train/ held out
    assert info.in_channels == 3 and train[0][0].shape == (3, 8, 8) and info.classes == ("a", "b")


@pytest.mark.parametrize(
    "layout,needle",
    [
        ("missing", "not found"),
        ("empty", "class folder"),
        ("one class", "at least 2"),
        ("no images", "no valid file"),
        ("test without train", "no train/"),
    ],
)
def test_bad_imagefolders_exit_2_with_one_line(layout, needle, tmp_path, capsys):
    from nni_bsn.cli import main

    data = tmp_path / "images"
    if layout != "missing":
        data.mkdir()
    if layout == "one class":
        _write_images(data, classes=("only",), n=3)
    if layout == "no images":
        for name in ("a", "b"):
            (data / name).mkdir()
            (data / name / "notes.txt").write_text("not an image")
    if layout == "test without train":
        _write_images(data / "test", classes=("a", "b"), n=2)
    out = tmp_path / "out"
    code = main(["search", "--dataset", "imagefolder", "--data-dir", str(data), *TINY, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("nni-bsn: error: imagefolder: ")
    assert needle in err[0].lower() and not out.exists()


def test_a_resume_with_too_few_epochs_names_the_interrupted_searchs_epochs(tmp_path, capsys):
    import torch

    from nni_bsn.cli import main

    partial = tmp_path / "x.partial"
    partial.mkdir()
    batches = {"is_last_batch": True, "current": {"ready": 20, "completed": 20}}
    torch.save(
        {"epoch": 3, "loops": {"fit_loop": {"epoch_loop.batch_progress": batches}}}, partial / "last.ckpt"
    )
    argv = ["search", "--resume", "--epochs", "2", *TINY, "--out", str(tmp_path / "x")]
    (partial / "search_config.json").write_text(json.dumps({"epochs": 10}))
    assert main(argv) == 2  # 3 epochs trained of the 10 asked
    line = capsys.readouterr().err.strip()
    assert (
        "has already trained 3 epoch(s); resume with --epochs 10 as it was, or any number from 3 up" in line
    )


def test_export_names_a_folder_as_a_folder_for_its_argument_and_for_out(tmp_path, capsys):
    from nni_bsn.cli import main

    found = tmp_path / "found"
    found.mkdir()
    (found / "arch.json").write_text("{}")
    (found / "report.json").write_text(json.dumps({"space": {"name": "cnf"}}))
    assert main(["export", str(found), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not an architecture file (give the arch.json inside it)" in err
    assert "does not exist" not in err
    for force in ([], ["--force"]):  # the same advice with and without --force: a folder is never replaced
        assert main(["export", str(found / "arch.json"), "--out", str(tmp_path), *force]) == 2
        err = capsys.readouterr().err
        assert "it is a folder; give a file name, e.g." in err and "--force" not in err


def test_the_readme_python_snippet_runs_quietly_and_writes_nothing_into_the_cwd(tmp_path):
    readme = (REPO / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "max_epochs=10" in snippet and "channels=16" in snippet
    tiny = snippet.replace("max_epochs=10", "max_epochs=1").replace("channels=16", "channels=4")
    (tmp_path / "snippet.py").write_text(tiny)
    proc = subprocess.run(
        [sys.executable, "snippet.py"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [proc.stderr.splitlines()[0]]  # the epoch's line, nothing else
    assert proc.stderr.startswith("nni-bsn: epoch 1/1: ") and "\r" not in proc.stderr
    assert proc.stdout.startswith("{'arch': ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "runs",
        "snippet.py",
    ]  # no lightning_logs/, checkpoints/
