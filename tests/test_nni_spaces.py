"""MacsCost / ParamsCost and BSN on NNI's own spaces: NNI 3.0's one-shot test matrix and its hub spaces.

Evaluator side: counts equal fvcore / ``numel`` on ``space.freeze(arch)``, ``full_cost()`` / ``min_cost()`` are the
true extremes, InputChoice values keep NNI's list format, the evaluator survives NNI mutating the space in place,
and a cost call is microseconds. Strategy side: NNI's ``test_strategy.py`` matrix with BSN and the documented
``MacsCost`` (``ParamsCost`` for the attention model): one short epoch on random tensors, export, a fresh space
frozen to the exported architecture runs, and its fvcore count is within the budget.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time

import nni
import pytest
import torch
from nni.nas.evaluator.pytorch import Classification, DataLoader, Regression
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableConv2d, Repeat
from nni.nas.space import RawFormatModelSpace, model_context
from nni.nas.strategy import RandomOneShot
from torch import nn
from torch.utils.data import TensorDataset

from evaluators import MacsCost, ParamsCost
from evaluators.counting.flops import fvcore_macs, space_grid
from nni_bsn import BSN
from nni_bsn.network.training import QUIET_CPU
from tests.nni_models import EXPECT_SUCCESS, INPUT_SHAPES, MODELS, small_hub_space

TRAINER = dict(
    max_epochs=1,
    limit_train_batches=2,
    limit_val_batches=1,
    **QUIET_CPU,
)


def reference(evaluator_name: str, model: nn.Module, shape) -> float:
    """fvcore's MACs (inf when the frozen network cannot run) or the parameter count of a frozen model."""
    if evaluator_name == "params":
        return sum(p.numel() for p in model.parameters())
    try:
        return fvcore_macs(model, shape)
    except RuntimeError:
        return math.inf


def costs_for(name: str):
    if name == "multihead_attention":  # its input is a (q, k, v) triple: counted in parameters, as NNI's test
        return [ParamsCost()]
    return [MacsCost(input_shape=INPUT_SHAPES[name]), ParamsCost()]


_BOUND: dict[str, tuple] = {}


def bound_costs(name: str):
    """``(space, [bound evaluators])`` for a test space, bound once per session (binding measures networks)."""
    if name not in _BOUND:
        space = MODELS[name]()
        _BOUND[name] = space, [ev.bind(space) for ev in costs_for(name)]
    return _BOUND[name]


def all_archs(space) -> list[dict]:
    grid = space_grid(space)
    labels = sorted(grid)
    return [dict(zip(labels, combo)) for combo in itertools.product(*(grid[x] for x in labels))]


# -- the evaluator on NNI's test spaces ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_counts_equal_fvcore_and_numel_on_the_frozen_model(name):
    space, evaluators = bound_costs(name)
    rng = random.Random(0)
    grid = space_grid(space)
    for bound in evaluators:
        for _ in range(6):
            arch = {k: rng.choice(v) for k, v in grid.items()}
            assert bound(arch) == reference(bound.name, space.freeze(arch), INPUT_SHAPES[name]), (
                bound.name,
                arch,
            )


@pytest.mark.parametrize(
    "name", ["simple", "simple_value_choice", "value_choice", "repeat", "custom_op", "multihead_attention"]
)
def test_full_and_min_cost_are_the_extremes_over_every_architecture(name):
    space, evaluators = bound_costs(name)
    archs = all_archs(space)
    for bound in evaluators:
        assert bound.mode in ("additive", "tables")
        costs = [bound(a) for a in archs]
        assert bound.full_cost() == max(costs) and bound.min_cost() == min(costs)
        for arch, value in ((bound.full_arch(), bound.full_cost()), (bound.min_arch(), bound.min_cost())):
            assert reference(bound.name, space.freeze(arch), INPUT_SHAPES[name]) == value


def test_input_choice_keeps_nni_list_format_in_the_extreme_architectures():
    space, (bound, _) = bound_costs("simple_value_choice")
    full = bound.full_arch()
    assert isinstance(full["input"], list) and full["input"] in ([0], [1])
    space.freeze(full)  # NNI accepts it (an int here made freeze raise TypeError)
    # The second input runs one more linear layer (fvcore counts only what reaches the output).
    assert bound({**full, "input": [1]}) > bound({**full, "input": [0]})


def test_architectures_that_cannot_run_cost_inf_and_extremes_skip_them():
    space, (bound, _) = bound_costs("cell")  # NNI's loose-end Cell: most frozen networks do not run
    assert bound.mode == "exact"
    valid = {label: values[0] for label, values in space_grid(space).items()}  # every node on the cell input
    bad = {**valid, "cell0/input_2_0": [1], "rep": 1}
    assert bound(valid) == reference("macs", space.freeze(valid), INPUT_SHAPES["cell"]) < math.inf
    assert bound(bad) == math.inf
    assert (
        math.isfinite(bound.full_cost()) and bound.min_cost() is None
    )  # too many architectures to enumerate


def test_evaluator_is_bound_to_a_copy_that_nni_mutation_leaves_alone():
    space = MODELS["value_choice"]()
    bound = MacsCost(input_shape=INPUT_SHAPES["value_choice"]).bind(space)
    archs = all_archs(space)
    before = [bound(a) for a in archs]
    RandomOneShot().mutate_model(space)  # turns the space into the supernet in place
    assert [bound(a) for a in archs] == before
    assert bound.space is not space


@pytest.mark.parametrize("name", ["simple_value_choice", "repeat"])
def test_cost_call_takes_microseconds(name):
    space, (bound, _) = bound_costs(name)
    grid = space_grid(space)
    rng = random.Random(0)
    archs = [{k: rng.choice(v) for k, v in grid.items()} for _ in range(300)]
    times = []
    for arch in archs:
        t0 = time.perf_counter()
        bound(arch)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.1e-3


def test_tables_keyed_on_a_cells_loose_ends_are_exact_with_exact_extremes():
    """A count that hangs on all input choices of a cell jointly (its loose ends, whether it reads its input):
    the fit keys tables on the derived labels, and the extremes (dynamic programming over the cell's union of
    read states) equal brute force."""
    from evaluators.counting.derived_labels import DerivedLabels
    from evaluators.counting.label_tables import fit_tables

    grid = {
        "in1": [[0]],
        "in2": [[0], [1]],
        "in3": [[0], [1], [2]],
        **{f"op{i}": ["a", "b", "c"] for i in (1, 2, 3)},
    }
    bits = {x: {tuple(v): 1 << v[0] for v in grid[x]} for x in ("in1", "in2", "in3")}
    nodes = 0b1110  # states 1..3 are the nodes; state 0 is the cell's input

    def derive(u):
        return (bool(u & 1), bin(nodes & ~u).count("1"))

    cell = DerivedLabels(("reads_input", "loose_ends"), bits, derive)
    price = {"a": 1, "b": 7, "c": 3}

    def measure(arch):
        reads, loose = derive((1 << arch["in1"][0]) | (1 << arch["in2"][0]) | (1 << arch["in3"][0]))
        return {
            "op1": price[arch["op1"]],
            "op2": price[arch["op2"]] * (2 if arch["in2"] == [0] else 1),  # a stride on the cell's input
            "op3": price[arch["op3"]] * (1 + arch["in3"][0]),
            "head": 10 * loose,  # the output width is the number of loose ends
            "pre": 5 * reads,
        }

    tables = fit_tables(measure, grid, derived=[cell], verify=4, seed=1)
    labels = sorted(grid)
    archs = [dict(zip(labels, combo)) for combo in itertools.product(*(grid[x] for x in labels))]
    costs = [sum(measure(a).values()) for a in archs]
    assert [tables(a) for a in archs] == costs
    for best in (max, min):
        value, arch = tables.extreme(best)
        assert value == best(costs) and sum(measure(arch).values()) == value


def test_tables_measure_a_masked_count_only_where_it_lives_and_stay_exact():
    """A cell whose operators count only when the next cell reads it (``A/live``, derived from ``inB``): with the
    structure known and the mask given, the fit measures fewer architectures, and the tables, zero where the cell
    is dead, equal the count everywhere."""
    from evaluators.counting.derived_labels import DerivedLabels
    from evaluators.counting.label_tables import fit_tables

    ops = ["a", "b", "c", "d"]
    grid = {"inB": [[0], [1]], **{f"opA{i}": ops for i in (1, 2, 3)}, "opB": ops}
    live = DerivedLabels(("A/live",), {"inB": {(0,): 1, (1,): 0}}, lambda u: (bool(u & 1),))
    price = {"a": 1, "b": 7, "c": 3, "d": 5}
    known = {f"A.op{i}": (f"opA{i}", "A/live") for i in (1, 2, 3)}
    calls = []

    def measure(arch):
        calls.append(arch)
        alive = arch["inB"] == [0]
        own = {f"A.op{i}": price[arch[f"opA{i}"]] * i for i in (1, 2, 3)} if alive else {}
        return {**own, "B.op": price[arch["opB"]], "head": 10}

    def fit(**kwargs):
        calls.clear()
        tables = fit_tables(measure, grid, derived=[live], known=known.get, verify=3, seed=0, **kwargs)
        return tables, len(calls)

    tables, n_masked = fit(masks=["A/live"])
    _, n_plain = fit()
    assert n_masked < n_plain
    labels = sorted(grid)
    archs = [dict(zip(labels, combo)) for combo in itertools.product(*(grid[x] for x in labels))]
    costs = [sum(measure(a).values()) for a in archs]
    assert [tables(a) for a in archs] == costs
    for best in (max, min):
        assert tables.extreme(best)[0] == best(costs)


def test_a_fresh_build_constructs_only_the_chosen_cell_operators_and_equals_freeze(monkeypatch):
    """On NNI's DARTS space a fixed cell builds every candidate operator; inside ``only_chosen_candidates`` it
    builds the chosen ones only, and the network is the one ``freeze`` gives (same modules, same count)."""
    from evaluators.counting.frozen_build import only_chosen_candidates

    space = small_hub_space("darts")
    grid = space_grid(space)
    arch = {x: random.Random(3).choice(v) for x, v in sorted(grid.items())}
    built = []
    init = nn.BatchNorm2d.__init__
    monkeypatch.setattr(
        nn.BatchNorm2d, "__init__", lambda self, *a, **k: built.append(1) or init(self, *a, **k)
    )

    def build():
        built.clear()
        with model_context(arch):
            model = type(space)(*space.trace_args, **space.trace_kwargs)
        return model, len(built)

    full, n_all = build()
    with only_chosen_candidates():
        lazy, n_chosen = build()
    assert n_chosen < n_all / 2
    frozen = space.freeze(arch)
    shapes = {k: v.shape for k, v in frozen.state_dict().items()}
    assert {k: v.shape for k, v in lazy.state_dict().items()} == shapes
    assert (
        fvcore_macs(lazy, (1, 3, 32, 32))
        == fvcore_macs(frozen, (1, 3, 32, 32))
        == fvcore_macs(full, (1, 3, 32, 32))
    )


class _Excite(nn.Module):
    """Squeeze-and-excite: the input scaled per channel by a 1x1 conv of its mean."""

    def __init__(self, channels) -> None:
        super().__init__()
        self.pool, self.conv = nn.AdaptiveAvgPool2d(1), MutableConv2d(channels, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(self.pool(x)))


class _Block(nn.Sequential):
    """A plain (not mutable) block: an expansion width and an optional squeeze-and-excite of its own."""

    def __init__(self, index: int, width: int) -> None:
        hidden = width * nni.choice(f"exp{index}", [1, 2])
        se = LayerChoice({"identity": nn.Identity(), "se": _Excite(hidden)}, label=f"se{index}")
        super().__init__(
            MutableConv2d(width, hidden, 1), se, MutableConv2d(hidden, width, 1), nn.BatchNorm2d(4)
        )


class RepeatOfBlocks(ModelSpace):
    """A Repeat of 1 to 3 blocks (a depth choice, each block with its own choices): MobileNetV3's shape in small."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.blocks = Repeat(lambda i: _Block(i, 4), (1, 3), label="depth")
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_repeat_blocks_are_masked_by_whether_they_exist_and_counts_stay_exact():
    """Each block after the first counts only where the depth keeps it (``<block path>/exists``): its tables are
    keyed on that, not on the depth, and the counts equal fvcore / numel on every architecture."""
    from evaluators.counting.derived_labels import EXISTS, repeat_derived_labels

    space = RepeatOfBlocks()
    grid = space_grid(space)
    (exists,) = repeat_derived_labels(space, grid)
    assert exists.names == (f"blocks.blocks.1{EXISTS}", f"blocks.blocks.2{EXISTS}")
    assert [exists.values({"depth": d}) for d in (1, 2, 3)] == [(False, False), (True, False), (True, True)]
    archs = all_archs(space)
    for ev in (MacsCost(input_shape=(1, 1, 8, 8)), ParamsCost()):
        bound = ev.bind(space)
        assert bound.mode == "tables"
        costs = [reference(ev.name, space.freeze(a), (1, 1, 8, 8)) for a in archs]
        assert [bound.cost(a) for a in archs] == costs
        assert (bound.full_cost(), bound.min_cost()) == (max(costs), min(costs))


def test_darts_space_binds_macs_on_few_measured_architectures(monkeypatch):
    """The set-up cost of MacsCost on NNI's DARTS space is its measured architectures (a build and an fvcore trace
    each): known cell structure, liveness masks and the covering keep them to a few dozen (134 before)."""
    from evaluators.counting.flops import MacsCost as Macs

    measured = []
    measure = Macs._measure
    monkeypatch.setattr(Macs, "_measure", lambda self, m: measured.append(1) or measure(self, m))
    bound = Macs(input_shape=(1, 3, 32, 32)).bind(small_hub_space("darts"))
    assert bound.mode == "tables" and len(measured) <= 30


# -- the reproductions of issue 11 --------------------------------------------------------------------------------


class OneWidth(ModelSpace):
    """The only mutable is a conv width."""

    def __init__(self):
        super().__init__()
        self.conv = MutableConv2d(1, nni.choice("ch", [8, 16]), 3)

    def forward(self, x):
        return self.conv(x)


class KernelThenLayerChoice(ModelSpace):
    """A kernel size ``nni.choice([1, 3])`` and a LayerChoice whose *first* candidate (5x5) is the dearest.

    Rebuilt from the issue's numbers on a ``1 x 1 x 8 x 8`` input: 4 channels after the first conv and 64 after
    the second give 64 * 4 * 9 + 64 * 4 * 64 * 1 = 18,688 MACs with the 1x1 candidate (what the old ``full_cost``
    reported: last candidate) and 64 * 4 * 9 + 64 * 4 * 64 * 25 = 411,904 with the 5x5 one (the maximum).
    """

    def __init__(self):
        super().__init__()
        kernel = nni.choice("kernel", [1, 3])
        self.conv1 = MutableConv2d(1, 4, kernel, padding=kernel // 2)
        self.conv2 = LayerChoice([nn.Conv2d(4, 64, 5, padding=2), nn.Conv2d(4, 64, 1)], label="op")

    def forward(self, x):
        return self.conv2(self.conv1(x))


def test_issue_repro_a_width_choice_no_longer_crashes_bsn_set_up():
    space = OneWidth()
    macs = MacsCost(input_shape=(1, 1, 8, 8)).bind(space)
    assert macs.full_cost() == 16 * 9 * 36 and macs.min_cost() == 8 * 9 * 36
    strategy = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="50%")
    strategy.mutate_model(space)
    assert strategy.budgets[0].limit == 0.5 * 16 * 9 * 36


def test_issue_repro_full_cost_is_the_dearest_candidate_not_the_last():
    space = KernelThenLayerChoice()
    macs = MacsCost(input_shape=(1, 1, 8, 8)).bind(space)
    assert macs.full_cost() == 411_904 and macs.full_arch() == {"kernel": 3, "op": 0}
    assert macs({"kernel": 3, "op": 1}) == 18_688
    assert fvcore_macs(space.freeze(macs.full_arch()), (1, 1, 8, 8)) == 411_904
    assert macs.min_cost() == fvcore_macs(space.freeze({"kernel": 1, "op": 1}), (1, 1, 8, 8))


def test_issue_repro_custom_op_raises_what_nni_raises():
    with pytest.raises(TypeError, match="not supported"):
        BSN(cost=MacsCost(input_shape=INPUT_SHAPES["custom_op"]), budget="50%").mutate_model(
            MODELS["custom_op"]()
        )


# -- plain callable costs: a bounded number of probes before training, an impossible budget refused there ----------


class CountingCost:
    """A plain callable cost (the number of 'on' gates, or of choices away from their first value) that counts
    its calls."""

    def __init__(self, grid=None):
        self.calls, self.grid = 0, grid

    def __call__(self, arch):
        self.calls += 1
        if self.grid is None:
            return float(sum(v == "on" for v in arch.values()))
        return float(sum(v != self.grid[k][0] for k, v in arch.items()))


def test_callable_cost_is_called_on_a_bounded_number_of_probes_before_training():
    from nni_bsn.strategy.budget import PROBES

    space = small_hub_space("darts")  # 32 choices: the coordinate pass called a callable 169 times here
    cost = CountingCost(space_grid(space))
    strategy = BSN(cost=cost, budget="50%")
    strategy.mutate_model(space)
    assert (
        1 <= cost.calls <= PROBES and cost.calls == 2
    )  # no gates: every choice at its first, then last value
    assert strategy.budgets[0].limit == 0.5 * 32  # the last values are all away from the first


def test_callable_cost_with_an_impossible_budget_is_refused_at_set_up():
    from nni_bsn.strategy.budget import PROBES
    from search_spaces import ConvolutionalNeuralFabric

    space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1)
    cost = CountingCost()
    strategy = BSN(cost=cost, budget=1)  # every connected path of the fabric keeps more than one gate on
    with pytest.raises(ValueError, match="below every architecture BSN probed before training"):
        strategy.mutate_model(space)  # set-up: no epoch has run
    assert cost.calls <= PROBES
    cost.calls = 0
    BSN(cost=cost, budget=1000).mutate_model(
        ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1)
    )
    assert cost.calls <= PROBES


# -- BSN on NNI's one-shot strategy matrix --------------------------------------------------------------------------


def _evaluator(name: str):
    if name == "multihead_attention":
        q = torch.rand(8, 1, 128)
        data = list(zip(zip(q, q.flip(0), q.roll(1, 0)), torch.rand(8, 1, 1)))
        return Regression(
            train_dataloaders=DataLoader(data, batch_size=4),
            val_dataloaders=DataLoader(data, batch_size=4),
            **TRAINER,
        )
    data = TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    return Classification(
        train_dataloaders=DataLoader(data, batch_size=4),
        val_dataloaders=DataLoader(data, batch_size=4),
        num_classes=10,
        **TRAINER,
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bsn_on_nni_one_shot_test_matrix(name):
    cost = costs_for(name)[0]
    strategy = BSN(cost=cost, budget="50%", export_samples=20)
    model_space = RawFormatModelSpace(MODELS[name](), _evaluator(name))
    if not EXPECT_SUCCESS[name]:
        with pytest.raises(TypeError, match="not supported"):
            strategy(model_space, SequentialExecutionEngine())
        return
    strategy(model_space, SequentialExecutionEngine())
    arch = next(strategy.list_models()).sample
    with model_context(arch):
        fresh = MODELS[name]()  # a fresh space frozen to the exported architecture
    fresh.eval()
    x = torch.rand(1, 1, 128) if name == "multihead_attention" else torch.rand(1, 1, 28, 28)
    fresh((x, x, x) if name == "multihead_attention" else x)
    assert reference(cost.name, fresh, INPUT_SHAPES[name]) <= strategy.budgets[0].limit


# -- BSN with MacsCost on NNI's hub spaces ----------------------------------------------------------------------


HUBS = ["nasbench201"] + [
    pytest.param(h, marks=pytest.mark.slow)
    for h in ["proxylessnas", "mobilenetv3", "shufflenet", "autoformer", "darts", "pnas"]
]


@pytest.mark.parametrize("hub", HUBS)
def test_bsn_with_macs_searches_nni_hub_spaces_within_budget(hub):
    shape = (1, 3, 32, 32)
    data = TensorDataset(torch.randn(8, *shape[1:]), torch.randint(0, 10, (8,)))
    ev = Classification(
        train_dataloaders=DataLoader(data, batch_size=4),
        val_dataloaders=DataLoader(data, batch_size=4),
        num_classes=10,
        **TRAINER,
    )
    # ShuffleNet's cheapest architecture costs 68% of its dearest: 50% would be refused at set-up
    budget = "75%" if hub == "shufflenet" else "50%"
    strategy = BSN(cost=MacsCost(input_shape=shape), budget=budget, export_samples=20)
    strategy(RawFormatModelSpace(small_hub_space(hub), ev), SequentialExecutionEngine())
    arch = next(strategy.list_models()).sample
    model = small_hub_space(hub).freeze(arch).eval()
    assert model(torch.randn(*shape)).shape == (1, 10)
    assert fvcore_macs(model, shape) <= strategy.budgets[0].limit


# -- NDS cell spaces: a cell no later cell reads ------------------------------------------------------------------


def _rare_reads(space, rng: random.Random, avoid: dict[str, list[int]]) -> dict:
    """A random architecture whose cells labelled ``L`` read none of the predecessors ``avoid[L]`` (rare at random:
    every input choice of the cell must miss them)."""
    arch = {}
    for label, values in space_grid(space).items():
        banned = avoid.get(label.split("/")[0], [])
        allowed = [v for v in values if not (isinstance(v, list) and v[0] in banned)] or values
        arch[label] = rng.choice(allowed)
    return arch


def test_a_cell_that_no_later_cell_reads_is_dead_and_the_liveness_labels_say_so():
    """NNI's DARTS space at 3 cells (normal, reduce, reduce; 'reduce' cells share their choices): when the
    reduction cells never read predecessor 1, the middle cell reaches nothing, and fvcore counts none of it."""
    from evaluators.counting.derived_labels import LIVE, cell_derived_labels
    from evaluators.counting.flops import _analysis
    from evaluators.counting.table_extremes import hashable_value

    space = small_hub_space("darts")
    grid = space_grid(space)
    live = next(d for d in cell_derived_labels(space, grid) if d.names[0].endswith(LIVE))
    assert live.names == tuple(f"stages.{i}.blocks.0{LIVE}" for i in range(3))
    arch = _rare_reads(space, random.Random(0), {"reduce": [1]})
    assert live.values({x: hashable_value(v) for x, v in arch.items()}) == (
        True,
        False,
        True,
    )  # cell 2 reads 0
    counts = _analysis(space.freeze(arch).eval(), torch.randn(1, 3, 32, 32)).by_module()
    assert counts["stages.1.0"] == 0 and counts["stages.0.0"] > 0 and counts["stages.2.0"] > 0
    arch = _rare_reads(space, random.Random(1), {"reduce": [0, 1]})  # impossible: node 0 reads a predecessor
    assert any(arch[x][0] < 2 for x in arch if x.startswith("reduce/input"))


@pytest.mark.slow
@pytest.mark.parametrize("hub", ["darts", "amoebanet", "pnas"])
def test_macs_equal_fvcore_on_cell_spaces_where_cells_read_rarely(hub):
    """Architectures drawn so that cells skip a predecessor (which kills earlier cells): tables mode stays exact."""
    space = small_hub_space(hub)
    bound = MacsCost(input_shape=(1, 3, 32, 32)).bind(space)
    assert bound.mode == "tables"
    rng = random.Random(2)
    for i in range(24):
        avoid = {"normal": [i % 2], "reduce": [(i // 2) % 2]} if i % 3 else {}
        arch = _rare_reads(space, rng, avoid)
        assert bound.cost(arch) == fvcore_macs(space.freeze(arch), (1, 3, 32, 32)), arch


@pytest.mark.slow
@pytest.mark.parametrize("hub", ["mobilenetv3", "proxylessnas", "shufflenet", "autoformer"])
def test_counts_equal_fvcore_and_numel_on_hub_spaces_at_extreme_depths(hub):
    """Architectures whose Repeat depths are all the least, all the most, or random: the blocks that only the
    largest depth keeps are counted exactly (their tables are masked by whether the block exists)."""
    space = small_hub_space(hub)
    grid = space_grid(space)
    rng = random.Random(5)
    archs = []
    for i in range(12):
        pick = [lambda v: v[0], lambda v: v[-1], rng.choice][i % 3]
        archs.append({x: pick(v) if x.endswith("depth") else rng.choice(v) for x, v in grid.items()})
    for ev in (MacsCost(input_shape=(1, 3, 32, 32)), ParamsCost()):
        bound = ev.bind(space)
        assert bound.mode in ("additive", "tables")
        for arch in archs:
            assert bound.cost(arch) == reference(ev.name, space.freeze(arch), (1, 3, 32, 32)), arch
