"""The one-shot LightningModule of BSN: one training step = sample -> run the sampled paths -> reward -> update."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from nni.nas.evaluator.pytorch.lightning import LightningModule
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule

from .budget import Budget, CostEvaluationError, budget_penalty, charged_costs, reinforce_loss
from .policy import ArchitectureDistribution
from .selection import Selection, select_architecture

__all__ = ["BSNLightningModule", "split_batch", "CostEvaluationError"]

_logger = logging.getLogger(__name__)

Arch = dict[str, Any]


def split_batch(batch: Any, k: int) -> list[Any]:
    """Split every tensor of a batch (tensor, tuple/list or dict of tensors) into ``k`` chunks along dim 0."""
    if isinstance(batch, torch.Tensor):
        return list(torch.tensor_split(batch, k))
    if isinstance(batch, (tuple, list)):
        parts = [split_batch(b, k) for b in batch]
        return [type(batch)(p[i] for p in parts) for i in range(k)]
    if isinstance(batch, dict):
        parts = {key: split_batch(v, k) for key, v in batch.items()}
        return [{key: p[i] for key, p in parts.items()} for i in range(k)]
    return [batch] * k


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return 1


class BSNLightningModule(BaseOneShotLightningModule):
    """Search logic of :class:`nni_bsn.BSN` (see its docstring for the arguments)."""

    def __init__(
        self,
        training_module: LightningModule,
        distribution: ArchitectureDistribution,
        budgets: Sequence[Budget],
        *,
        num_samples: int = 1,
        lam: float = 1.0,
        penalty: str = "hinge",
        penalty_gradient: str = "local",
        baseline: str = "auto",
        baseline_decay: float = 0.9,
        entropy_coef: float = 0.0,
        warmup_epochs: int = 0,
        arc_optimizer: str = "adam",
        arc_learning_rate: float = 0.05,
        gradient_clip_val: float | None = None,
        prune: Callable[[Arch], Arch] | None = None,
        is_connected: Callable[[Arch], bool] | None = None,
        sensitive: Callable[[Arch], set[str]] | None = None,
        export_samples: int = 1000,
        allow_over_budget: bool = False,
    ):
        super().__init__(training_module)
        self.distribution = distribution
        self.budgets = list(budgets)
        self.num_samples = num_samples
        self.lam, self.penalty, self.penalty_gradient = lam, penalty, penalty_gradient
        self.baseline_mode, self.baseline_decay = baseline, baseline_decay
        self.entropy_coef, self.warmup_epochs = entropy_coef, warmup_epochs
        self.arc_optimizer, self.arc_learning_rate = arc_optimizer, arc_learning_rate
        self.gradient_clip_val = gradient_clip_val
        self.prune_fn, self.connected_fn, self.sensitive_fn = prune, is_connected, sensitive
        self.export_samples, self.allow_over_budget = export_samples, allow_over_budget
        # Moving-average baselines: [0] of the whole reward, [1] of -loss alone (for the gates when their penalty
        # gradient is computed locally); `baseline_ready` says whether each has been initialised.
        self.register_buffer("reward_baseline", torch.zeros(2))
        self.register_buffer("baseline_ready", torch.zeros(2, dtype=torch.bool))
        self.keep_prob_history: list[list[float]] = []
        self.skipped_samples = 0
        self._epoch_sums: dict[str, list[float]] = {}
        self.last_selection: Selection | None = None
        self._modules_cache: list | None = None

    # ----- architecture plumbing -------------------------------------------------------------------------------

    def _supernet_modules(self) -> list:
        if self._modules_cache is None:
            self._modules_cache = list(self.supernet_modules())
        return self._modules_cache

    def apply_arch(self, arch: Arch) -> None:
        """Make the supernet run ``arch`` (only its paths compute)."""
        for m in self._supernet_modules():
            m.resample(memo=arch)

    def prune(self, arch: Arch) -> Arch:
        return self.prune_fn(arch) if self.prune_fn is not None else arch

    def is_connected(self, arch: Arch) -> bool:
        return self.connected_fn(arch) if self.connected_fn is not None else True

    def costs(self, arch: Arch) -> list[float]:
        """Cost of ``arch`` for each budget, as the reward sees it (disconnected: the full super network's)."""
        return charged_costs(arch, self.budgets, self.connected_fn)

    def deterministic_arch(self) -> Arch:
        """Keep-probability > 0.5 (argmax elsewhere), pruned."""
        return self.prune(self.distribution.mode())

    def resample(self) -> Arch:
        arch = self.distribution.sample(1)[0][0]
        self.apply_arch(arch)
        return arch

    def export(self) -> Arch:
        self.last_selection = select_architecture(
            self.distribution, self.budgets, prune=self.prune_fn, is_connected=self.connected_fn,
            n_samples=self.export_samples, allow_over_budget=self.allow_over_budget,
        )
        return self.last_selection.arch

    def export_probs(self) -> dict[str, dict[Any, float]]:
        return self.distribution.probs()

    # ----- optimisation -----------------------------------------------------------------------------------------

    def configure_architecture_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.distribution.parameters())
        if self.arc_optimizer == "adam":
            return torch.optim.Adam(params, lr=self.arc_learning_rate)
        return torch.optim.SGD(params, lr=self.arc_learning_rate)

    def _baseline(self, rewards: torch.Tensor, slot: int) -> torch.Tensor:
        k = rewards.numel()
        if self.baseline_mode in ("auto", "mean") and k > 1:
            return (rewards.sum() - rewards) / (k - 1)  # leave-one-out mean: unbiased
        if not bool(self.baseline_ready[slot]):
            return rewards.mean().expand_as(rewards)
        return self.reward_baseline[slot].expand_as(rewards)

    def _update_ema(self, rewards: torch.Tensor, slot: int) -> None:
        mean = rewards.mean()
        if not bool(self.baseline_ready[slot]):
            self.reward_baseline[slot] = mean
            self.baseline_ready[slot] = True
        else:
            self.reward_baseline[slot] = self.baseline_decay * self.reward_baseline[slot] + (1 - self.baseline_decay) * mean

    def penalty_differences(self, archs: list[Arch], penalties: list[float]) -> torch.Tensor:
        """Per gate, the mean over ``archs`` of penalty(gate on) - penalty(gate off), the rest as sampled.

        The gradient of ``E[penalty]`` for the gate's logit is ``p (1 - p)`` times this (an unbiased, local
        estimate: costs are cheap to evaluate, so each sample is re-costed with every gate flipped). Turning off a
        gate that disconnects the network charges the whole super network, so cutting the network is never cheap.
        """
        limits = [b.limit for b in self.budgets]
        labels = self.distribution.gate_labels
        diff = torch.zeros(len(labels))
        for arch, pen in zip(archs, penalties):
            # Costs are counted on the pruned architecture: a flip that leaves it unchanged changes nothing.
            relevant = self.sensitive_fn(arch) if self.sensitive_fn is not None else None
            for g, label in enumerate(labels):
                if relevant is not None and label not in relevant:
                    continue
                flipped = dict(arch)
                flipped[label] = "off" if arch[label] == "on" else "on"
                other = budget_penalty(self.costs(flipped), limits, self.penalty)
                diff[g] += (pen - other) if arch[label] == "on" else (other - pen)
        return diff / max(len(archs), 1)

    def _arch_step(self, gate_logp: torch.Tensor, choice_logp: torch.Tensor, losses: torch.Tensor,
                   penalties: torch.Tensor, archs: list[Arch]) -> float:
        full_rewards = -(losses + self.lam * penalties)
        if self.penalty_gradient == "local" and self.distribution.gate_labels:
            # Gates: REINFORCE on the loss alone, plus the exact local gradient of lam * E[penalty].
            loss_rewards = -losses
            arch_loss = reinforce_loss(gate_logp, loss_rewards, self._baseline(loss_rewards, 1))
            diff = self.penalty_differences(archs, penalties.tolist())
            arch_loss = arch_loss + self.lam * (torch.sigmoid(self.distribution.gate_logits) * diff).sum()
            if self.distribution.choice_labels:
                arch_loss = arch_loss + reinforce_loss(choice_logp, full_rewards, self._baseline(full_rewards, 0))
            self._update_ema(loss_rewards, 1)
        else:  # the paper's estimator: REINFORCE on the whole budgeted reward
            arch_loss = reinforce_loss(gate_logp + choice_logp, full_rewards, self._baseline(full_rewards, 0))
        if self.entropy_coef:
            arch_loss = arch_loss - self.entropy_coef * self.distribution.entropy()
        params = list(self.distribution.parameters())
        # autograd.grad, not manual_backward: the logits' gradient is averaged across ranks here, so that
        # every rank keeps identical logits (DDP's reducer only sees the weights' backward).
        grads = torch.autograd.grad(arch_loss, params, allow_unused=True)
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        for p, g in zip(params, grads):
            g = torch.zeros_like(p) if g is None else g
            if world > 1:
                dist.all_reduce(g)
                g = g / world
            p.grad = g
        opt = self.architecture_optimizers()
        opt.step()
        opt.zero_grad()
        self._update_ema(full_rewards, 0)
        return float(arch_loss.detach())

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        k = max(1, min(self.num_samples, _batch_size(batch)))
        archs, gate_logp, choice_logp = self.distribution.sample_parts(k)
        chunks = split_batch(batch, k) if k > 1 else [batch]
        losses, sizes, out = [], [], None
        for arch, chunk in zip(archs, chunks):
            # Run the pruned sample: gates on no input -> output path would compute for nothing (or add a
            # constant to the output); what trains is what is costed, validated and exported.
            self.apply_arch(self.prune(arch))
            out = self.training_module.training_step(chunk, batch_idx)
            losses.append(out["loss"] if isinstance(out, dict) else out)
            sizes.append(_batch_size(chunk))
        loss_values = torch.stack([x.detach() for x in losses])
        finite = torch.isfinite(loss_values)
        if not bool(finite.all()):
            self.skipped_samples += int((~finite).sum())
            warnings.warn(f"BSN: skipped {int((~finite).sum())} sampled architecture(s) with a non-finite loss "
                          f"at step {self.global_step}", RuntimeWarning, stacklevel=2)
        if bool(finite.any()):
            n = sum(s for s, f in zip(sizes, finite.tolist()) if f)
            loss = sum(x * (s / n) for x, s, f in zip(losses, sizes, finite.tolist()) if f)
            self.advance_optimization(loss, batch_idx, self.gradient_clip_val)

        if self.trainer.current_epoch >= self.warmup_epochs:
            costs = [self.costs(a) for a in archs]
            penalties = [budget_penalty(c, [b.limit for b in self.budgets], self.penalty) for c in costs]
            keep = [bool(f) and all(math.isfinite(x) for x in c) for f, c in zip(finite.tolist(), costs)]
            if not all(keep) and all(finite.tolist()):
                self.skipped_samples += keep.count(False)
                warnings.warn("BSN: skipped a sampled architecture with a non-finite cost", RuntimeWarning, stacklevel=2)
            if any(keep):
                kept = [i for i, f in enumerate(keep) if f]
                idx = torch.tensor(kept)
                pens = torch.tensor([penalties[i] for i in kept])
                arch_loss = self._arch_step(gate_logp[idx], choice_logp[idx], loss_values[idx], pens,
                                            [archs[i] for i in kept])
                reward = -(loss_values[idx] + self.lam * pens).mean()
                self._accumulate("bsn/reward", float(reward))
                self._accumulate("bsn/arch_loss", arch_loss)
            for j, b in enumerate(self.budgets):
                self._accumulate(f"bsn/cost_{b.name}", sum(c[j] for c in costs) / len(costs))
            self._accumulate("bsn/penalty", sum(penalties) / len(penalties))
            self._accumulate("bsn/connected", sum(map(self.is_connected, archs)) / len(archs))
        self.advance_lr_schedulers(batch_idx)
        return out

    # ----- validation and epoch summaries ------------------------------------------------------------------------

    def _accumulate(self, name: str, value: float) -> None:
        # Per-step search metrics are averaged here and logged (then reset) in on_train_epoch_end: Lightning's
        # self.log costs ~1 ms per call, which on a small network is several percent of a step.
        if math.isfinite(value):
            total = self._epoch_sums.setdefault(name, [0.0, 0])
            total[0] += value
            total[1] += 1

    def on_validation_epoch_start(self) -> None:
        self.apply_arch(self.deterministic_arch())
        self.training_module.on_validation_epoch_start()

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self.training_module.validation_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        probs = self.distribution.keep_probs()
        self.keep_prob_history.append(probs.tolist())
        det = self.deterministic_arch()
        det_costs = [b(det) for b in self.budgets]
        metrics = {
            "bsn/entropy": float(self.distribution.entropy().detach()),
            "bsn/gates_on": float(probs.mean()) if probs.numel() else 0.0,
            "bsn/det_connected": float(self.is_connected(det)),
        }
        for b in self.budgets:
            metrics[f"bsn/budget_{b.name}"] = b.limit
        shown = {f"bsn/det_{b.name}": c for b, c in zip(self.budgets, det_costs)}
        means = {k: total / n for k, (total, n) in self._epoch_sums.items() if n}
        self._epoch_sums = {}
        shown.update({k: v for k, v in means.items() if k.startswith("bsn/cost_")})
        metrics.update({k: v for k, v in means.items() if not k.startswith("bsn/cost_")})
        self.log_dict(metrics, prog_bar=False)
        self.log_dict(shown, prog_bar=True)
        if self.trainer.is_global_zero:
            _logger.info("epoch %d: %s", self.current_epoch,
                         ", ".join(f"{k}={v:.4g}" for k, v in {**shown, **metrics}.items()))
        self.training_module.on_train_epoch_end()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bsn_keep_prob_history"] = self.keep_prob_history
        checkpoint["bsn_skipped_samples"] = self.skipped_samples

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.keep_prob_history = list(checkpoint.get("bsn_keep_prob_history", []))
        self.skipped_samples = int(checkpoint.get("bsn_skipped_samples", 0))
