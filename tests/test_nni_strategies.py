"""NNI's own one-shot strategies on our spaces, and the fixes of nni_bsn.compat that they need.

Each of DARTS, GumbelDARTS, ENAS (through TaggedENAS), Proxyless and RandomOneShot runs a short search through
``NasExperiment`` on the digits, on a small CNF and a small ResNet fabric, and exports an architecture that
``space.freeze`` turns into a working model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import pytorch_lightning
import torch
from nni.mutable.symbol import SymbolicExpression
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.experiment import NasExperiment
from nni.nas.profiler import ExpressionProfiler
from nni.nas.space import RawFormatModelSpace
from nni.nas.strategy import DARTS, ENAS, GumbelDARTS, Proxyless, RandomOneShot
from packaging.version import Version
from torch.utils.data import TensorDataset

from nni_bsn import compat
from nni_bsn.compat import (
    DartsWithPenalty,
    ProxylessWithPenalty,
    TaggedENAS,
    apply_filelock_guard,
    live_arch_probs,
    quiet_experiment_config,
)
from search_spaces import ConvolutionalNeuralFabric, ResNetFabric

TRAIN_BATCHES = 4
VAL_BATCHES = 4


def small_space(kind: str):
    if kind == "cnf":
        return ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1, num_classes=10)
    return ResNetFabric(units=2, maps=(4, 8), in_channels=1, num_classes=10)


def classification(train, val, **trainer_kwargs) -> Classification:
    kwargs = dict(max_epochs=1, limit_train_batches=TRAIN_BATCHES, limit_val_batches=VAL_BATCHES)
    kwargs.update(trainer_kwargs)
    return Classification(
        num_classes=10,
        train_dataloaders=train,
        val_dataloaders=val,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


STRATEGIES = {
    "DARTS": DARTS,
    "GumbelDARTS": GumbelDARTS,
    "ENAS": lambda: TaggedENAS(
        reward_metric_name="val_acc",
        batches_per_update=2,
        update_kwargs={"batch_size": 8, "repeat": 1, "update_times": 1},
    ),
    "Proxyless": Proxyless,
    "RandomOneShot": RandomOneShot,
}


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.filterwarnings("ignore:Direct export from RandomOneShot returns an arbitrary:UserWarning")
@pytest.mark.parametrize("space_kind", ["cnf", "resnet"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_nni_strategy_searches_our_space_and_exports_a_working_architecture(
    name, space_kind, digits_loaders, tmp_path, monkeypatch
):
    train, val, _, info = digits_loaders
    policy_updates = []
    if name == "ENAS":
        from tianshou.policy import PPOPolicy

        update = PPOPolicy.update

        def counted_update(self, *args, **kwargs):
            policy_updates.append(1)
            return update(self, *args, **kwargs)

        monkeypatch.setattr(PPOPolicy, "update", counted_update)
    space = small_space(space_kind)
    strategy = STRATEGIES[name]()
    messages = _Messages()
    nni_logger = logging.getLogger("nni")
    nni_logger.addHandler(messages)
    exp = NasExperiment(space, classification(train, val), strategy, config=quiet_experiment_config(tmp_path))
    try:
        exp.run()
        arch = exp.export_top_models(formatter="dict")[0]
    finally:
        exp.stop()
        nni_logger.removeHandler(messages)

    fresh = small_space(space_kind)
    assert set(arch) == set(fresh.gate_labels)
    assert set(arch.values()) <= {"on", "off"}
    model = fresh.freeze(arch)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, info.in_channels, info.image_size, info.image_size))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    # The quiet config: no "training_service will be ignored" noise, experiment files in tmp_path.
    assert not [m for m in messages.messages if "training_service" in m]
    assert (tmp_path / exp.id / "checkpoint").is_dir()
    if name == "ENAS":  # every validation batch gave a reward, and the controller was updated with them
        module = strategy.oneshot_module
        assert module._trajectory_counter == VAL_BATCHES
        assert len(policy_updates) == VAL_BATCHES // 2  # batches_per_update=2


def test_nni_experiment_manifest_goes_to_the_private_test_home():
    # conftest points HOME to a temporary folder before nni is imported: no test writes to the real home.
    from nni.tools.nnictl.constants import NNI_HOME_DIR

    assert "nni-bsn-test-home-" in os.environ["HOME"]
    assert Path(NNI_HOME_DIR).parent == Path(os.environ["HOME"])


@pytest.mark.skipif(
    Version(pytorch_lightning.__version__) < Version("2.1"),
    reason="ENAS works unmodified on pytorch-lightning < 2.1",
)
def test_stock_enas_breaks_on_this_lightning_which_is_why_tagged_enas_exists(digits_loaders):
    train, val, _, _ = digits_loaders
    space = small_space("resnet")
    strategy = ENAS(reward_metric_name="val_acc")
    with pytest.raises(ValueError, match="unpack"):
        strategy(
            RawFormatModelSpace.from_model(space, classification(train, val)), SequentialExecutionEngine()
        )


# ------------------------------------------------------------------------------------------ penalty fix


class GateCount(ExpressionProfiler):
    """Cost = number of 'on' gates, as an NNI expression (what ExpectationProfilerPenalty needs)."""

    def __init__(self, space):
        terms = [
            SymbolicExpression.switch_case(m, {"off": 0.0, "on": 1.0}) for m in space.simplify().values()
        ]
        expression = terms[0]
        for term in terms[1:]:
            expression = expression + term
        self.expression = expression


def _p_on_after_search(strategy_cls, with_penalty: bool) -> torch.Tensor:
    torch.manual_seed(0)
    space = ConvolutionalNeuralFabric(layers=2, channels=2, image_size=4, in_channels=1, num_classes=10)
    data = DataLoader(TensorDataset(torch.randn(64, 1, 4, 4), torch.randint(0, 10, (64,))), batch_size=16)
    kwargs = {"arc_learning_rate": 0.1}
    if with_penalty:
        kwargs["penalty"] = {
            "profiler": GateCount(space),
            "baseline": float(len(space.gate_labels)),
            "scale": 10.0,
        }
    strategy = strategy_cls(**kwargs)
    # Direct strategy call (NNI's documented bypass): no experiment manifest needed for this check.
    strategy(
        RawFormatModelSpace.from_model(
            space, classification(data, data, limit_train_batches=None, limit_val_batches=None)
        ),
        SequentialExecutionEngine(),
    )
    probs = strategy.oneshot_module.export_probs()
    return torch.tensor([probs[label]["on"] for label in space.gate_labels])


@pytest.mark.parametrize(
    "stock, fixed", [(DARTS, DartsWithPenalty), (Proxyless, ProxylessWithPenalty)], ids=["DARTS", "Proxyless"]
)
def test_stock_penalty_is_inert_and_the_fixed_one_moves_alpha(stock, fixed):
    unpenalised = _p_on_after_search(stock, with_penalty=False)
    stock_penalised = _p_on_after_search(stock, with_penalty=True)
    fixed_penalised = _p_on_after_search(fixed, with_penalty=True)
    # NNI 3.0: the penalty sees floats, so alpha ends exactly where it ends without a penalty.
    assert torch.allclose(stock_penalised, unpenalised, atol=1e-6)
    # With live probabilities, a cost on every 'on' gate pushes every gate towards 'off'.
    assert (fixed_penalised < unpenalised).all()
    assert float(fixed_penalised.mean()) < float(unpenalised.mean()) - 0.1


def test_live_arch_probs_match_export_probs_and_carry_gradients(digits_loaders):
    train, val, _, _ = digits_loaders
    space = small_space("cnf")
    strategy = DartsWithPenalty()
    strategy.initialize(
        RawFormatModelSpace.from_model(space, classification(train, val)), SequentialExecutionEngine()
    )
    module = strategy.oneshot_module
    module.set_model(strategy.supernet)
    live, floats = live_arch_probs(module), module.export_probs()
    assert live.keys() == floats.keys() == set(space.gate_labels)
    for label, dist in live.items():
        assert dist.keys() == {"off", "on"}
        assert all(v.requires_grad for v in dist.values())
        assert abs(dist["on"].item() - floats[label]["on"]) < 1e-6


def test_make_differentiable_penalty_leaves_a_module_without_penalty_alone(digits_loaders):
    train, val, _, _ = digits_loaders
    strategy = DARTS()
    strategy.initialize(
        RawFormatModelSpace.from_model(small_space("resnet"), classification(train, val)),
        SequentialExecutionEngine(),
    )
    module = strategy.oneshot_module
    assert compat.make_differentiable_penalty(module) is module and module.penalty is None


# ------------------------------------------------------------------------------------------ filelock guard


def test_filelock_guard_is_not_applied_with_the_pinned_filelock():
    from nni.tools.nnictl import common_utils, config_utils

    assert compat._filelock_version() < compat.FILELOCK_BROKEN_FROM
    before = (config_utils.get_file_lock, common_utils.get_file_lock)
    assert apply_filelock_guard() is False
    assert (config_utils.get_file_lock, common_utils.get_file_lock) == before
    assert before[0] is not compat._os_file_lock


def test_filelock_guard_installs_an_os_lock_that_nni_experiments_can_take(tmp_path, monkeypatch):
    from nni.tools.nnictl import common_utils, config_utils

    monkeypatch.setattr(config_utils, "get_file_lock", config_utils.get_file_lock)
    monkeypatch.setattr(common_utils, "get_file_lock", common_utils.get_file_lock)
    monkeypatch.setattr(compat, "_filelock_version", lambda: Version("3.32.7"))
    assert apply_filelock_guard() is True
    assert config_utils.get_file_lock is compat._os_file_lock is common_utils.get_file_lock
    experiments = config_utils.Experiments(str(tmp_path / "home"))  # takes the lock to read the manifest
    experiments.add_experiment("abcd1234", 8080, 0, "local", "test", tag=[])
    assert "abcd1234" in config_utils.Experiments(str(tmp_path / "home")).get_all_experiments()


def test_quiet_config_is_sequential_raw_and_keeps_files_in_the_given_folder(tmp_path):
    config = quiet_experiment_config(tmp_path / "runs", experiment_name="q")
    assert config.execution_engine.name == "sequential" and config.model_format.name == "raw"
    assert Path(config.experiment_working_directory) == (tmp_path / "runs").resolve()
    assert config.experiment_name == "q"
