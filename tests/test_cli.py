"""The command line: bad input gives one line and exit code 2, and never a half-written output folder."""

from __future__ import annotations

import json

import pytest

from nni_bsn.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


@pytest.mark.parametrize("argv,needle", [
    (["search", "--space", "vgg"], "unknown space"),
    (["search", "--cost", "energy"], "unknown cost"),
    (["search", "--cost", "distributed:zero"], "distributed:N"),
    (["search", "--budget", "0"], "budget"),
    (["search", "--budget=-10%"], "budget"),
    (["search", "--budget", "lots"], "budget"),
    (["search", "--dataset", "imagenet"], "unknown dataset"),
    (["sweep", "--budgets", ","], "budgets"),
])
def test_bad_search_options_exit_2_with_one_line(argv, needle, capsys, tmp_path):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert line.startswith("nni-bsn: error:") and needle in line
    assert not out.exists()


def test_missing_cifar_folder_names_the_expected_files(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["search", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "cifar-10-batches-py" in line and "data_batch_1" in line
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_budget_below_the_cheapest_architecture_is_refused(capsys, tmp_path):
    out = tmp_path / "out"
    code = main(["search", "--budget", "10", "--layers", "2", "--channels", "2", "--image-size", "8",
                 "--epochs", "1", "--out", str(out)])
    assert code == 2
    assert "cheapest" in _error_line(capsys)
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_an_existing_output_folder_needs_force(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["search", "--out", str(out)]) == 2
    assert "--force" in _error_line(capsys)
    assert (out / "keep.txt").read_text() == "mine"


def test_an_output_folder_that_cannot_be_written_is_refused(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["search", "--out", str(blocker / "out")]) == 2
    assert "cannot write" in _error_line(capsys)


def test_export_of_a_missing_or_foreign_architecture_exits_2(capsys, tmp_path):
    assert main(["export", str(tmp_path / "arch.json"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "does not exist" in _error_line(capsys)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"x": "on"}))
    assert main(["export", str(arch), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "report.json" in _error_line(capsys)
    (tmp_path / "report.json").write_text(json.dumps({
        "space": {"name": "cnf", "layers": 2, "channels": 2, "image_size": 8, "in_channels": 1, "num_classes": 10},
        "dataset": {"image_size": 8}, "config": {"dataset": "digits"}}))
    assert main(["export", str(arch), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "labels" in _error_line(capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--epochs", "zero"])
    assert e.value.code == 2
    assert "positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1.5", "0", "half"])
def test_a_bad_init_keep_prob_exits_2_naming_it(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--init-keep-prob", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--init-keep-prob" in err and "'auto' or a probability strictly between 0 and 1" in err
