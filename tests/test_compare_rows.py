"""compare's rows beyond the strategies: seeds, random architectures within a budget, the fixed networks, BSN
with the abs penalty, the DARTS paper's derivation, and the summary's mean ± std and targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nni_bsn.cli import main
from nni_bsn.compare.summary import summarize, summary_table, targets, targets_markdown
from nni_bsn.jobs.config import CompareConfig, UsageError, check_compare_config, parse_strategies, row_label

TINY = [
    "--epochs",
    "1",
    "--limit-train-batches",
    "3",
    "--limit-val-batches",
    "2",
    "--no-onnx",
    "--channels",
    "4",
]


def _row(name, seed, acc, macs, search=None, status="ok"):
    return {
        "name": name,
        "strategy": row_label(name),
        "seed": seed,
        "status": status,
        "test_acc": acc,
        "val_acc": acc,
        "macs": macs,
        "search_seconds": search,
    }


def test_row_names_labels_and_their_checks():
    names = parse_strategies("bsn@10%,bsn-abs@10%,random-arch@10%,random-arch90@10%,full,resnet")
    assert [row_label(n) for n in names] == [
        "BSN 10%",
        "BSN abs 10%",
        "Random arch <= 10%",
        "Random arch 90-100% of 10%",
        "Full super network",
        "Plain ResNet (fabric, no shortcuts)",
    ]
    assert row_label("darts:derived") == "DARTS (DARTS derivation)"
    assert row_label("darts-fast") == "DARTS, arch lr 1e-2 (not its paper's)"
    assert "darts-fast" not in CompareConfig().strategies  # by name only: not an authors' setting
    from nni_bsn.compare.strategies import make_strategy

    fast, _ = make_strategy("darts-fast", CompareConfig(), None, (1, 1, 16, 16), {})
    assert type(fast).__name__ == "DARTS" and fast.arc_learning_rate == 1e-2
    with pytest.raises(UsageError, match="random-arch@x"):
        parse_strategies("random-arch@x")
    with pytest.raises(UsageError, match="'full' needs a fabric's gates"):
        check_compare_config(CompareConfig(space="nasbench201", strategies=("bsn", "full")))
    with pytest.raises(UsageError, match="repeats a seed"):
        check_compare_config(CompareConfig(seeds=(0, 0)))
    with pytest.raises(UsageError, match="--jobs must be a positive integer"):
        check_compare_config(CompareConfig(jobs=0))
    assert CompareConfig(seed=3).seed_list == (3,) and CompareConfig(seeds=(1, 2)).seed_list == (1, 2)


def test_summary_means_over_seeds_and_the_targets_say_met_or_not_with_numbers():
    rows = [
        _row("bsn@25%", 0, 0.86, 100, search=10),
        _row("bsn@25%", 1, 0.88, 110, search=12),
        _row("random-arch@25%", 0, 0.85, 90),
        _row("random-arch@25%", 1, 0.84, 80),
        _row("darts", 0, 0.80, 50, search=40),
        _row("darts", 1, None, None, status="failed: exported a disconnected network"),
        _row("full", 0, 0.90, 400),
    ]
    summary = summarize(rows, full_cost=400)
    bsn, rand, darts, full = summary
    assert bsn["runs"] == 2 and bsn["test_acc"]["mean"] == pytest.approx(0.87)
    assert bsn["test_acc"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert bsn["macs_fraction"] == pytest.approx(105 / 400)
    assert darts["runs"] == 1 and darts["failed"] == 1 and "disconnected" in darts["failures"][0]
    found = {t["target"]: t for t in targets(summary)}
    assert found["BSN 25% >= Random arch <= 25% mean + 1 std"]["met"] is True  # 0.87 >= 0.845 + 0.0071
    assert found["BSN 25% >= DARTS (costs no more)"]["met"] is True
    assert found["BSN 25% >= Full super network"]["met"] is False  # 0.87 < 0.90
    assert found["BSN 25% search <= 0.35x DARTS's"]["met"] is True  # 11 / 40
    text = targets_markdown(targets(summary))
    assert "**NOT met** (0.8700 vs 0.9000)" in text
    table = summary_table(summary)
    assert "| BSN 25% | 2 | 0.8700 ± 0.0141 |" in table and "(26.2%)" in table


def test_bsn_under_a_parameter_budget_is_judged_against_the_two_conv_network_paired_by_seed():
    rows = [
        {**_row("bsn-abs@100000", seed, acc, 5e6), "params": 97_000}
        for seed, acc in enumerate((0.913, 0.912, 0.916))
    ]
    rows += [
        {**_row("two-conv", seed, acc, 1.4e7), "params": 93_066}
        for seed, acc in enumerate((0.894, 0.893, 0.900))
    ]
    (anchor,) = [t for t in targets(summarize(rows)) if "2-conv" in t["target"]]
    assert anchor["target"] == "BSN abs 100000 >= 2-conv network (<100K params)" and anchor["met"] is True
    assert "97,000 vs 93,066 parameters" in anchor["detail"]
    assert "paired by seed +0.0180" in anchor["detail"] and "n=3" in anchor["detail"]


def test_search_time_target_reads_the_darts_derivation_when_every_darts_export_failed():
    rows = [
        _row("bsn@25%", 0, 0.86, 100, search=10),
        _row("darts", 0, None, None, status="failed: exported a disconnected network"),
        _row("darts:derived", 0, 0.80, 50, search=40),
    ]
    found = {t["target"]: t for t in targets(summarize(rows))}
    assert found["BSN 25% search <= 0.35x DARTS's"]["detail"] == "10 s vs 40 s (0.25x)"


def test_compare_seeds_random_architectures_fixed_networks_and_bsn_abs(tmp_path):
    out = tmp_path / "cmp"
    rows = "bsn-abs@50%,random-arch@50%,random-arch90@50%,full,resnet,cheapest"
    rc = main(
        [
            "compare",
            "--strategies",
            rows,
            "--seeds",
            "0,1",
            "--random-archs",
            "2",
            "--jobs",
            "2",
            *TINY,
            "--out",
            str(out),
        ]
    )
    report = json.loads((out / "compare.json").read_text())
    assert rc == 0 and report["failed"] == [] and report["seeds"] == [0, 1]
    by_name = {e["name"]: e for e in report["summary"]}
    assert [by_name[n]["runs"] for n in rows.split(",")] == [2, 4, 4, 2, 2, 2]
    limit = report["row_budgets"]["random-arch@50%"]["limit"]
    for r in report["rows"]:
        assert r["seed"] in (0, 1) and r["connected"] is not False
        if r["name"].startswith("random-arch"):
            low = 0.9 * limit if r["name"].startswith("random-arch90") else 0.0
            assert low <= r["budget_cost"] <= limit and r["draw"]["cost"] == pytest.approx(r["budget_cost"])
            assert r["search_seconds"] is None and r["inherited_test_acc"] is None
    draws = [
        json.dumps(r["pruned_arch"], sort_keys=True) for r in report["rows"] if r["name"] == "random-arch@50%"
    ]
    assert len(set(draws)) == len(draws)  # distinct architectures across draws and seeds
    full = next(r for r in report["rows"] if r["name"] == "full")
    assert full["gates_alive"] == full["gates_total"] and full["macs"] == pytest.approx(
        report["budget"]["full"]
    )
    resnet = next(r for r in report["rows"] if r["name"] == "resnet")
    cheapest = next(r for r in report["rows"] if r["name"] == "cheapest")
    assert cheapest["macs"] == min(r["macs"] for r in report["rows"]) and cheapest["gates_alive"] < 10
    assert resnet["gates_total"] < full["gates_total"]  # another space: the ResNet fabric without shortcuts
    bsn = next(r for r in report["rows"] if r["name"] == "bsn-abs@50%")
    assert "penalty='abs'" in bsn["strategy_args"]
    assert (out / "summary.csv").read_text().startswith("name,strategy,runs,failed,test_acc_mean")
    md = (out / "compare.md").read_text()
    assert "Targets:" in md and "| Random arch <= 50% | 4 |" in md


def test_compare_on_nasbench201_gives_bsn_darts_its_derivation_and_random_rows(tmp_path):
    """NNI's NasBench201 (no gates): BSN under a MACs budget beside DARTS (its export and, where the zero op won
    somewhere, the DARTS paper's derivation) and random architectures within the budget."""
    out = tmp_path / "cmp"
    args = ["--space", "nasbench201", "--units", "1", "--random-archs", "1", "--budget", "60%"]
    rc = main(["compare", "--strategies", "bsn,darts,random-arch@60%", *args, *TINY, "--out", str(out)])
    report = json.loads((out / "compare.json").read_text())
    # after 3 batches the cheapest cell ('none' on every edge) may win BSN's or DARTS's argmax: a failed row
    assert set(report["failed"]) <= {"bsn", "darts"} and rc == (1 if report["failed"] else 0), report[
        "failed"
    ]
    names = [r["name"] for r in report["rows"]]
    assert names[:2] == ["bsn", "darts"] and names[-1] == "random-arch@60%"
    assert set(names) <= {"bsn", "darts", "darts:derived", "random-arch@60%"}
    for r in report["rows"]:  # a network its input does not reach is a failed row, not a point
        assert r["gates_total"] == 0
        if r["name"] in report["failed"]:
            assert not r["connected"] and "output ignores it" in r["status"], r["status"]
        else:
            assert r["connected"] is True and 0 <= r["test_acc"] <= 1
    bsn = report["rows"][0]
    assert bsn["choice_max_prob"] is not None and (bsn["name"] in report["failed"] or bsn["within_budget"])
    for r in report["rows"]:
        if r["name"] == "darts:derived":  # the zero op never wins in the DARTS paper's derivation
            assert "none" not in r["arch"].values()


def test_a_network_whose_output_ignores_its_input_is_told_from_one_that_reads_it():
    """On a space without gates, connectivity is whether the output depends on the input: NasBench201 with 'none'
    on every edge predicts one class whatever it is shown."""
    from nni_bsn.network.evaluation import input_reaches_output
    from tests.nni_models import small_hub_space

    space = small_hub_space("nasbench201")
    labels = list(space.simplify())
    cut = space.freeze({label: "none" for label in labels})
    assert not input_reaches_output(cut, (1, 3, 32, 32))
    convs = space.freeze({label: "conv_3x3" for label in labels})
    assert input_reaches_output(convs, (1, 3, 32, 32))
    into_3_cut = {label: ("none" if label.endswith("_3") else "skip_connect") for label in labels}
    assert not input_reaches_output(space.freeze(into_3_cut), (1, 3, 32, 32))  # nothing reaches node 3


def test_every_retraining_sees_the_same_batches_whatever_the_search_drew_before_it(digits_loaders):
    """compare retrains a row's architectures in the process that searched them: the training loader's shuffle
    is rewound to the seed first, so a search (or an earlier retraining) does not change the data order."""
    from nni_bsn.compare.row import reset_order

    train = digits_loaders[0]

    def first_batches():
        reset_order(train, 0)
        batches = iter(train)
        return [next(batches)[1] for _ in range(3)]

    fresh = first_batches()
    for _ in zip(range(5), train):  # what a search would draw
        pass
    again = first_batches()
    assert all(a.equal(b) for a, b in zip(fresh, again))


def test_bsn_against_random_is_paired_by_seed_with_a_confidence_interval():
    from nni_bsn.compare.summary import paired_difference, summarize, targets

    rows = [
        {"name": "bsn@25%", "status": "ok", "seed": s, "test_acc": acc}
        for s, acc in [(0, 0.90), (1, 0.88), (2, 0.86)]
    ] + [
        {"name": "random-arch90@25%", "status": "ok", "seed": s, "test_acc": acc}
        for s, acc in [(0, 0.89), (0, 0.87), (1, 0.87), (2, 0.85), (3, 0.99)]
    ]
    bsn, rand = summarize(rows)
    assert rand["test_acc_by_seed"] == {0: 0.88, 1: 0.87, 2: 0.85, 3: 0.99}
    diff = paired_difference(bsn, rand)  # seed 3 has no BSN run: left out of the pairs
    assert diff["n"] == 3 and abs(diff["mean"] - 0.04 / 3) < 1e-9
    assert diff["low"] < diff["mean"] < diff["high"]
    (vs_random,) = [t for t in targets([bsn, rand]) if "Random" in t["target"]]
    assert "paired by seed +0.0133" in vs_random["detail"] and "n=3" in vs_random["detail"]


def test_every_row_kind_has_its_colour_on_the_front():
    from nni_bsn.compare.front_plot import _FAMILY_COLOURS
    from nni_bsn.jobs.config import BSN_KINDS

    assert set(BSN_KINDS) <= set(_FAMILY_COLOURS), (
        "a BSN row kind without a colour fails the plot at a run's end"
    )


def test_a_compare_keeps_each_finished_row_and_resume_reuses_it(tmp_path):
    from nni_bsn.compare.run import KeptRows, _Job
    from nni_bsn.jobs.config import CompareConfig

    cfg = CompareConfig(out=str(tmp_path / "out"), seeds=(0, 1), jobs=2)
    kept = KeptRows(tmp_path / "rows", cfg)
    job = _Job("bsn@25%", 1, {"spec": "25%", "limit": 10.0})
    assert kept.get(job) is None
    kept.put(job, [{"name": "bsn@25%", "seed": 1, "status": "ok", "test_acc": 0.9}])
    # more seeds, more jobs at once, another output folder: the same row
    again = KeptRows(tmp_path / "rows", CompareConfig(out=str(tmp_path / "o2"), seeds=(0, 1, 2), jobs=1))
    assert again.get(job) == [
        {"name": "bsn@25%", "seed": 1, "status": "ok", "test_acc": 0.9, "resumed": True}
    ]
    # another recipe (retraining epochs) or another budget: not the same row
    assert KeptRows(tmp_path / "rows", CompareConfig(retrain_epochs=7)).get(job) is None
    assert kept.get(_Job("bsn@25%", 1, {"spec": "25%", "limit": 11.0})) is None


def test_finished_runs_of_one_recipe_merge_into_one_table_and_others_are_refused(tmp_path):
    """benchmarks/bench_fashion.py --merge: two runs (other seeds, other rows, another --budget) give one table
    with every row once; a run of another recipe (retraining epochs) is refused by name."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_fashion import _merged

    def compare(out, *args):
        assert main(["compare", "--random-archs", "1", *TINY, "--out", str(tmp_path / out), *args]) == 0
        return tmp_path / out

    a = compare("a", "--strategies", "random-arch@50%,cheapest", "--seeds", "0")
    b = compare("b", "--strategies", "random-arch@25%,cheapest", "--seeds", "0,1", "--budget", "25%")
    merged = _merged([a, b], tmp_path / "merged")
    runs = {e["name"]: e["runs"] for e in merged["summary"]}
    assert runs == {"random-arch@50%": 1, "cheapest": 2, "random-arch@25%": 2}  # cheapest seed 0 once
    assert {"random-arch@50%", "random-arch@25%"} <= set(merged["row_budgets"]) and merged["seeds"] == [0, 1]
    assert (tmp_path / "merged" / "accuracy_vs_cost.png").is_file()
    other = compare("c", "--strategies", "cheapest", "--seeds", "2", "--retrain-epochs", "2")
    with pytest.raises(ValueError, match="retrain"):
        _merged([a, other], tmp_path / "m2")
