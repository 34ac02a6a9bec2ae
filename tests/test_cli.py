"""The command line: bad input gives one line and exit code 2, and never a half-written output folder."""

from __future__ import annotations

import json

import pytest

from evaluators.blocks import GATE_ON
from nni_bsn.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["search", "--space", "vgg"], "unknown space"),
        (["search", "--cost", "energy"], "unknown cost"),
        (["search", "--cost", "distributed:zero"], "distributed:N"),
        (["search", "--budget", "0"], "budget"),
        (["search", "--budget=-10%"], "budget"),
        (["search", "--budget", "lots"], "budget"),
        (["search", "--dataset", "imagenet"], "unknown dataset"),
        (["sweep", "--budgets", ","], "budgets"),
    ],
)
def test_bad_search_options_exit_2_with_one_line(argv, needle, capsys, tmp_path):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert line.startswith("nni-bsn: error:") and needle in line
    assert not out.exists()


def test_missing_cifar_folder_names_the_expected_files(capsys, tmp_path):
    out = tmp_path / "out"
    assert (
        main(["search", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)])
        == 2
    )
    line = _error_line(capsys)
    assert "cifar-10-batches-py" in line and "data_batch_1" in line
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_budget_below_the_cheapest_architecture_is_refused(capsys, tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            "search",
            "--budget",
            "10",
            "--layers",
            "2",
            "--channels",
            "2",
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--out",
            str(out),
        ]
    )
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
    arch.write_text(json.dumps({"x": GATE_ON}))
    assert main(["export", str(arch), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "report.json" in _error_line(capsys)
    (tmp_path / "report.json").write_text(
        json.dumps(
            {
                "space": {
                    "name": "cnf",
                    "layers": 2,
                    "channels": 2,
                    "image_size": 8,
                    "in_channels": 1,
                    "num_classes": 10,
                },
                "dataset": {"image_size": 8},
                "config": {"dataset": "digits"},
            }
        )
    )
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


def _bsn_signature_defaults() -> dict:
    import inspect

    from nni_bsn import BSN

    return {
        p.name: p.default
        for p in inspect.signature(BSN.__init__).parameters.values()
        if p.default is not p.empty
    }


def _subparser_help(command: str) -> str:
    from nni_bsn.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return " ".join(sub.choices[command].format_help().split())


@pytest.mark.parametrize("command", ["search", "sweep", "compare"])
def test_the_cli_and_config_defaults_of_every_bsn_option_are_bsns_own(command):
    from dataclasses import fields

    from nni_bsn.cli import build_parser, compare_config_from_args, config_from_args
    from nni_bsn.jobs.config import CompareConfig, SearchConfig

    bsn = _bsn_signature_defaults()
    args = build_parser().parse_args([command])
    parsed = compare_config_from_args(args) if command == "compare" else config_from_args(args)
    config = CompareConfig() if command == "compare" else SearchConfig()
    shared = [f.name for f in fields(config) if f.name in bsn]
    assert {"lam", "num_samples", "arc_learning_rate", "init_keep_prob"} <= set(shared)
    text = _subparser_help(command)
    for name in shared:
        assert getattr(parsed, name) == bsn[name], name
        assert getattr(config, name) == bsn[name], name
        assert parsed.bsn_options()[name] == bsn[name], name
    for name in ("lam", "num_samples", "arc_learning_rate"):  # the help shows the real default
        flag = "--" + name.replace("_", "-")
        assert f"{flag} {name.upper()} " in text
        assert f"(default: {bsn[name]})" in text.split(f"{flag} {name.upper()} ", 1)[1].split(" --", 1)[0]


def test_every_option_of_the_table_reaches_its_config_and_the_command_line_parses_back():
    from nni_bsn.cli import build_parser, compare_config_from_args
    from nni_bsn.compare.report import equivalent_command
    from nni_bsn.jobs.config import CompareConfig

    cfg = CompareConfig(
        strategies=("bsn", "random"),
        space="resnet-fabric",
        epochs=2,
        retrain_epochs=5,
        maps=(4, 8),
        lam=3.0,
        num_samples=2,
        arc_learning_rate=0.2,
        init_keep_prob=0.9,
        limit_train_batches=3,
        threads=2,
        strategy_timeout=9.5,
        onnx=False,
        force=True,
        out="x",
    )
    back = compare_config_from_args(build_parser().parse_args(equivalent_command(cfg).split()[1:]))
    assert back == cfg


def test_the_space_table_names_every_space_the_cli_offers():
    from nni_bsn.jobs.builders import SPACE_KINDS
    from nni_bsn.jobs.config import SPACES, STANDALONE_FIXED

    searchable = tuple(k for k in SPACE_KINDS if k not in STANDALONE_FIXED)  # two-conv: compare's fixed row
    assert searchable == SPACES


def test_the_cli_hides_nni_and_lightning_warnings_but_keeps_bsns_own(monkeypatch):
    import warnings

    from nni_bsn import quiet

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        quiet.quiet_library_warnings()
        noise = [
            ("Using ModelCheckpoint with manual optimization", UserWarning, "pytorch_lightning.callbacks"),
            ("unclosed file experiment.log", ResourceWarning, "nni.experiment.experiment"),
        ]
        # BSN warns from training_step with stacklevel=2: the warning is attributed to Lightning's caller.
        ours = [
            (
                "BSN: skipped a sampled architecture with a non-finite cost",
                RuntimeWarning,
                "pytorch_lightning.strategies.strategy",
            ),
            ("a warning of nni-bsn's own", UserWarning, "nni_bsn.jobs.search"),
        ]
        for i, (message, category, module) in enumerate(noise + ours):
            warnings.warn_explicit(message, category, f"{module}.py", i + 1, module=module)
    assert [str(w.message) for w in caught] == [message for message, _, _ in ours]

    called = []
    monkeypatch.setattr(quiet, "quiet_library_warnings", lambda: called.append(True))
    with warnings.catch_warnings():
        assert main(["search", "--space", "vgg"]) == 2
    assert called


def test_version_prints_the_package_version_and_exits_0(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"nni-bsn {importlib.metadata.version('nni-bsn')}"
