"""Bad input found by trying the tool as a new user: each is one line and exit code 2 (CLI) or one clear
exception naming the cost or argument (Python API), and no result is ever lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nni_bsn.cli import main
from nni_bsn.jobs.config import UsageError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--layers", "2", "--channels", "4", "--image-size", "8", "--epochs", "1", "--no-onnx"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nni_bsn.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_error_line(stderr: str, needle: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nni-bsn: error:") and needle in lines[0], lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def _refused(argv: list[str], needle: str, capsys) -> str:
    """Run ``main(argv)``: exit 2 (returned, or argparse's SystemExit), one ``nni-bsn: error:`` line containing
    ``needle``, no traceback."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    return _one_error_line(capsys.readouterr().err, needle)


# ---------------------------------------------------------------------------------------------- one --out at once

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nni_bsn.jobs.outputs import atomic_output_dir
    out, ready, go = sys.argv[1:]
    with atomic_output_dir(out) as tmp:
        (tmp / "result.txt").write_text("first")
        Path(ready).touch()
        while not Path(go).exists():
            time.sleep(0.05)
    """
)


def _start_holder(tmp_path: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out), str(ready), str(go)], cwd=tmp_path, env=_env()
    )
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, "the first run did not start"
        time.sleep(0.05)
    return proc, go


def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs_and_the_first_result_is_kept(tmp_path):
    out = tmp_path / "run"
    first, go = _start_holder(tmp_path, out)
    try:
        second = _cli("search", *TINY, "--seed", "1", "--out", str(out), cwd=tmp_path)
        assert second.returncode == 2
        _one_error_line(second.stderr, "another nni-bsn run is writing")
        go.touch()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert (out / "result.txt").read_text() == "first"
    assert not (tmp_path / "run.lock").exists()


def test_a_killed_run_does_not_leave_its_lock_stuck(tmp_path):
    from nni_bsn.jobs.outputs import atomic_output_dir

    out = tmp_path / "run"
    first, _ = _start_holder(tmp_path, out)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    with atomic_output_dir(out) as tmp:
        (tmp / "result.txt").write_text("second")
    assert (out / "result.txt").read_text() == "second"


def test_an_out_that_appears_during_a_run_is_never_replaced_without_force(tmp_path):
    from nni_bsn.jobs.outputs import atomic_output_dir

    out = tmp_path / "run"
    with pytest.raises(UsageError, match="appeared while this run") as info:
        with atomic_output_dir(out) as tmp:
            (tmp / "result.txt").write_text("mine")
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    assert (out / "theirs.txt").read_text() == "theirs"
    assert (tmp / "result.txt").read_text() == "mine" and str(tmp) in str(info.value)


# ------------------------------------------------------------------------------------------------- fast refusal


def test_a_bad_budget_is_refused_in_one_line_within_2_s(tmp_path):
    started = time.perf_counter()
    result = _cli("search", "--budget", "abc", "--out", str(tmp_path / "out"), cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert result.returncode == 2
    _one_error_line(result.stderr, "budget")
    assert not (tmp_path / "out").exists()
    assert seconds < 2 or "torch" not in _heavy_modules_after_checking_arguments(), seconds


def _heavy_modules_after_checking_arguments() -> str:
    code = textwrap.dedent(
        """
        import sys
        from nni_bsn.cli import build_parser, compare_config_from_args, config_from_args
        config_from_args(build_parser().parse_args(["search", "--budget", "25%", "--cost", "latency"]))
        config_from_args(build_parser().parse_args(["sweep", "--cost", "distributed:4"]))
        compare_config_from_args(build_parser().parse_args(["compare", "--strategies", "bsn,bsn@25%"]))
        print(" ".join(m for m in ("torch", "nni", "pytorch_lightning", "onnxruntime") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_parsing_and_checking_the_arguments_imports_neither_torch_nor_nni():
    assert _heavy_modules_after_checking_arguments() == ""


def test_the_configs_read_bsns_defaults_without_importing_it_and_they_are_bsns_own():
    from nni_bsn import BSN
    from nni_bsn.jobs.config import bsn_defaults

    assert bsn_defaults() == BSN.option_defaults()


# ----------------------------------------------------------------------------- search, sweep, compare: one line


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["search", "--space", "resnet-fabric", "--shortcuts", "xyz"], "--shortcuts"),
        (["compare", "--space", "resnet-fabric", "--shortcuts", "xyz"], "--shortcuts"),
        (["search", "--space", "resnet-fabric", "--maps", ","], "--maps"),
        (["sweep", "--budgets", "50%,50%"], "twice"),
        (["search", "--cost", "distributed:"], "distributed:N"),
        (["search", "--cost", "distributed"], "distributed:N"),
        (["compare", "--strategy-timeout", "-5"], "--strategy-timeout"),
        (["compare", "--strategy-timeout", "nan"], "--strategy-timeout"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_anything_runs(argv, needle, capsys, tmp_path):
    out = tmp_path / "out"
    _refused([*argv, "--out", str(out)], needle, capsys)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_accelerator_gpu_without_a_gpu_is_refused_in_one_line(capsys, tmp_path):
    out = tmp_path / "out"
    _refused(["search", "--accelerator", "gpu", *TINY, "--out", str(out)], "no CUDA GPU", capsys)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_devices_are_checked_against_the_gpus_and_cores_and_cpu_ddp_is_announced():
    from nni_bsn.jobs.search import check_devices

    with pytest.raises(UsageError, match="no CUDA GPU"):
        check_devices("gpu", 1, 0, 16)
    with pytest.raises(UsageError, match="2 CUDA GPU"):
        check_devices("auto", 4, 2, 16)
    with pytest.raises(UsageError, match="--devices 3 on CPU.*3 DDP processes on 2 core"):
        check_devices("cpu", 3, 0, 2)
    assert "3 DDP processes" in check_devices("cpu", 3, 0, 16)
    assert check_devices("cpu", 1, 0, 2) is None and check_devices("gpu", 2, 2, 2) is None


def test_resume_after_changing_channels_names_the_option_and_keeps_the_checkpoint(capsys, tmp_path):
    import torch

    from nni_bsn.jobs.config import SearchConfig
    from nni_bsn.jobs.outputs import partial_dir, write_json

    out = tmp_path / "run"
    partial = partial_dir(out)
    partial.mkdir()
    torch.save({"epoch": 0}, partial / "last.ckpt")
    write_json(partial / "search_config.json", SearchConfig(channels=4, out=str(out)).as_dict())
    line = _refused(
        ["search", "--resume", "--channels", "8", "--epochs", "2", "--out", str(out)], "--channels", capsys
    )
    assert "4" in line and "8" in line
    assert (
        not out.exists() and (partial / "last.ckpt").is_file() and (partial / "search_config.json").is_file()
    )


def test_an_unwritable_search_out_is_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    _refused(["search", "--out", str(tmp_path / "file" / "out")], "cannot write", capsys)


# ------------------------------------------------------------------------------------------------------ export


@pytest.fixture
def found(tmp_path) -> Path:
    """What ``nni-bsn search`` leaves for export: arch.json, report.json and weights.pt of a tiny CNF."""
    import json

    from evaluators.blocks import GATE_ON
    from nni_bsn.jobs.builders import rebuild_space
    from nni_bsn.network.export import load_frozen_model, save_weights

    spec = {"name": "cnf", "layers": 2, "channels": 2, "image_size": 8, "in_channels": 1, "num_classes": 10}
    folder = tmp_path / "found"
    folder.mkdir()
    space = rebuild_space(spec)
    arch = {label: GATE_ON for label in space.simplify()}  # every CNF choice is a gate
    (folder / "arch.json").write_text(json.dumps(arch))
    report = {"space": spec, "dataset": {"image_size": 8}, "config": {"dataset": "digits"}}
    (folder / "report.json").write_text(json.dumps(report))
    save_weights(load_frozen_model(lambda: rebuild_space(spec), arch), folder / "weights.pt")
    return folder / "arch.json"


def _export_refused(found: Path, capsys, needle: str, *extra: str) -> None:
    """Export refuses in one line naming ``needle``, writes no ONNX file and leaves the search's files as they were."""
    out = found.parent / "model.onnx"
    before = {p.name: p.read_bytes() for p in found.parent.iterdir()}
    _refused(["export", str(found), "--out", str(out), *extra], needle, capsys)
    assert not out.exists()
    assert {p.name: p.read_bytes() for p in found.parent.iterdir()} == before


def test_export_with_a_truncated_weights_file_names_the_file(found, capsys):
    weights = found.with_name("weights.pt")
    weights.write_bytes(weights.read_bytes()[:100])
    _export_refused(found, capsys, str(weights))


def test_export_with_a_corrupt_report_names_it(found, capsys):
    found.with_name("report.json").write_text('{"space": {"name": "cnf", ')
    _export_refused(found, capsys, "report.json")


def test_export_of_a_value_that_is_not_among_the_choices_values_names_the_choice(found, capsys):
    import json

    arch = json.loads(found.read_text())
    label = next(iter(arch))
    arch[label] = "no-such-value"
    found.write_text(json.dumps(arch))
    _export_refused(found, capsys, label)


def test_export_without_weights_is_refused_unless_random_weights_are_asked_for(found, capsys):
    found.with_name("weights.pt").unlink()
    _export_refused(found, capsys, "--random-weights")


@pytest.mark.parametrize("tolerance", ["nan", "-1", "0", "inf"])
def test_export_refuses_a_tolerance_that_is_not_a_positive_number(tolerance, found, capsys):
    _export_refused(found, capsys, "--tolerance", "--tolerance", tolerance)


def test_export_to_an_unwritable_out_is_one_line(found, capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "model.onnx"
    _refused(["export", str(found), "--out", str(out)], "cannot write the ONNX file", capsys)


# ------------------------------------------------------------------------------------------- Python API: costs


def _tiny_space():
    from search_spaces import ConvolutionalNeuralFabric

    return ConvolutionalNeuralFabric(layers=2, channels=4, image_size=8, in_channels=1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, -1.0])
@pytest.mark.parametrize("budget", ["50%", 3])
def test_a_cost_returning_a_bad_value_is_one_error_at_set_up_naming_the_cost(value, budget):
    from nni_bsn import BSN

    def my_cost(arch):
        return value

    strategy = BSN(cost=my_cost, budget=budget)
    with pytest.raises(ValueError, match=r"cost 'my_cost' returned .* finite number >= 0"):
        strategy.mutate_model(_tiny_space())


def test_a_cost_that_raises_at_set_up_is_named():
    from nni_bsn import BSN
    from nni_bsn.strategy.budget import CostEvaluationError

    def broken_cost(arch):
        raise ZeroDivisionError("division by zero")

    with pytest.raises(CostEvaluationError, match=r"cost 'broken_cost' failed on .*ZeroDivisionError"):
        BSN(cost=broken_cost, budget=3).mutate_model(_tiny_space())


def test_an_evaluator_that_raises_while_binding_is_named():
    from evaluators import ParamsCost
    from nni_bsn import BSN
    from nni_bsn.strategy.budget import CostEvaluationError

    class Failing(ParamsCost):
        name = "failing"

        def _bind(self, space):
            raise KeyError("no such module")

    with pytest.raises(CostEvaluationError, match=r"cost 'failing' failed while binding.*KeyError"):
        BSN(cost=Failing(), budget="50%").mutate_model(_tiny_space())


def test_an_unbound_macs_cost_says_to_bind_it():
    from evaluators import MacsCost

    with pytest.raises(RuntimeError, match=r"MacsCost is not bound.*bind\(space\)"):
        MacsCost(input_shape=(1, 1, 8, 8))({})


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (1, 1, 8)])
def test_an_input_shape_that_does_not_fit_the_space_is_one_error_naming_input_shape(shape):
    from evaluators import MacsCost
    from nni_bsn import BSN

    with pytest.raises(ValueError, match=r"input_shape=.* does not fit this space") as info:
        MacsCost(input_shape=shape).bind(_tiny_space())
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"BSN: cost 'macs': MacsCost: input_shape="):
        BSN(cost=MacsCost(input_shape=shape), budget="50%").mutate_model(_tiny_space())


# ------------------------------------------------------------------------------ useless results said plainly


def test_a_budget_that_does_not_bind_is_said_and_distributed_4_is_reported_for_4_devices(tmp_path):
    import json

    out = tmp_path / "run"
    argv = ["search", *TINY, "--cost", "distributed:4", "--budget", "150%", "--out", str(out)]
    result = _cli(*argv, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "budget does not bind" in result.stdout and "makespan over 4 devices" in result.stdout
    assert "INFO" not in result.stderr  # NNI's and Lightning's logs stay quiet once they are imported
    report = json.loads((out / "report.json").read_text())
    assert any("does not bind" in w for w in report["warnings"])
    assert report["kept_gates"]["of"] > 0 and report["costs"]["distributed"]["devices"] == 4
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) == ["last.ckpt"]
    assert report["search_seconds"] > 0


def test_chance_accuracy_and_no_gate_kept_are_warned_and_a_binding_budget_is_not():
    from nni_bsn.jobs.findings import search_warnings
    from nni_bsn.strategy.budget import Budget

    binding = Budget(evaluator=len, limit=5.0, name="macs", full=10.0)
    assert search_warnings([binding], {"test": 0.9}, 10, kept=3, gates=14) == []
    warnings = search_warnings([binding], {"test": 0.11}, 10, kept=0, gates=14)
    assert any("chance level" in w for w in warnings) and any("0 of 14 gates" in w for w in warnings)
    loose = Budget(evaluator=len, limit=15.0, name="params", full=10.0)
    assert "params budget does not bind" in search_warnings([loose], {"test": 0.9}, 10, 3, 14)[0]


def test_ctrl_c_prints_one_clear_line_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    argv = ["search", *TINY, "--epochs", "30", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nni_bsn.cli", *argv],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job ignores SIGINT
    )
    try:
        deadline = time.time() + 240
        while not (tmp_path / "run.partial" / "last.ckpt").is_file():
            assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.3)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    lines = [  # the epochs' progress lines aside
        line
        for line in err.replace("\r", "\n").splitlines()
        if line.startswith(("nni-bsn", "ERROR", "WARN")) and not line.startswith("nni-bsn: epoch ")
    ]
    assert lines[1:] == [lines[-1]] and lines[-1].startswith("nni-bsn: interrupted: checkpoint kept"), lines
    assert "Traceback" not in err and not out.exists() and (tmp_path / "run.partial" / "last.ckpt").is_file()


# --------------------------------------------------------------------------------------------- sweep --resume


def test_an_interrupted_sweep_resumes_reusing_its_finished_budgets_and_checkpoints(
    tmp_path, monkeypatch, capsys
):
    import json

    from nni_bsn.jobs import search
    from nni_bsn.jobs.outputs import partial_dir

    calls = []

    def fake_search(cfg, workdir, progress=print):
        calls.append((cfg.budget, cfg.resume))
        partial_dir(cfg.out).mkdir(exist_ok=True)
        (partial_dir(cfg.out) / "last.ckpt").write_text(cfg.budget)
        if cfg.budget == "25%" and len(calls) == 2:
            raise KeyboardInterrupt
        report = {
            "costs": {"macs": 1.0, "params": 2.0},
            "accuracy": {"val": 0.5, "test": 0.5},
            "selection": {"within_budget": True},
            "search_seconds": 1.0,
        }
        (workdir / "report.json").write_text(json.dumps(report))
        return report

    monkeypatch.setattr(search, "run_search", fake_search)
    out = tmp_path / "sweep"
    argv = ["sweep", "--budgets", "50%,25%", "--out", str(out)]
    assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err and not out.exists()
    kept = tmp_path / "sweep.partial"
    assert (kept / "budget_50pct" / "report.json").is_file()
    assert (kept / "budget_25pct.partial" / "last.ckpt").read_text() == "25%"

    assert main([*argv, "--resume"]) == 0
    assert calls == [("50%", False), ("25%", False), ("25%", True)]  # 50% reused, 25% resumed
    table = json.loads((out / "sweep.json").read_text())
    assert [(r["budget"], r["resumed"]) for r in table] == [("50%", "kept"), ("25%", "from its checkpoint")]
    assert "| kept |" in (out / "sweep.md").read_text()
    assert not kept.exists()


def test_sweep_resume_without_an_interrupted_sweep_is_one_line(capsys, tmp_path):
    _refused(["sweep", "--resume", "--out", str(tmp_path / "sweep")], "nothing to resume", capsys)


@pytest.mark.parametrize("out", [".", "", "..", "/"])
def test_an_out_that_names_no_folder_of_its_own_is_one_line_and_exit_2(out, capsys):
    assert main(["search", "--out", out, "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names no new folder" in err[0]


def test_an_out_that_is_a_file_is_refused_before_the_search_even_with_force(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["search", "--out", str(afile), "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]
    assert afile.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["afile"]


@pytest.mark.parametrize("budgets", ["10%,,50%", "25%,", ",25%"])
def test_sweep_budgets_with_an_empty_item_are_one_line_and_exit_2(budgets, tmp_path, capsys):
    assert main(["sweep", "--budgets", budgets, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has an empty item" in err[0]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", ["-5%", "-0.5"])
def test_a_negative_budget_names_the_budget_not_argparse(value, tmp_path, capsys):
    assert main(["search", "--budget", value, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget must be" in err[0] and "positive" in err[0] and value in err[0]
