"""The budgeted reward of BSN and the estimators of its gradient for the architecture distribution.

Small pure functions on small tensors, called by :meth:`BSNLightningModule._arch_step` and by the tests:
the reward ``-(loss + lam * penalty)``, the REINFORCE surrogate, the exact local gradient of the expected
penalty for the gates, DisARM's antithetic estimate for them, and the moving-average :class:`Baseline`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from evaluators.blocks import GATE_OFF, GATE_ON
from nni_bsn.strategy.names import BASELINES

__all__ = [
    "BASELINES",
    "Baseline",
    "DUAL_STEP",
    "Multiplier",
    "host_to_device",
    "architecture_surrogate",
    "budgeted_reward",
    "disarm_surrogate",
    "local_penalty_surrogate",
    "penalty_differences",
    "reinforce_loss",
]


Arch = dict[str, Any]


def budgeted_reward(
    losses: torch.Tensor, penalties: torch.Tensor | float = 0.0, lam: float = 0.0
) -> torch.Tensor:
    """The reward of each sampled architecture, ``-(loss + lam * penalty)``; ``-loss`` with the defaults."""
    return -(losses + lam * penalties)


def host_to_device(
    values: Any, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Values computed on the host (a list or a CPU tensor) as a tensor on ``device``, without making the host
    wait for the device: a pinned, non-blocking copy on CUDA (a pageable copy synchronises)."""
    t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def reinforce_loss(logp: torch.Tensor, rewards: torch.Tensor, baseline: torch.Tensor | float) -> torch.Tensor:
    """Surrogate loss whose gradient is the REINFORCE estimate of the gradient of ``-E[reward]``.

    ``logp``: ``[k]`` log-probabilities of the sampled architectures (differentiable);
    ``rewards`` and ``baseline``: constants (no gradient flows through them).
    """
    advantage = (rewards - baseline).detach()
    return -(advantage * logp).mean()


def local_penalty_surrogate(gate_logits: torch.Tensor, differences: torch.Tensor, lam: float) -> torch.Tensor:
    """Surrogate whose gradient for each gate's logit is the local estimate of ``lam * d E[penalty] / d logit``.

    ``differences`` are :func:`penalty_differences` (constants): the gradient of ``sigmoid(logit) * diff`` is
    ``p (1 - p) diff``, the derivative of the expected penalty for a factorised Bernoulli.
    """
    return lam * (torch.sigmoid(gate_logits) * host_to_device(differences, gate_logits.device)).sum()


def penalty_differences(
    archs: Sequence[Mapping[str, Any]],
    penalties: Sequence[float],
    gate_labels: Sequence[str],
    penalty_of: Callable[[Arch], float],
    sensitive: Callable[[Arch], set[str]] | None = None,
) -> torch.Tensor:
    """Per gate, the mean over ``archs`` of penalty(gate on) - penalty(gate off), the rest as sampled.

    ``penalties`` are those of ``archs`` as sampled; ``penalty_of`` charges a flipped architecture the way the
    reward does (turning off a gate that disconnects the network charges the whole super network, so cutting the
    network is never cheap). ``sensitive(arch)``, when given, names the gates whose flip can change the pruned
    architecture; the others are skipped (their difference is 0).
    """
    diff = torch.zeros(len(gate_labels))
    for arch, pen in zip(archs, penalties):
        relevant = sensitive(arch) if sensitive is not None else None
        for g, label in enumerate(gate_labels):
            if relevant is not None and label not in relevant:
                continue
            on = arch[label] == GATE_ON
            other = penalty_of({**arch, label: GATE_OFF if on else GATE_ON})
            diff[g] += (pen - other) if on else (other - pen)
    return diff / max(len(archs), 1)


class Baseline(nn.Module):
    """The baseline subtracted from the rewards: leave-one-out mean or a moving average of past rewards.

    ``mode`` ``'auto'`` and ``'mean'`` use the leave-one-out mean of the step's rewards when there are several,
    else the moving average; ``'ema'`` always uses the moving average (decay ``decay``). The moving average lives
    in buffers (``value``, ``ready``), so checkpoints restore it.
    """

    def __init__(self, mode: str = "auto", decay: float = 0.9):
        super().__init__()
        if mode not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {mode!r}")
        self.mode, self.decay = mode, decay
        self.register_buffer("value", torch.zeros(()))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    def of(self, rewards: torch.Tensor) -> torch.Tensor:
        """The baseline of each reward of one step (``[k]``); does not update the moving average."""
        k = rewards.numel()
        if self.mode in ("auto", "mean") and k > 1:
            return (rewards.sum() - rewards) / (k - 1)  # leave-one-out mean: unbiased
        # torch.where, not an if: reading ``ready`` would make the host wait for the device
        return torch.where(self.ready, self.value, rewards.mean()).expand_as(rewards)

    @torch.no_grad()
    def update(self, rewards: torch.Tensor) -> None:
        """Fold the mean of one step's rewards into the moving average (the first step sets it)."""
        mean = rewards.mean()
        self.value.copy_(torch.where(self.ready, self.decay * self.value + (1 - self.decay) * mean, mean))
        self.ready.fill_(True)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, decay={self.decay}"


def disarm_surrogate(gate_logits: torch.Tensor, bits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Surrogate whose gradient for the gates' logits is the DisARM estimate of ``-d E[value] / d logit``.

    DisARM (Dong, Mnih and Tucker, NeurIPS 2020), for factorised Bernoulli gates: ``bits`` are antithetic
    pairs (rows ``2j``, ``2j + 1``, :meth:`ArchitectureDistribution.sample_pairs`) and ``values`` what each
    sample scored (constants). Per pair and gate the estimate is ``(f1 - f2) / 2 * (-1)^b2 * [b1 != b2] *
    sigmoid(|logit|)``: unbiased, with no baseline to learn, and zero for the gates on which the pair agrees.
    """
    b1, b2 = bits[0::2], bits[1::2]
    half_diff = 0.5 * (values[0::2] - values[1::2]).detach()[:, None]
    weight = half_diff * (1 - 2 * b2) * (b1 != b2) * torch.sigmoid(gate_logits.detach().abs())
    return -(weight.mean(0) * gate_logits).sum()


def architecture_surrogate(
    gate_logp: torch.Tensor,
    choice_logp: torch.Tensor,
    losses: torch.Tensor,
    penalties: torch.Tensor,
    *,
    lam: float,
    reward_baseline: Baseline,
    loss_baseline: Baseline,
    local_penalty: torch.Tensor | None = None,
    with_choices: bool = True,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The loss of the architecture distribution for one step; its gradient estimates that of ``-E[reward]``.

    Without ``local_penalty`` (the paper's estimator): REINFORCE on the whole budgeted reward. With it
    (``penalty_gradient='local'``, :func:`local_penalty_surrogate`): the gates follow the loss alone (baseline
    ``loss_baseline``) plus ``local_penalty``. ``pairs`` (the gates' logits and the samples' antithetic bits):
    the gates follow DisARM (:func:`disarm_surrogate`) instead of REINFORCE. The other choices (when
    ``with_choices``) follow REINFORCE on the whole reward. Baselines are read, not updated.
    """
    rewards = budgeted_reward(losses, penalties, lam)
    gate_values, gate_baseline = (
        (rewards, reward_baseline) if local_penalty is None else (-losses, loss_baseline)
    )
    if pairs is None:
        surrogate = reinforce_loss(gate_logp, gate_values, gate_baseline.of(gate_values))
    else:
        surrogate = disarm_surrogate(*pairs, gate_values)
    if local_penalty is not None:
        surrogate = surrogate + local_penalty
    if with_choices:
        surrogate = surrogate + reinforce_loss(choice_logp, rewards, reward_baseline.of(rewards))
    return surrogate


#: The learned multiplier's step per unit of the step's mean relative excess (``penalty='lagrange'``).
DUAL_STEP = 0.01


class Multiplier(nn.Module):
    """The penalty's weight in the reward: ``lam`` for ``'hinge'`` and ``'abs'``; for ``'lagrange'`` a Lagrange
    multiplier of the constraint ``E[C] = B`` learned by dual ascent, from 0, within ``[-lam, lam]``: after each step
    it moves by ``DUAL_STEP`` times the step's mean ``C/B - 1``, so it rises (a price) while the samples exceed the
    budget and falls, below 0 (a subsidy), while they are under it: the search spends its budget, as with ``'abs'``.

    A linear penalty charges each gate its own cost at one price whatever the rest of the sample, so the loss decides
    which gates are worth it; ``'abs'``'s kink at the budget instead pushes a gate towards the state it is already
    in, the harder the dearer it is (docs/diagnosis.md). The value is a buffer on the module's device (the host
    never reads it on the step path) and is saved in checkpoints.
    """

    def __init__(self, lam: float, learned: bool):
        super().__init__()
        self.learned, self.cap = learned, float(lam)
        self.register_buffer("value", torch.tensor(0.0 if learned else float(lam)))

    def update(self, penalties: Sequence[float]) -> None:
        """One dual-ascent step on the step's penalties (host floats: ``C/B - 1`` summed over the budgets)."""
        if self.learned and penalties:
            self.value.add_(DUAL_STEP * sum(penalties) / len(penalties)).clamp_(-self.cap, self.cap)
