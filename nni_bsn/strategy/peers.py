"""NNI's own one-shot strategies (DARTS, GumbelDARTS, ENAS, Proxyless, RandomOneShot) on several DDP ranks, made
to agree the way BSN's ranks do (:mod:`nni_bsn.strategy.ranks`), and checked.

Under Lightning DDP, NNI 3.0's strategies can let their ranks drift apart (NNI issue #5013: ranks exporting
different architectures): RandomOneShot draws each path from a ``numpy.random.RandomState()`` seeded from the
operating system, so every rank trains and exports its own architectures (measured: docs/guide/multi-device.md);
ENAS's controller and Proxyless's binary gates draw from each rank's torch generator, so they agree only while every
rank's generator was seeded and drawn alike, and ENAS's controller learns from each rank's own validation accuracy
(equal today only because NNI's ConcatLoader is not sharded). :class:`RankSync`, a Lightning callback given to the
evaluator, applies BSN's scheme to them:

- every rank draws the same architectures: before each batch, the global generators (torch, NumPy, Python) are
  seeded from a seed shared by all ranks (rank 0's, broadcast once) and the step, and RandomOneShot's draws
  (training and export) come from a ``RandomState`` seeded the same way;
- every rank learns the same thing: ENAS's reward is averaged over the ranks before the controller sees it, and
  the architecture parameters' gradients (DARTS, GumbelDARTS, Proxyless) are averaged before each optimizer
  step, as DDP averages the weights' (an average of equal values is unchanged, so nothing is counted twice);
- every rank exports the same architecture: the export draws from the shared seed too.

:func:`peer_agreement` gathers each rank's digests of the architecture parameters (ENAS: the controller's) and of
the exported architecture, as BSN's export does. One process (no DDP): the callback does nothing.
"""

from __future__ import annotations

import random
import types
from typing import Any

import numpy as np
import torch
from pytorch_lightning.callbacks import Callback

from nni_bsn.strategy.ranks import agreement, average_gradients, mean_over_ranks, shared_seed, world_size

__all__ = ["RankSync", "arch_tensors", "peer_agreement", "rank0s"]

_EXPORT_STEP = -1  # the step number the export's draws are seeded with


def arch_tensors(module: Any) -> list[torch.Tensor]:
    """The tensors that decide a strategy's architecture: BSN's logits, the DARTS family's architecture parameters,
    ENAS's controller; none for RandomOneShot."""
    distribution = getattr(module, "distribution", None)
    if distribution is not None:  # BSN
        return list(distribution.parameters())
    policy = getattr(module, "_policy", None)
    if policy is not None:  # ENAS (tianshou's policy holds the controller)
        return list(policy.parameters())
    parameters = getattr(module, "arch_parameters", None)
    if not callable(parameters):
        return []
    # NNI's DARTS family lists them from a set, in an order of its own on each process: in the module's order here.
    ids = {id(p) for p in parameters()}
    return [p for _, p in module.named_parameters() if id(p) in ids]


def peer_agreement(module: Any, arch: dict[str, Any]) -> dict[str, Any]:
    """Whether every rank holds the same architecture tensors and exported ``arch`` (digests gathered from each)."""
    return agreement(arch_tensors(module), arch)


def rank0s(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself outside DDP): what ranks that disagreed evaluate, so that
    they keep running the same work."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class RankSync(Callback):
    """Make NNI's one-shot strategy under DDP sample, learn and export the same on every rank (see the module)."""

    def __init__(self) -> None:
        self.seed: int | None = None
        self.arch: list[torch.Tensor] = []  # the module's architecture tensors, in one order on every rank

    def setup(self, trainer, pl_module, stage: str) -> None:
        if world_size() == 1 or self.seed is not None:
            return
        self.seed = shared_seed(pl_module.device)
        self.arch = arch_tensors(pl_module)  # once: the optimizer steps only look them up
        _patch(pl_module, self)

    def step_seed(self, step: int, draw: int = 0) -> int:
        """The seed of ``draw`` at ``step`` (the same on every rank, and after ``--resume``)."""
        return (self.seed * 1_000_003 + step * 1_009 + draw) % (2**32)

    def seed_globals(self, step: int) -> None:
        seed = self.step_seed(step)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.seed is not None:
            self.seed_globals(trainer.global_step * 7_919 + batch_idx)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.seed is None:
            return
        stepped = {id(p) for g in optimizer.param_groups for p in g["params"]}
        params = [p for p in self.arch if id(p) in stepped and p.grad is not None]
        for p, g in zip(params, average_gradients([p.grad for p in params])):
            p.grad.copy_(g)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.seed is not None:
            self.seed_globals(_EXPORT_STEP)  # ENAS's and Proxyless's export draw from the global generators


def _patch(module: Any, sync: RankSync) -> None:
    """The per-instance fixes: RandomOneShot's draws from a shared seed, ENAS's reward averaged over the ranks."""
    from nni.nas.oneshot.pytorch.sampling import EnasLightningModule, RandomSamplingLightningModule

    if isinstance(module, RandomSamplingLightningModule):
        calls, mutables = {"n": 0}, list(module.model.simplify().values())

        def seeded_sample(step: int) -> dict[str, Any]:
            calls["n"] += 1
            state = np.random.RandomState(sync.step_seed(step, calls["n"]))
            sample: dict[str, Any] = {}
            for mutable in mutables:
                mutable.random(memo=sample, random_state=state)
            return sample

        def resample(self) -> dict[str, Any]:
            sample = seeded_sample(self.trainer.global_step)
            for layer in self.supernet_modules():
                layer.resample(memo=sample)
            return sample

        def export(self) -> dict[str, Any]:
            calls["n"] = 0
            return seeded_sample(_EXPORT_STEP)

        module.resample = types.MethodType(resample, module)
        module.export = types.MethodType(export, module)
    if isinstance(module, EnasLightningModule):
        generator = module.generator
        send_reward = generator.send_reward

        def averaged(reward: float):
            mine = torch.tensor([float(reward)], dtype=torch.float64, device=module.device)
            return send_reward(float(mean_over_ranks(mine)[0]))

        generator.send_reward = averaged
