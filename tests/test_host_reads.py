"""BSN's own part of a training step reads values from the device at most twice (issue 23: on a GPU each read is
a host synchronisation). Counted on the CPU, where the same calls happen: every tensor -> Python conversion
(``item``, ``tolist``, ``bool``, ``float``, ``int``, ``numpy``) made during BSN's ``training_step``, except inside
the plain training it wraps (the evaluator's loss and the weights' optimizer step, which plain training of the
sampled network makes too) and the optimizer's read of its own step counter (a CPU tensor on a GPU too). What
the CPU cannot show, host-to-device copies, go through ``host_to_device`` (pinned, non-blocking on CUDA).

Before this test (the same count): 12 reads a step on a gate space with the defaults, 18-20 on a space of
categorical choices (the distributions' argument checks, the baselines' ``ready`` flag, a read per choice, the
logged loss and reward, the penalties read back); on an H200 the whole step made 57 host syncs, 28 of them plain
training's (benchmarks/RESULTS.md, 12:53 UTC)."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter

import pytest
import torch
from nni.mutable import Categorical
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableConv2d, MutableLinear
from torch import nn

from evaluators import MacsCost
from nni_bsn import BSN
from tests.test_bsn_strategy import evaluator, run, small_cnf

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


def _in_optimizer() -> bool:
    """Whether torch's optimizer is the caller: Adam reads its step counter, a CPU tensor even when the parameters
    are on a GPU (``capturable=False``), so no wait for the device."""
    frame = sys._getframe(2)
    return "torch/optim/" in frame.f_code.co_filename.replace("\\", "/")


class _Counting:
    """Counts tensor reads while ``active`` and not ``paused``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.active = self.paused = False
        self.steps = 0

    @contextlib.contextmanager
    def patched(self):
        originals = {name: getattr(torch.Tensor, name) for name in READS}

        def wrap(name, method):
            def counted(tensor, *args, **kwargs):
                if self.active and not self.paused and not _in_optimizer():
                    self.counts[name] += 1
                return method(tensor, *args, **kwargs)

            return counted

        for name, method in originals.items():
            setattr(torch.Tensor, name, wrap(name, method))
        try:
            yield self
        finally:
            for name, method in originals.items():
                setattr(torch.Tensor, name, method)


def _instrument(module, counting: _Counting) -> None:
    """Count inside BSN's training_step, pause inside the plain training it wraps; skip the first step."""

    def bracket(method, pause: bool):
        def inner(*args, **kwargs):
            before = counting.paused
            counting.paused = pause
            try:
                return method(*args, **kwargs)
            finally:
                counting.paused = before

        return inner

    step = module.training_step

    def training_step(*args, **kwargs):
        counting.active = counting.steps > 0
        try:
            return step(*args, **kwargs)
        finally:
            counting.active = False
            counting.steps += 1

    module.training_step = training_step
    module._loss = bracket(module._loss, True)
    module.advance_optimization = bracket(module.advance_optimization, True)
    module.advance_lr_schedulers = bracket(module.advance_lr_schedulers, True)


class _Choices(ModelSpace):
    """Convolutions of chosen widths and kernels: a space of categorical choices (no gates)."""

    def __init__(self):
        super().__init__()
        width = Categorical([4, 8], label="width")
        self.conv = MutableConv2d(1, width, 3, padding=1)
        self.op = LayerChoice([nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1), nn.Identity()], label="op")
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = MutableLinear(width, 10)

    def forward(self, x):
        return self.head(self.pool(self.op(self.conv(x))))


# DisARM pairs the gates' draws: a space of categorical choices only has none, so it is left out there.
CASES = [
    ("gates", {}),
    ("gates", {"num_samples": 4, "penalty": "abs"}),
    ("gates", {"estimator": "disarm"}),
    ("choices", {}),
    ("choices", {"num_samples": 4, "penalty": "abs"}),
]


@pytest.mark.parametrize(("space_kind", "options"), CASES)
def test_bsn_reads_the_device_at_most_twice_a_step(digits_loaders, space_kind, options):
    space = small_cnf() if space_kind == "gates" else _Choices()
    strategy = BSN(cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="60%", **options)
    counting = _Counting()
    original = strategy.configure_oneshot_module

    def configure(*args, **kwargs):
        module = original(*args, **kwargs)
        _instrument(module, counting)
        return module

    strategy.configure_oneshot_module = configure
    with counting.patched():
        run(strategy, space, evaluator(digits_loaders, max_epochs=1, train_batches=6))
    steps = counting.steps - 1
    assert steps == 5
    per_step = sum(counting.counts.values()) / steps
    assert per_step <= 2, f"{per_step:g} reads a step: {dict(counting.counts)}"
