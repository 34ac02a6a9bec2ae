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
from nni_bsn.config import UsageError

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
    """Run ``main(argv)``: exit 2, one ``nni-bsn: error:`` line containing ``needle``, no traceback."""
    assert main(argv) == 2
    return _one_error_line(capsys.readouterr().err, needle)


# ---------------------------------------------------------------------------------------------- one --out at once

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nni_bsn.outputs import atomic_output_dir
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
    from nni_bsn.outputs import atomic_output_dir

    out = tmp_path / "run"
    first, _ = _start_holder(tmp_path, out)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    with atomic_output_dir(out) as tmp:
        (tmp / "result.txt").write_text("second")
    assert (out / "result.txt").read_text() == "second"


def test_an_out_that_appears_during_a_run_is_never_replaced_without_force(tmp_path):
    from nni_bsn.outputs import atomic_output_dir

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
    from nni_bsn.config import bsn_defaults

    assert bsn_defaults() == BSN.option_defaults()
