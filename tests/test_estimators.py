"""BSN's estimators of the gates' gradient: DisARM's antithetic pairs and the reward on held-out batches."""

from __future__ import annotations

import itertools

import pytest
import torch
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace

from evaluators import MacsCost
from nni_bsn import BSN
from nni_bsn.strategy.lightning import BSNLightningModule
from nni_bsn.strategy.policy import ArchitectureDistribution
from nni_bsn.strategy.reward import disarm_surrogate
from tests.test_bsn_strategy import evaluator, run, small_cnf

_GATES = ("g0", "g1", "g2")


def _distribution(keep: list[float]) -> ArchitectureDistribution:
    from nni.mutable import Categorical

    dist = ArchitectureDistribution({label: Categorical(["off", "on"], label=label) for label in _GATES})
    with torch.no_grad():
        dist.gate_logits.copy_(torch.logit(torch.tensor(keep)))
    return dist


def test_antithetic_pairs_are_each_a_sample_of_the_distribution_and_disagree_as_they_should():
    torch.manual_seed(0)
    keep = [0.9, 0.5, 0.2]
    dist = _distribution(keep)
    archs, gate_logp, _, bits = dist.sample_pairs(20000)
    assert len(archs) == 40000 and bits.shape == (40000, 3)
    assert [a["g0"] == "on" for a in archs[:4]] == bits[:4, 0].bool().tolist()
    for row in (bits[0::2], bits[1::2]):  # both members of the pairs have the distribution's marginals
        assert row.mean(0).tolist() == pytest.approx(keep, abs=0.01)
    disagree = (bits[0::2] != bits[1::2]).float().mean(0)  # P(b1 != b2) = 2 min(p, 1 - p)
    assert disagree.tolist() == pytest.approx([0.2, 1.0, 0.4], abs=0.01)
    assert gate_logp[:2].tolist() == pytest.approx(dist.log_prob(archs[:2]).tolist())


def test_disarm_is_unbiased_for_the_gradient_of_an_expected_value():
    """The mean of DisARM's estimates over many pairs is the exact gradient of E[f(b)], found by enumeration."""
    torch.manual_seed(1)
    keep = [0.8, 0.4, 0.3]

    def f(b: torch.Tensor) -> torch.Tensor:  # any function of the bits: here a non-linear one
        return b[..., 0] * 2.0 - b[..., 1] * b[..., 2] * 3.0 + (b.sum(-1) == 0).float()

    logits = torch.logit(torch.tensor(keep)).requires_grad_()
    exact = torch.zeros(())
    for state in itertools.product([0.0, 1.0], repeat=3):
        b = torch.tensor(state)
        p = torch.sigmoid(logits)
        exact = exact + torch.prod(torch.where(b > 0, p, 1 - p)) * f(b)
    (want,) = torch.autograd.grad(exact, logits)
    _, _, _, bits = _distribution(keep).sample_pairs(200000)
    theta = logits.detach().clone().requires_grad_()
    (got,) = torch.autograd.grad(disarm_surrogate(theta, bits, f(bits)), theta)
    assert (-got).tolist() == pytest.approx(want.tolist(), abs=0.01)  # the surrogate is minimised


def test_disarm_runs_pairs_of_samples_and_moves_the_gates(digits_loaders):
    space = small_cnf()
    strategy = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="40%", estimator="disarm", num_samples=2)
    strategy.mutate_model(space)
    start = strategy.distribution.gate_logits.detach().clone()
    drawn: list[int] = []
    original = strategy.distribution.sample_pairs

    def recording(m=1):
        drawn.append(m)
        return original(m)

    strategy.distribution.sample_pairs = recording
    strategy.mutate_model = lambda model: model  # already mutated above
    strategy(RawFormatModelSpace.from_model(space, evaluator(digits_loaders)), SequentialExecutionEngine())
    assert drawn == [2] * 6  # 6 steps, 2 pairs (4 architectures) each
    assert not torch.equal(strategy.distribution.gate_logits.detach(), start)
    assert strategy.report()["within_budget"] and "estimator='disarm'" in repr(strategy)


def test_the_reward_on_held_out_batches_reads_the_validation_data(digits_loaders, monkeypatch):
    """reward_data='val': each step gets a train and a validation batch; the weights train on the first and the
    distribution's losses are measured on the second, after the weights' step."""
    train, val, _, _ = digits_loaders
    rows = lambda loader: {tuple(x.flatten().tolist()) for xs, _ in loader for x in xs}  # noqa: E731
    val_rows, train_rows = rows(val), rows(train)
    held_out: list[int] = []
    original = BSNLightningModule._held_out_losses

    def recording(self, archs, batch, batch_idx):
        assert {tuple(x.flatten().tolist()) for x in batch[0]} <= val_rows - train_rows
        losses = original(self, archs, batch, batch_idx)
        assert losses.shape == (len(archs),) and torch.isfinite(losses).all()
        held_out.append(len(archs))
        return losses

    monkeypatch.setattr(BSNLightningModule, "_held_out_losses", recording)
    strategy = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="50%", reward_data="val", num_samples=2)
    combined = strategy.train_dataloader(lambda: train, lambda: val)
    assert combined == {"train": train, "val": val}
    assert BSN(cost=lambda a: 1.0, budget=2).train_dataloader(lambda: train, lambda: val) is train
    with pytest.raises(ValueError, match="reward_data='val' needs validation data"):
        strategy.train_dataloader(lambda: train, lambda: None)
    run(strategy, small_cnf(), evaluator(digits_loaders, train_batches=4))
    assert held_out == [2] * 4
    assert strategy.report()["within_budget"]


@pytest.mark.parametrize("same_batch", [False, True])
def test_same_batch_gives_every_sample_of_a_step_the_whole_batch(digits_loaders, monkeypatch, same_batch):
    """same_batch: DisARM's two architectures train and are scored on the same examples (their losses then differ
    by the architectures only); without it each sees its half of the batch."""
    seen: list[list[tuple]] = []
    original = BSNLightningModule._loss

    def recording(self, batch, batch_idx):
        if not seen or len(seen[-1]) == 2:
            seen.append([])
        seen[-1].append(tuple(batch[1].tolist()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(BSNLightningModule, "_loss", recording)
    strategy = BSN(
        cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="50%", estimator="disarm", same_batch=same_batch
    )
    run(strategy, small_cnf(), evaluator(digits_loaders, train_batches=3))
    assert len(seen) == 3 and all(len(step) == 2 for step in seen)
    for first, second in seen:
        if same_batch:
            assert first == second and len(first) == 32  # the whole batch, twice
        else:
            assert len(first) == len(second) == 16
    assert strategy.report()["within_budget"] and f"same_batch={same_batch}" in repr(strategy)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("estimator", "arm", "estimator must be one of"),
        ("reward_data", "test", "reward_data must be one of"),
        ("same_batch", 1, "same_batch must be True or False"),
    ],
)
def test_unknown_estimators_are_refused(option, value, message):
    with pytest.raises(ValueError, match=message):
        BSN(cost=lambda arch: 1.0, budget=2, **{option: value})
