"""compare --settle: a search stops once its most probable architecture is the same at N consecutive epoch ends;
the rows say how many epochs each search ran and whether it settled."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from nni_bsn.cli import main
from nni_bsn.compare.strategies import SettleStop
from nni_bsn.compare.summary import summarize, summary_table
from nni_bsn.jobs.config import CompareConfig, UsageError, check_compare_config


class _Module:
    """A one-shot module whose probabilities are set by the test, epoch by epoch."""

    def __init__(self):
        self.probs: dict = {}

    def export_probs(self):
        return self.probs


def _epochs(callback, module, per_epoch):
    trainer = SimpleNamespace(current_epoch=0, should_stop=False)
    for epoch, probs in enumerate(per_epoch):
        trainer.current_epoch = epoch
        module.probs = probs
        callback.on_train_epoch_end(trainer, module)
        if trainer.should_stop:
            return epoch + 1
    return len(per_epoch)


def test_settle_stops_when_the_argmax_is_the_same_at_patience_epoch_ends():
    a = {"g": {"on": 0.6, "off": 0.4}, "op": {"conv": 0.3, "pool": 0.7}}
    b = {"g": {"on": 0.4, "off": 0.6}, "op": {"conv": 0.3, "pool": 0.7}}
    a_surer = {"g": {"on": 0.9, "off": 0.1}, "op": {"conv": 0.2, "pool": 0.8}}
    stop = SettleStop(3)
    # a, b, a, a (probabilities move, argmax the same), a: three epoch ends alike at the 5th
    ran = _epochs(stop, _Module(), [a, b, a, a_surer, a, b, b])
    assert ran == 5 and stop.settled_epoch == 5
    summary = stop.summary(ran)
    assert summary["unchanged_per_epoch"] == [1, 1, 1, 2, 3]
    assert summary["moved_per_epoch"] == [None, 1, 1, 0, 0]  # choices whose argmax moved since the last end
    assert summary["max_prob_per_epoch"][3] == pytest.approx(0.85)  # mean of the largest probabilities


def test_settle_runs_every_epoch_when_the_argmax_keeps_moving_or_there_are_no_probabilities():
    a = {"g": {"on": 0.6, "off": 0.4}}
    b = {"g": {"on": 0.4, "off": 0.6}}
    moving = SettleStop(2)
    assert _epochs(moving, _Module(), [a, b, a, b]) == 4 and moving.settled_epoch is None
    no_probs = SettleStop(2)  # RandomOneShot: nothing to settle
    assert _epochs(no_probs, _Module(), [{}, {}, {}]) == 3 and no_probs.settled_epoch is None
    assert no_probs.summary(3)["max_prob_per_epoch"] == []


@pytest.mark.parametrize("settle", [1, 4, 0])
def test_settle_out_of_range_is_refused_with_what_it_counts(settle):
    with pytest.raises(UsageError, match=r"--settle must be an integer from 2 to --epochs \(3\)"):
        check_compare_config(CompareConfig(epochs=3, settle=settle))
    check_compare_config(CompareConfig(epochs=3, settle=3))


def test_summary_counts_the_runs_that_settled():
    def row(seed, epochs, settled):
        settle = {"patience": 2, "epochs_run": epochs, "settled_epoch": settled, "max_prob_per_epoch": [0.6]}
        return {"name": "darts", "strategy": "DARTS", "seed": seed, "status": "ok", "test_acc": 0.8} | {
            "search_epochs": epochs,
            "settle": settle,
        }

    (entry,) = summarize([row(0, 4, 4), row(1, 6, None), row(2, 2, 2)])
    assert entry["settled"] == 2 and entry["search_epochs"]["mean"] == pytest.approx(4)
    assert "| 4 ± 2 (2/3 settled) |" in summary_table([entry])
    (plain,) = summarize([{"name": "full", "strategy": "Full", "seed": 0, "status": "ok", "test_acc": 0.8}])
    assert plain["settled"] is None and "| – |" in summary_table([plain])
    no_probs = {"patience": 2, "epochs_run": 4, "settled_epoch": None, "max_prob_per_epoch": []}
    (random_one_shot,) = summarize([{**row(0, 4, None), "name": "random", "settle": no_probs}])
    assert random_one_shot["settled"] is None and "| 4 ± 0 |" in summary_table([random_one_shot])


def test_compare_settle_stops_each_search_by_its_own_argmax(tmp_path):
    out = tmp_path / "cmp"
    tiny = ["--limit-train-batches", "3", "--limit-val-batches", "2", "--no-onnx", "--channels", "4"]
    rc = main(
        ["compare", "--strategies", "bsn,darts", "--epochs", "4", "--settle", "2", *tiny, "--out", str(out)]
    )
    report = json.loads((out / "compare.json").read_text())
    assert rc == 0 and report["failed"] == []
    for r in report["rows"]:
        settle = r["settle"]
        assert settle["patience"] == 2 and r["search_epochs"] == settle["epochs_run"]
        assert len(settle["unchanged_per_epoch"]) == r["search_epochs"]
        if settle["settled_epoch"] is None:
            assert r["search_epochs"] == 4 and max(settle["unchanged_per_epoch"]) < 2
        else:  # stopped at the first epoch end that made two alike
            assert r["search_epochs"] == settle["settled_epoch"] >= 2
            assert settle["unchanged_per_epoch"].index(2) == r["search_epochs"] - 1
    md = (out / "compare.md").read_text()
    assert "is the same at 2 consecutive epoch ends, at most 4 epochs" in md and "settled) |" in md
    assert "--settle 2" in report["equivalent_command"]
