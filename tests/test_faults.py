"""What kills processes and fills disks: a search killed with SIGKILL at several points resumes with --resume and
ends complete and within budget (or refuses in one line), its checkpoints survive a corrupt last one, no hidden
temporary folder outlives a finished run, and a full disk is one line with nothing lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nni_bsn.cli import main

REPO = Path(__file__).resolve().parents[1]
# Digits (20 batches an epoch), a 2-layer fabric: a checkpoint every 10 batches and at each epoch's end.
TINY = ["--layers", "2", "--channels", "4", "--image-size", "8", "--no-onnx", "--seed", "3"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _search(tmp_path: Path, *args: str, out: str = "run") -> list[str]:
    return [sys.executable, "-m", "nni_bsn", "search", *TINY, "--out", str(tmp_path / out), *args]


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _kill_when(argv: list[str], cwd: Path, ready, timeout: float = 240) -> None:
    """Start ``argv`` and SIGKILL it as soon as ``ready()`` holds (the process must still be running)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while not ready():
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.time() < deadline, "the search never reached the point to kill it at"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def _checked_result(tmp_path: Path, epochs: int) -> dict:
    """The finished run's report: complete, within budget, every epoch trained once, nothing hidden left."""
    out = tmp_path / "run"
    report = json.loads((out / "report.json").read_text())
    assert {"arch.json", "weights.pt", "architecture.png", "checkpoints"} <= {p.name for p in out.iterdir()}
    assert report["selection"]["within_budget"] and report["selection"]["connected"]
    assert report["trained"] == {"epochs": epochs, "batches": 20 * epochs}
    assert not (tmp_path / "run.partial").exists()
    assert not list(tmp_path.glob(".run.tmp-*")), "a hidden temporary folder outlived the finished run"
    return report


def test_a_search_killed_mid_epoch_resumes_and_counts_every_epoch_once(tmp_path):
    last = tmp_path / "run.partial" / "last.ckpt"
    _kill_when(
        _search(tmp_path, "--epochs", "3"), tmp_path, lambda: (last.parent / "previous.ckpt").is_file()
    )
    assert last.is_file() and not (tmp_path / "run").exists()
    assert list(tmp_path.glob(".run.tmp-*")), (
        "the kill left the job's temporary folder (the next run removes it)"
    )
    done = _run(_search(tmp_path, "--epochs", "3", "--resume"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nni-bsn: resuming from" in done.stderr
    _checked_result(tmp_path, epochs=3)


def test_a_search_killed_before_its_first_checkpoint_is_refused_in_one_line_then_starts_anew(tmp_path):
    config = tmp_path / "run.partial" / "search_config.json"
    _kill_when(_search(tmp_path, "--epochs", "2"), tmp_path, config.is_file)
    refused = _run(_search(tmp_path, "--epochs", "2", "--resume"), tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "nothing to resume" in refused.stderr and "last.ckpt does not exist" in refused.stderr
    done = _run(_search(tmp_path, "--epochs", "1"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    _checked_result(tmp_path, epochs=1)


def test_a_corrupt_last_checkpoint_is_named_and_the_one_before_it_used(tmp_path):
    partial = tmp_path / "run.partial"
    _kill_when(_search(tmp_path, "--epochs", "3"), tmp_path, lambda: (partial / "previous.ckpt").is_file())
    size = (partial / "last.ckpt").stat().st_size
    with open(partial / "last.ckpt", "r+b") as f:  # what a disk that filled up mid-write would have left
        f.truncate(size // 3)
    done = _run(_search(tmp_path, "--epochs", "3", "--resume"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{partial / 'last.ckpt'} cannot be read" in done.stderr
    assert f"resuming from the checkpoint before it, {partial / 'previous.ckpt'}" in done.stderr
    _checked_result(tmp_path, epochs=3)


def test_a_search_killed_after_training_finishes_writing_its_result_on_resume(tmp_path):
    """Killed while selecting, exporting or renaming (its checkpoint has every epoch): the same command with
    --resume trains nothing more and writes the result; the killed run's temporary folder is removed."""
    finished = tmp_path / "first"
    first = _run(_search(tmp_path, "--epochs", "1", out="first"), tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    partial = tmp_path / "run.partial"
    shutil.copytree(finished / "checkpoints", partial)  # the state a kill during export leaves
    config = json.loads((partial / "search_config.json").read_text())
    (partial / "search_config.json").write_text(json.dumps({**config, "out": str(tmp_path / "run")}))
    (tmp_path / ".run.tmp-killed").mkdir()
    (tmp_path / ".run.tmp-killed" / "arch.json").write_text("{")  # half-written by the killed run
    done = _run(_search(tmp_path, "--epochs", "1", "--resume"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "its 1 epoch(s) are trained; selecting and writing the result" in done.stderr
    report = _checked_result(tmp_path, epochs=1)
    assert report["search_timing"]["steps"] == 0  # nothing trained again


def test_a_fresh_search_keeps_an_interrupted_ones_checkpoint_unless_forced(tmp_path, capsys):
    import torch

    partial = tmp_path / "run.partial"
    partial.mkdir()
    torch.save({"epoch": 0}, partial / "last.ckpt")
    argv = ["search", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nni-bsn: error: an interrupted search's checkpoint is in") and "--resume" in err
    assert (partial / "last.ckpt").is_file()


# ------------------------------------------------------------------------------------------------- a full disk


def _disk_full_after(monkeypatch, saves: int) -> None:
    """Make every checkpoint write after the first ``saves`` fail as a full disk does."""
    from nni_bsn.jobs import checkpoints

    real = checkpoints.RotatingCheckpointIO.save_checkpoint
    count = {"n": 0}

    def save(self, checkpoint, path, storage_options=None):
        count["n"] += 1
        if count["n"] > saves:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(self, checkpoint, path, storage_options)

    monkeypatch.setattr(checkpoints.RotatingCheckpointIO, "save_checkpoint", save)


def test_a_full_disk_during_a_search_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text('{"earlier": true}')  # an earlier result, replaced only on success
    _disk_full_after(monkeypatch, saves=1)
    code = main(["search", *TINY, "--epochs", "2", "--force", "--out", str(out)])
    err = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith(("nni-bsn: error", "Trace"))
    ]
    assert code == 1 and len(err) == 1, err
    assert "cannot write" in err[0] and "No space left on device" in err[0] and "last.ckpt" in err[0]
    assert err[0].endswith("run the same command with --resume to continue")
    assert json.loads((out / "report.json").read_text()) == {"earlier": True}
    assert (tmp_path / "run.partial" / "last.ckpt").is_file() and not list(tmp_path.glob(".run.tmp-*"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MB tmpfs (root, and mount allowed here); skipped where mounting is not permitted, the patched
    test above covers the same path there."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()[:200]}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(path: Path, leave: int) -> None:
    """Fill the file system of ``path`` with ``path`` until ``leave`` bytes are free."""
    with open(path, "wb", buffering=0) as f:
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
        f.truncate(max(0, os.fstat(f.fileno()).st_size - leave))


def test_a_really_full_disk_is_one_line_and_keeps_the_earlier_result(tiny_disk):
    out = tiny_disk / "run"
    out.mkdir()
    (out / "report.json").write_text('{"earlier": true}')
    _fill(tiny_disk / "filler", leave=16 * 1024)  # less room than one checkpoint
    argv = [sys.executable, "-m", "nni_bsn", "search", *TINY, "--epochs", "1", "--force", "--out", str(out)]
    result = _run(argv, tiny_disk.parent)
    lines = [line for line in result.stderr.splitlines() if line.startswith(("nni-bsn: error", "Traceback"))]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert "No space left on device" in lines[0] and "Traceback" not in result.stderr
    assert json.loads((out / "report.json").read_text()) == {"earlier": True}
    assert not list(tiny_disk.glob(".run.tmp-*"))


def test_an_output_folder_gets_the_users_umask_and_a_killed_jobs_twin_is_removed(tmp_path):
    from nni_bsn.jobs.outputs import atomic_output_dir

    stale = tmp_path / ".run.tmp-killed"
    stale.mkdir()
    mask = os.umask(0o027)
    try:
        with atomic_output_dir(tmp_path / "run") as work:
            (work / "report.json").write_text("{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o750
    assert not stale.exists() and (tmp_path / "run" / "report.json").is_file()


def test_a_compare_killed_mid_search_continues_that_search_on_resume(tmp_path):
    """A comparison killed with SIGKILL while a row searches: with --resume the row's search continues from its
    checkpoint (the table's notes name it), and nothing of the comparison is left behind once it finishes."""
    argv = [
        sys.executable, "-m", "nni_bsn", "compare", "--strategies", "bsn", "--seeds", "0", "--epochs", "3",
        "--retrain-epochs", "1", "--jobs", "1", "--out", str(tmp_path / "cmp"), *TINY,
    ]  # fmt: skip
    checkpoints = tmp_path / "cmp.partial" / "checkpoints"
    _kill_when(argv, tmp_path, lambda: any(checkpoints.glob("*/previous.ckpt")))
    time.sleep(2)  # the row's process gets SIGTERM when its comparison dies; let it go
    done = _run([*argv, "--resume"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    (row,) = report["rows"]
    assert row["search_resumed_from"] in ("last.ckpt", "previous.ckpt") and row["search_epochs"] == 3
    assert (
        "continued from the checkpoint of an interrupted run" in (tmp_path / "cmp" / "compare.md").read_text()
    )
    assert not (tmp_path / "cmp.partial").exists()


def test_a_compare_resumed_with_other_options_starts_the_killed_search_anew(tmp_path):
    from nni_bsn.jobs.checkpoints import resume_or_start

    folder = tmp_path / "job"
    said: list[str] = []
    assert resume_or_start(folder, {"epochs": 3}, False, said.append) is None
    (folder / "last.ckpt").write_bytes(b"not a checkpoint")
    assert resume_or_start(folder, {"epochs": 4}, True, said.append) is None
    assert "other options" in said[-1] and not (folder / "last.ckpt").exists()
    assert json.loads((folder / "identity.json").read_text()) == {"epochs": 4}
