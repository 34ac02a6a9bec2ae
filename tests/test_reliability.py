"""A search that survives faults: non-finite losses and costs, failing evaluators, kills, determinism."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from nni.nas.evaluator.pytorch import Classification
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace

from evaluators.blocks import GATE_ON
from nni_bsn import BSN
from nni_bsn.network.training import QUIET_CPU
from search_spaces import ConvolutionalNeuralFabric


def _evaluator(loaders, epochs=1, batches=5):
    train, val, _, info = loaders
    return Classification(
        train_dataloaders=train,
        val_dataloaders=val,
        num_classes=10,
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=1,
        **QUIET_CPU,
    )


def _space():
    return ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1)


def _gates(arch):
    return float(sum(v == GATE_ON for v in arch.values()))


@pytest.mark.parametrize("init_keep_prob", ["auto", 0.95])
def test_a_non_finite_cost_skips_the_sample_with_a_warning_and_the_search_goes_on(
    digits_loaders, init_keep_prob
):
    calls = {"n": 0}

    def flaky(arch):
        calls["n"] += 1
        return math.nan if calls["n"] % 3 == 0 else _gates(arch)

    strategy = BSN(cost=flaky, budget=20, num_samples=2, init_keep_prob=init_keep_prob)
    with pytest.warns(RuntimeWarning, match="non-finite cost"):
        strategy(
            RawFormatModelSpace.from_model(_space(), _evaluator(digits_loaders)), SequentialExecutionEngine()
        )
    assert strategy.oneshot_module.skipped_samples > 0
    assert strategy.oneshot_module.trainer.global_step > 0


def test_a_non_finite_loss_skips_the_sample_with_a_warning_and_the_search_goes_on(digits_loaders):
    ev = _evaluator(digits_loaders)
    original = ev.module.training_step
    calls = {"n": 0}

    def nan_sometimes(batch, batch_idx):
        out = original(batch, batch_idx)
        calls["n"] += 1
        return out * float("nan") if calls["n"] % 4 == 0 else out

    ev.module.training_step = nan_sometimes
    strategy = BSN(cost=_gates, budget=20, num_samples=2)
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        strategy(RawFormatModelSpace.from_model(_space(), ev), SequentialExecutionEngine())
    module = strategy.oneshot_module
    assert module.skipped_samples > 0
    assert torch.isfinite(module.distribution.gate_logits).all()
    assert all(torch.isfinite(p).all() for p in module.training_module.parameters())


# A plain callable is not used to calibrate the start (at most 4 probes before training): the same message.
@pytest.mark.parametrize("init_keep_prob, when", [("auto", ": "), (0.95, ": ")])
def test_a_cost_evaluator_that_raises_stops_the_search_with_a_clear_message(
    digits_loaders, init_keep_prob, when
):
    def broken(arch):
        raise ZeroDivisionError("division by zero")

    strategy = BSN(cost=broken, budget=10, num_samples=2, init_keep_prob=init_keep_prob)
    strategy._make_budget = lambda cost, spec, model, mutables: (
        BSN._make_budget(  # skip the bind-time full cost
            strategy, _gates, spec, model, mutables
        ).__class__(evaluator=broken, limit=1.0, name="broken", full=2.0)
    )
    with pytest.raises(
        RuntimeError,
        match=f"cost evaluator 'broken' failed on a sampled architecture{when}.*ZeroDivisionError",
    ):
        strategy(
            RawFormatModelSpace.from_model(_space(), _evaluator(digits_loaders)), SequentialExecutionEngine()
        )


def test_same_seed_same_machine_gives_the_same_exported_architecture():
    import pytorch_lightning as pl

    from nni_bsn.data import get_dataloaders

    archs = []
    for _ in range(2):
        pl.seed_everything(7, verbose=False)
        loaders = get_dataloaders("digits", batch_size=32, image_size=8, seed=7)  # fresh shuffling generator
        strategy = BSN(cost=_gates, budget=8, num_samples=2, arc_learning_rate=0.3)
        strategy(
            RawFormatModelSpace.from_model(_space(), _evaluator(loaders, epochs=2, batches=4)),
            SequentialExecutionEngine(),
        )
        archs.append(
            (next(strategy.list_models()).sample, strategy.distribution.gate_logits.detach().clone())
        )
    assert archs[0][0] == archs[1][0]
    assert torch.equal(archs[0][1], archs[1][1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nni_bsn.cli", *args]


def test_a_killed_search_leaves_a_checkpoint_and_resumes_to_completion(tmp_path):
    out = tmp_path / "run"
    common = [
        "search",
        "--layers",
        "2",
        "--channels",
        "4",
        "--image-size",
        "8",
        "--batch-size",
        "64",
        "--no-onnx",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _cli(*common, "--epochs", "40"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if (tmp_path / "run.partial" / "last.ckpt").is_file():
                break
            assert proc.poll() is None, "the search ended before it could be interrupted"
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint appeared")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code != 0
    assert not out.exists(), "an interrupted search must not leave a half-written output folder"
    assert (tmp_path / "run.partial" / "last.ckpt").is_file()
    assert not list(tmp_path.glob(".run.tmp-*"))
    saved = torch.load(tmp_path / "run.partial" / "last.ckpt", map_location="cpu", weights_only=False)
    trained_before = next(v["seconds"] for k, v in saved["callbacks"].items() if "StepTimer" in k)
    assert trained_before > 0  # the interrupted run's training time, for the resumed report's total

    done = subprocess.run(
        _cli(*common, "--epochs", "1", "--resume"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:  # the checkpoint is past epoch 1: a clear error, and the checkpoint is kept
        assert done.returncode == 2 and "resume with --epochs" in done.stderr
        assert (tmp_path / "run.partial" / "last.ckpt").is_file() and not out.exists()
        done = subprocess.run(
            _cli(*common, "--epochs", "40", "--resume"),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["selection"]["connected"]
    assert report["search_seconds"] > trained_before  # the total, not only the resumed part
    assert 0.05 <= report["start_keep_prob"] <= 0.95  # init_keep_prob="auto" (default) says where it started
    assert isinstance(report["skipped_samples"], int)  # BSN's count of skipped non-finite samples
    assert {"arch.json", "report.json", "weights.pt", "architecture.png"} <= {p.name for p in out.iterdir()}
    assert not (tmp_path / "run.partial").exists()


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    from nni_bsn.cli import main

    assert (
        main(
            [
                "search",
                "--resume",
                "--layers",
                "2",
                "--channels",
                "4",
                "--image-size",
                "8",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "nothing to resume" in capsys.readouterr().err
    assert Path(tmp_path / "x").exists() is False


def test_resume_counts_a_checkpoint_saved_at_an_epochs_end_as_that_epoch_trained(tmp_path, capsys):
    from nni_bsn.cli import main
    from nni_bsn.jobs.search import _epochs_trained

    def state(last_batch: bool) -> dict:
        return {
            "epoch": 0,
            "loops": {"fit_loop": {"epoch_loop.batch_progress": {"is_last_batch": last_batch}}},
        }

    assert (_epochs_trained(state(False)), _epochs_trained(state(True))) == (0, 1)
    at_end = state(True)  # written when training ended: its last batch and epoch are counted already
    at_end["epoch"] = 1
    at_end["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"] = {"ready": 20, "completed": 20}
    assert _epochs_trained(at_end) == 1
    (tmp_path / "x.partial").mkdir()
    after_two = state(True)
    after_two["epoch"] = 1
    torch.save(after_two, tmp_path / "x.partial" / "last.ckpt")
    argv = ["search", "--resume", "--epochs", "1", "--layers", "2", "--channels", "4", "--image-size", "8"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2  # two epochs trained: fewer cannot be resumed
    assert "resume with --epochs 2 or more" in capsys.readouterr().err
