"""``nni-bsn compare``: every strategy on the same work, one row each, every output written, bad input refused."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch

from evaluators.blocks import GATE_OFF, GATE_ON
from nni_bsn.cli import build_parser, main
from nni_bsn.compare.report import equivalent_command, markdown_table
from nni_bsn.compare.run import _Job, _run_in_process
from nni_bsn.compat import fabric_flops_profiler
from nni_bsn.jobs.config import STRATEGIES, CompareConfig, UsageError, parse_strategies

TINY = [
    "--layers",
    "2",
    "--channels",
    "4",
    "--image-size",
    "8",
    "--epochs",
    "1",
    "--limit-train-batches",
    "4",
    "--limit-val-batches",
    "2",
]
OUTPUTS = ("compare.md", "compare.csv", "compare.json", "accuracy_vs_cost.png")


def _assert_numeric_row(row: dict) -> None:
    assert row["status"] == "ok", row
    for key in ("val_acc", "test_acc", "inherited_val_acc", "inherited_test_acc"):
        assert 0.0 <= row[key] <= 1.0
    for key in (
        "macs",
        "params",
        "latency_ms",
        "distributed_ms",
        "search_seconds",
        "step_ms",
        "search_peak_rss_mb",
        "retrain_seconds",
        "budget_cost",
    ):
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] >= 0, (
            key,
            row[key],
        )
    assert row["macs"] > 0 and row["params"] > 0 and row["latency_ms"] > 0
    assert isinstance(row["within_budget"], bool)
    assert 0 <= row["gates_alive"] <= row["gates_on"] <= row["gates_total"] == len(row["arch"])


def test_compare_runs_bsn_random_darts_and_enas_and_writes_every_output_with_a_row_each(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--strategies", "bsn,random,darts,enas", *TINY, "--out", str(out)])
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "accuracy_vs_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "compare.json").read_text())
    labels = ["BSN", "RandomOneShot", "DARTS", "DARTS (DARTS derivation)", "ENAS"]
    assert [r["strategy"] for r in report["rows"]] == labels
    # A strategy whose export does not connect input to classifier is a failed row saying so, never a chance point.
    failed = [r for r in report["rows"] if r["status"] != "ok"]
    assert rc == (1 if failed else 0) and report["failed"] == [r["name"] for r in failed]
    assert all("exported a disconnected network" in r["status"] and r["connected"] is False for r in failed)
    assert {"bsn", "darts:derived", "enas"}.isdisjoint(report["failed"])  # connected by construction
    for row in report["rows"]:
        if row["status"] == "ok":
            _assert_numeric_row(row)
    assert [e["name"] for e in report["summary"]] == ["bsn", "random", "darts", "darts:derived", "enas"]
    bsn = report["rows"][0]
    assert bsn["within_budget"] and bsn["bsn_selection"]["within_budget"]
    assert bsn["budget_cost"] <= report["budget"]["limit"]
    # Every strategy searched the same space from the same seed for the same number of steps.
    assert {r["search_timing"]["steps"] for r in report["rows"][:4]} == {4}
    assert {r["torch_threads"] for r in report["rows"]} == {
        1
    }  # the default, for timings robust to other load
    assert report["rows"][4]["enas"]["trajectories"] > 0  # ENAS's controller got rewards (TaggedENAS works)
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["strategy"] for r in rows] == labels
    assert all(float(r["test_acc"]) >= 0 for r in rows if r["status"] == "ok")
    md = (out / "compare.md").read_text()
    assert "| BSN |" in md and "| DARTS |" in md and "nni-bsn compare" in md
    assert report["machine"]["cores"] and report["versions"]["nni"] == "3.0"
    printed = capsys.readouterr()
    assert "| RandomOneShot |" in printed.out
    assert "[4/4] seed 0 seed0-enas: enas: val" in printed.err
    assert not list(tmp_path.glob(".cmp.tmp-*"))  # the atomic output folder was moved into place


@pytest.mark.parametrize(
    "names, message",
    [
        ("bsn,nope", "unknown strategy 'nope'"),
        ("", "--strategies is empty"),
        (" , ", "--strategies is empty"),
    ],
)
def test_bad_strategy_names_exit_2_with_one_line_and_no_output(names, message, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--strategies", names, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("nni-bsn: error:")
    assert not out.exists()


def test_compare_refuses_a_space_it_cannot_compare_on_and_an_existing_folder(tmp_path, capsys):
    assert main(["compare", "--space", "mobilenetv3", "--out", str(tmp_path / "a")]) == 2
    assert "cnf, resnet-fabric, nasbench201" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    assert main(["compare", "--strategies", "bsn", "--out", str(tmp_path / "b")]) == 2
    assert "--force" in capsys.readouterr().err


def test_parse_strategies_keeps_order_drops_duplicates_and_accepts_every_documented_name():
    assert parse_strategies("BSN, darts ,bsn") == ("bsn", "darts")
    assert parse_strategies(",".join(STRATEGIES)) == STRATEGIES
    with pytest.raises(UsageError, match="unknown strategy 'enas2'"):
        parse_strategies(["bsn", "enas2"])


def test_equivalent_command_parses_back_to_the_same_config():
    cfg = CompareConfig(
        strategies=("bsn", "darts+penalty"),
        epochs=2,
        retrain_epochs=5,
        channels=4,
        budget="30%",
        limit_train_batches=3,
        out="x",
    )
    args = build_parser().parse_args(equivalent_command(cfg).split()[1:])
    assert args.command == "compare"
    assert parse_strategies(args.strategies) == cfg.strategies
    assert (
        args.epochs,
        args.retrain_epochs,
        args.channels,
        args.budget,
        args.limit_train_batches,
        args.out,
    ) == (2, 5, 4, "30%", 3, "x")


def test_a_failing_strategy_gets_a_failed_row_with_a_one_line_reason(tmp_path):
    # The worker process cannot find the data: the search fails inside it and says why.
    cfg = CompareConfig(strategies=("random",), dataset="cifar10", data_dir=str(tmp_path / "missing"))
    budget = {"cost": "macs", "spec": "50%", "limit": 1.0, "full": 2.0, "fraction": 0.5, "unit": "MACs"}
    (row,) = _run_in_process(cfg, _Job("random", 0, budget), 0, tmp_path / "jobs", tmp_path / "random.log")
    assert row["status"] == "failed" and row["strategy"] == "RandomOneShot" and row["seed"] == 0
    assert row["error"].startswith("UsageError:") and "cifar" in row["error"] and "\n" not in row["error"]
    assert "Traceback" in (tmp_path / "random.log").read_text()


def test_a_strategy_over_its_time_limit_fails_and_the_command_exits_1_after_writing_everything(
    tmp_path, capsys
):
    out = tmp_path / "cmp"
    rc = main(["compare", "--strategies", "random", *TINY, "--strategy-timeout", "0.5", "--out", str(out)])
    assert rc == 1
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    report = json.loads((out / "compare.json").read_text())
    assert report["failed"] == ["random"]
    assert report["rows"][0]["status"] == "failed: timed out after 0.5 s"
    assert "| RandomOneShot | failed: timed out after 0.5 s |" in (out / "compare.md").read_text()
    assert "exit code 1" in capsys.readouterr().err


def test_markdown_table_has_a_row_per_strategy_and_failed_rows_keep_the_column_count():
    ok = {
        "strategy": "BSN",
        "status": "ok",
        "val_acc": 0.9,
        "test_acc": 0.8,
        "inherited_val_acc": 0.5,
        "inherited_test_acc": 0.4,
        "macs": 1e6,
        "params": 1e3,
        "latency_ms": 0.1,
        "distributed_ms": None,
        "search_seconds": 1.0,
        "step_ms": 2.0,
        "search_rss_growth_mb": 3.0,
        "gates_alive": 3,
        "gates_on": 4,
        "gates_total": 5,
        "within_budget": True,
    }
    failed = {"strategy": "ENAS", "status": "failed: boom"}
    lines = markdown_table([ok, failed]).splitlines()
    assert len(lines) == 4
    assert len({line.count("|") for line in lines}) == 1
    assert (
        "| 1,000,000 |" in lines[2] and "| – |" in lines[2] and lines[3].startswith("| ENAS | failed: boom |")
    )


@pytest.mark.parametrize("kind", ["cnf", "resnet-fabric"])
def test_nni_flops_profiler_works_on_our_fabrics_and_its_penalty_reaches_alpha(kind):
    from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty

    from evaluators import MacsCost
    from search_spaces import ConvolutionalNeuralFabric, ResNetFabric

    if kind == "cnf":
        space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1, num_classes=10)
    else:
        space = ResNetFabric(units=1, maps=(4, 8), in_channels=1, num_classes=10)
    shape = (1, 1, 8, 8)
    profiler = fabric_flops_profiler(space, shape)
    on = {label: GATE_ON for label in space.gate_labels}
    off = {label: GATE_OFF for label in space.gate_labels}
    full = float(profiler.profile(on))
    assert 0 < float(profiler.profile(off)) < full
    # Conv and linear multiply-accumulates: within a few percent of fvcore (which also counts BatchNorm).
    assert full == pytest.approx(MacsCost(input_shape=shape).bind(space).full_cost(), rel=0.1)
    alpha = torch.zeros(len(space.gate_labels), requires_grad=True)
    probs = {
        label: {GATE_OFF: 1 - torch.sigmoid(a), GATE_ON: torch.sigmoid(a)}
        for label, a in zip(space.gate_labels, alpha)
    }
    loss, details = ExpectationProfilerPenalty(profiler, baseline=full / 4, scale=1.0, nonlinear="positive")(
        torch.tensor(0.0), probs
    )
    loss.backward()
    assert float(details["normalized_penalty"].detach()) > 0
    assert (alpha.grad >= 0).all() and alpha.grad.sum() > 0  # more 'on' costs more


@pytest.mark.slow
def test_compare_runs_all_eight_rows(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in report["rows"]] == list(STRATEGIES)
    for row in report["rows"]:
        _assert_numeric_row(row)
    assert report["rows"][STRATEGIES.index("enas")]["enas"]["trajectories"] > 0
    assert report["rows"][STRATEGIES.index("darts+penalty")]["penalty"]["nonlinear"] == "positive"


def test_compare_on_a_cifar10_folder_runs_bsn_at_two_budgets_beside_darts(tmp_path, cifar_folder):
    """The quality table on CIFAR-10 when a folder is given: same rows, 3-channel 8x8 inputs, 10 classes."""
    root = cifar_folder("cifar10", n_train=80, n_test=20)
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            "--strategies",
            "bsn@25%,bsn@75%,darts",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(root),
            "--batch-size",
            "16",
            *TINY,
            "--no-onnx",
            "--out",
            str(out),
        ]
    )
    report = json.loads((out / "compare.json").read_text())
    assert rc == (1 if report["failed"] else 0) and set(report["failed"]) <= {
        "darts"
    }  # a disconnected export
    assert report["dataset"]["name"] == "cifar10" and report["dataset"]["sizes"] == {
        "train": 72,
        "val": 8,
        "test": 20,
    }
    labels = ["BSN 25%", "BSN 75%", "DARTS", "DARTS (DARTS derivation)"]
    assert [r["strategy"] for r in report["rows"]] == labels
    for row in report["rows"]:
        if row["name"] != "darts":
            assert row["status"] == "ok", row
            assert 0.0 <= row["test_acc"] <= 1.0 and row["macs"] > 0
    for row in report["rows"][:2]:  # each BSN row within its own budget, connected
        assert row["bsn_selection"]["within_budget"] and row["bsn_selection"]["connected"]
        assert 0 < row["bsn_selection"]["start_keep_prob"] <= 0.95
        # judged against its own budget, not --budget's 50%
        assert row["budget_limit"] == report["row_budgets"][row["name"]]["limit"] != report["budget"]["limit"]
        assert row["within_budget"] == (row["budget_cost"] <= row["budget_limit"] * (1 + 1e-9))
    assert report["rows"][0]["budget_limit"] < report["rows"][1]["budget_limit"]
    assert "its own budget (a <kind>@X row" in (out / "compare.md").read_text()


def test_bsn_rows_at_their_own_budgets_are_accepted_and_bad_ones_refused():
    from nni_bsn.jobs.config import parse_strategies, row_label

    assert parse_strategies("bsn@25%,bsn@75%,darts") == ("bsn@25%", "bsn@75%", "darts")
    assert row_label("bsn@25%") == "BSN 25%" and row_label("darts") == "DARTS"
    with pytest.raises(UsageError, match="bsn@lots"):
        parse_strategies("bsn@lots")


def test_a_compare_failing_at_its_end_keeps_its_rows_and_resume_reuses_them(tmp_path, monkeypatch, capsys):
    import nni_bsn.compare.run as run

    out = tmp_path / "cmp"
    argv = ["compare", "--strategies", "full,bsn-supernet@50%", *TINY, "--out", str(out)]

    def broken_plot(report, workdir):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(run, "write_outputs", broken_plot)
    with pytest.raises(RuntimeError):
        main(argv)
    kept = sorted(p.name for p in (tmp_path / "cmp.partial" / "rows").glob("*.json"))
    assert kept == ["seed0-bsn-supernet_at_50pct.json", "seed0-full.json"] and not out.exists()
    assert "--resume to continue" in capsys.readouterr().err
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["resumed"] == 2 and all(r["resumed"] for r in report["rows"])
    assert "2 row(s) were kept from an earlier" in (out / "compare.md").read_text()
    assert not (tmp_path / "cmp.partial").exists()


def test_a_killed_compare_takes_its_running_rows_with_it(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        "-m",
        "nni_bsn",
        "compare",
        "--strategies",
        "bsn",
        *TINY,
        "--epochs",
        "50",
        "--out",
        str(out),
    ]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        row = None
        for _ in range(120):  # the row's process starts once the comparison has set up
            time.sleep(0.5)
            found = subprocess.run(
                ["pgrep", "-P", str(parent.pid), "-f", "compare.row"], capture_output=True, text=True
            )
            if found.stdout.split():
                row = int(found.stdout.split()[0])
                break
        assert row is not None, "the row's process never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        for _ in range(40):
            time.sleep(0.25)
            if subprocess.run(["kill", "-0", str(row)], capture_output=True).returncode != 0:
                break
        else:
            os.kill(row, signal.SIGKILL)
            raise AssertionError("the row's process outlived the killed comparison")
    finally:
        parent.kill()


def test_the_two_conv_anchor_is_a_fixed_row_retrained_like_the_others_on_any_space(tmp_path):
    """Fashion-MNIST benchmark's '2 Conv <100K parameters' network as a row: counted and retrained by the same code
    as every found architecture (83,466 parameters at 28x28; at 8x8 its linear layer sees 2x2 maps)."""
    from search_spaces import TwoConv

    assert sum(p.numel() for p in TwoConv(image_size=28).parameters()) == 83_466
    out = tmp_path / "cmp"
    assert main(["compare", "--strategies", "two-conv", *TINY, "--out", str(out)]) == 0
    (row,) = json.loads((out / "compare.json").read_text())["rows"]
    assert row["status"] == "ok" and row["strategy"] == "2-conv network (<100K params)"
    assert row["params"] == sum(p.numel() for p in TwoConv(image_size=8).parameters())
    assert row["arch"] == {} and row["gates_total"] == 0 and row["test_acc"] > 0.2
    from nni_bsn.jobs.config import check_compare_config

    check_compare_config(CompareConfig(strategies=("two-conv",), space="nasbench201"))  # needs no gates
    with pytest.raises(UsageError, match="'full' needs a fabric"):
        check_compare_config(CompareConfig(strategies=("full",), space="nasbench201"))
