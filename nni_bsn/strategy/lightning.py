"""The one-shot LightningModule of BSN: one training step = sample -> run the sampled paths -> reward -> update."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from nni.nas.evaluator.pytorch.lightning import LightningModule, SupervisedLearningModule
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule

from nni_bsn import compat as _compat  # noqa: F401  (guards NNI's experiment lock)
from nni_bsn.strategy.batches import batch_size, split_batch
from nni_bsn.strategy.budget import Budget, CostEvaluationError, budget_penalty, charged_costs
from nni_bsn.strategy.epoch_means import EpochMeans
from nni_bsn.strategy.evolution import EvolutionSettings, supernet_score
from nni_bsn.strategy.policy import ArchitectureDistribution
from nni_bsn.strategy.ranks import (
    agreement,
    average_gradients,
    mean_over_ranks,
    shared_seed,
    step_generator,
    world_size,
)
from nni_bsn.strategy.reward import (
    Baseline,
    Multiplier,
    architecture_surrogate,
    budgeted_reward,
    host_to_device,
    local_penalty_surrogate,
    penalty_differences,
)
from nni_bsn.strategy.selection import Selection, fill_to_budget, select_architecture, select_with_supernet

__all__ = ["BSNLightningModule", "split_batch", "CostEvaluationError"]

_logger = logging.getLogger(__name__)

Arch = dict[str, Any]


def _upgrade_baselines(state: dict[str, Any]) -> None:
    """Rename, in place, the baselines of a checkpoint written before they were named.

    Those kept both moving averages in one buffer, ``reward_baseline[0]`` (the whole reward) and ``[1]`` (``-loss``,
    for the gates under ``penalty_gradient='local'``), with ``baseline_ready`` beside it.
    """
    old, ready = state.get("reward_baseline"), state.get("baseline_ready")
    if isinstance(old, torch.Tensor) and old.shape == (2,) and isinstance(ready, torch.Tensor):
        del state["reward_baseline"], state["baseline_ready"]
        for i, name in enumerate(("reward_baseline", "loss_baseline")):
            state[f"{name}.value"], state[f"{name}.ready"] = old[i].clone(), ready[i].clone()


class BSNLightningModule(BaseOneShotLightningModule):
    """Search logic of :class:`nni_bsn.BSN` (see its docstring for the arguments, and ``BSN.option_defaults()``
    for their defaults: they have no other home)."""

    def __init__(
        self,
        training_module: LightningModule,
        distribution: ArchitectureDistribution,
        budgets: Sequence[Budget],
        *,
        num_samples: int,
        same_batch: bool,
        estimator: str,
        reward_data: str,
        lam: float,
        penalty: str,
        penalty_gradient: str,
        baseline: str,
        baseline_decay: float,
        entropy_coef: float,
        warmup_epochs: int,
        arc_optimizer: str,
        arc_learning_rate: float,
        gradient_clip_val: float | None,
        export_samples: int,
        select: str,
        allow_over_budget: bool,
        prune: Callable[[Arch], Arch] | None = None,
        is_connected: Callable[[Arch], bool] | None = None,
        graph: Any = None,
    ):
        super().__init__(training_module)
        self.distribution = distribution
        self.budgets = list(budgets)
        self.num_samples, self.estimator, self.reward_data = num_samples, estimator, reward_data
        self.same_batch = same_batch
        self.penalty, self.penalty_gradient = penalty, penalty_gradient
        self.multiplier = Multiplier(lam, learned=penalty == "lagrange")  # the penalty's weight in the reward
        self.entropy_coef, self.warmup_epochs = entropy_coef, warmup_epochs
        self.arc_optimizer, self.arc_learning_rate = arc_optimizer, arc_learning_rate
        self.gradient_clip_val = gradient_clip_val
        self.prune_fn, self.connected_fn, self.graph = prune, is_connected, graph  # graph: a GateGraph
        self.sensitive_fn: Callable[[Arch], set[str]] | None = getattr(graph, "sensitive", None)
        self.export_samples, self.allow_over_budget = export_samples, allow_over_budget
        self.select = select
        self._chosen: Selection | None = None  # select='supernet': chosen when training ends
        # Baselines of the whole reward and of -loss alone (the gates' REINFORCE term when their penalty gradient
        # is computed locally); submodules, so that their moving averages are saved in checkpoints.
        self.reward_baseline = Baseline(baseline, baseline_decay)
        self.loss_baseline = Baseline(baseline, baseline_decay)
        self.keep_prob_history: list[list[float]] = []
        self.skipped_samples = 0
        self._epoch_means = EpochMeans()
        self.last_selection: Selection | None = None
        self.rank_agreement: dict[str, Any] | None = None  # set by export (nni_bsn.strategy.ranks)
        self._modules_cache: list | None = None
        # Under DDP: the ranks' shared sampling seed and the generator reseeded from it each step.
        self._generator: tuple[int, torch.Generator] | None = None

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

    def on_train_end(self) -> None:
        if self.select != "supernet":
            return
        settings = EvolutionSettings()
        score = supernet_score(self, settings)
        try:
            self._chosen = select_with_supernet(
                self.distribution,
                self.budgets,
                score,
                settings,
                prune=self.prune_fn,
                is_connected=self.connected_fn,
            )
        finally:
            score.restore()

    def export(self) -> Arch:
        """The chosen architecture; under DDP the ranks check they agree on it and the logits (``rank_agreement``)."""
        arch = self._export()
        self.rank_agreement = agreement(list(self.distribution.parameters()), arch)
        if not self.rank_agreement["agreed"]:
            warnings.warn(f"BSN: the DDP ranks disagree: {self.rank_agreement}", RuntimeWarning, stacklevel=2)
        return arch

    def _export(self) -> Arch:
        if self.select == "supernet" and self._chosen is None:
            self.on_train_end()  # resumed from a checkpoint whose epochs were all trained: Lightning ran no hook
        if self._chosen is not None:
            self.last_selection = self._chosen
            return self._chosen.arch
        paths = {"prune": self.prune_fn, "is_connected": self.connected_fn}
        chosen = select_architecture(
            self.distribution,
            self.budgets,
            n_samples=self.export_samples,
            allow_over_budget=self.allow_over_budget,
            **paths,
        )
        if self.select == "filled":
            chosen = fill_to_budget(chosen, self.distribution, self.budgets, graph=self.graph, **paths)
        self.last_selection = chosen
        return chosen.arch

    def export_probs(self) -> dict[str, dict[Any, float]]:
        return self.distribution.probs()

    # ----- optimisation -----------------------------------------------------------------------------------------

    def configure_architecture_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.distribution.parameters())
        if self.arc_optimizer == "adam":
            return torch.optim.Adam(params, lr=self.arc_learning_rate)
        return torch.optim.SGD(params, lr=self.arc_learning_rate)

    def penalty_differences(self, archs: list[Arch], penalties: list[float]) -> torch.Tensor:
        """Per gate, the mean over ``archs`` of penalty(gate on) - penalty(gate off) (:func:`penalty_differences`).

        Costs are counted on the pruned architecture: a flip that leaves it unchanged changes nothing, so only the
        gates that ``sensitive`` names are re-costed.
        """
        limits = [b.limit for b in self.budgets]

        def penalty_of(arch: Arch) -> float:
            return budget_penalty(self.costs(arch), limits, self.penalty)

        return penalty_differences(
            archs, penalties, self.distribution.gate_labels, penalty_of, self.sensitive_fn
        )

    def _arch_step(
        self,
        gate_logp: torch.Tensor,
        choice_logp: torch.Tensor,
        losses: torch.Tensor,
        penalties: list[float],
        archs: list[Arch],
        bits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One update of the distribution on the step's kept samples (``bits``: DisARM's antithetic pairs);
        returns the surrogate loss and the rewards (on the device: nothing here waits for it)."""
        distribution = self.distribution
        local = self.penalty_gradient == "local" and bool(distribution.gate_labels)
        local_penalty = None
        host_penalties, penalties = penalties, host_to_device(penalties, losses.device)
        if local:  # the exact local gradient of lam * E[penalty] for the gates
            diff = self.penalty_differences(archs, host_penalties)
            local_penalty = local_penalty_surrogate(distribution.gate_logits, diff, self.multiplier.value)
        arch_loss = architecture_surrogate(
            gate_logp,
            choice_logp,
            losses,
            penalties,
            lam=self.multiplier.value,
            reward_baseline=self.reward_baseline,
            loss_baseline=self.loss_baseline,
            local_penalty=local_penalty,
            with_choices=bool(distribution.choice_labels),
            pairs=None if bits is None or not distribution.gate_labels else (distribution.gate_logits, bits),
        )
        if self.entropy_coef:
            arch_loss = arch_loss - self.entropy_coef * distribution.entropy()
        self._step_distribution(arch_loss)
        rewards = budgeted_reward(losses, penalties, self.multiplier.value)
        self.multiplier.update(host_penalties)
        if local:
            self.loss_baseline.update(budgeted_reward(losses))
        self.reward_baseline.update(rewards)
        return arch_loss.detach(), rewards

    def _step_distribution(self, arch_loss: torch.Tensor) -> None:
        """Gradient of ``arch_loss`` for the logits, averaged over the ranks, then one step of their optimizer."""
        params = list(self.distribution.parameters())
        # autograd.grad, not manual_backward: the logits' gradient is averaged across ranks here, so that
        # every rank keeps identical logits (DDP's reducer only sees the weights' backward).
        grads = torch.autograd.grad(arch_loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        for p, g in zip(params, average_gradients(grads)):  # one all-reduce under DDP
            p.grad = g
        opt = self.architecture_optimizers()
        opt.step()
        opt.zero_grad()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        # reward_data='val': the strategy's loader gives {'train': ..., 'val': ...} (NNI's DARTS's arrangement).
        train, held_out = (batch["train"], batch["val"]) if self.reward_data == "val" else (batch, None)
        archs, gate_logp, choice_logp, bits = self._sample(batch_size(train))
        losses, out, finite = self._train_weights(archs, train, batch_idx)
        if self.trainer.current_epoch >= self.warmup_epochs:
            if held_out is not None:
                losses, finite = self._held_out_losses(archs, held_out, batch_idx), None
            if world_size() > 1:  # the same samples on every rank: each scored them on its shard
                losses, finite = mean_over_ranks(losses), None
            self._search_step(archs, gate_logp, choice_logp, bits, losses, finite)
        self.advance_lr_schedulers(batch_idx)
        return out

    def _sample(self, batch_size: int) -> tuple[list[Arch], torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The step's architectures, their gates' and choices' log-probabilities, and DisARM's pair bits; under
        DDP the same on every rank (:mod:`nni_bsn.strategy.ranks`)."""
        gen = self._step_generator()
        shared = () if gen is None else (gen,)  # one process: the distribution's own draws, as before
        if self.estimator == "disarm":
            return self.distribution.sample_pairs(max(1, min(self.num_samples, batch_size // 2)), *shared)
        return (*self.distribution.sample_parts(max(1, min(self.num_samples, batch_size)), *shared), None)

    def _step_generator(self) -> torch.Generator | None:
        """Under DDP, the generator of this step's samples, seeded alike on every rank; None in one process."""
        if world_size() == 1:
            return None
        if self._generator is None:
            device = self.distribution.gate_logits.device
            self._generator = (shared_seed(device), torch.Generator(device=device))
        seed, generator = self._generator
        return step_generator(generator, seed, self.trainer.global_step)

    def _chunks(self, batch: Any, k: int) -> list[Any]:
        """What each of the step's ``k`` architectures sees: its share of the batch, or all of it (``same_batch``)."""
        return [batch] * k if self.same_batch else split_batch(batch, k)

    def _loss(self, batch: Any, batch_idx: int) -> torch.Tensor:
        out = self.training_module.training_step(batch, batch_idx)
        return out["loss"] if isinstance(out, dict) else out

    def _train_weights(
        self, archs: list[Arch], batch: Any, batch_idx: int
    ) -> tuple[torch.Tensor, Any, list[bool]]:
        """One step of the weights on the batch split between ``archs`` (each on all of it with ``same_batch``); the
        (detached) loss of each sample, the last sample's output, and which losses are finite (the one read from the
        device this needs)."""
        chunks = self._chunks(batch, len(archs))
        losses, sizes = [], []
        for arch, chunk in zip(archs, chunks):
            # Run the pruned sample: gates on no input -> output path would compute for nothing (or add a
            # constant to the output); what trains is what is costed, validated and exported.
            self.apply_arch(self.prune(arch))
            losses.append(self._loss(chunk, batch_idx))
            sizes.append(batch_size(chunk))
        values = torch.stack([x.detach() for x in losses])
        finite = torch.isfinite(values).tolist()
        if not all(finite):
            self.skipped_samples += finite.count(False)
            warnings.warn(
                f"BSN: skipped {finite.count(False)} sampled architecture(s) with a non-finite loss "
                f"at step {self.global_step}",
                RuntimeWarning,
                stacklevel=3,
            )
        if any(finite):
            n = sum(s for s, f in zip(sizes, finite) if f)
            loss = sum(x * (s / n) for x, s, f in zip(losses, sizes, finite) if f)
            self.advance_optimization(loss, batch_idx, self.gradient_clip_val)
        return values, values[-1], finite

    @torch.no_grad()
    def _held_out_losses(self, archs: list[Arch], batch: Any, batch_idx: int) -> torch.Tensor:
        """The loss of each architecture on its chunk of a held-out batch, after the weights' step."""
        module = self.training_module
        chunks = self._chunks(batch, len(archs))
        losses = []
        for arch, chunk in zip(archs, chunks):
            self.apply_arch(self.prune(arch))
            if isinstance(module, SupervisedLearningModule):  # not training_step: it would log train metrics
                x, y = chunk
                losses.append(module.criterion(module(x), y))
            else:
                losses.append(self._loss(chunk, batch_idx))
        return torch.stack(losses)

    def _search_step(
        self,
        archs: list[Arch],
        gate_logp: torch.Tensor,
        choice_logp: torch.Tensor,
        bits: torch.Tensor | None,
        losses: torch.Tensor,
        finite: list[bool] | None = None,
    ) -> None:
        """Cost the step's samples and update the distribution on those with a finite loss and cost (``finite``:
        which losses are, when already read)."""
        costs = [self.costs(a) for a in archs]
        penalties = [budget_penalty(c, [b.limit for b in self.budgets], self.penalty) for c in costs]
        finite = torch.isfinite(losses).tolist() if finite is None else finite
        keep = [f and all(math.isfinite(x) for x in c) for f, c in zip(finite, costs)]
        if not all(keep) and all(finite):
            self.skipped_samples += keep.count(False)
            warnings.warn(
                "BSN: skipped a sampled architecture with a non-finite cost", RuntimeWarning, stacklevel=3
            )
        if bits is not None:  # DisARM: a pair is used whole or not at all
            keep = [keep[i] and keep[i ^ 1] for i in range(len(keep))]
        if any(keep):
            kept = [i for i, f in enumerate(keep) if f]
            if len(kept) < len(keep):  # the usual step keeps every sample: no indexing on the device
                idx = host_to_device(kept, losses.device, torch.long)
                gate_logp, choice_logp, losses = gate_logp[idx], choice_logp[idx], losses[idx]
                bits = None if bits is None else bits[idx]
            arch_loss, rewards = self._arch_step(
                gate_logp,
                choice_logp,
                losses,
                [penalties[i] for i in kept],
                [archs[i] for i in kept],
                bits,
            )
            self._epoch_means.add("bsn/reward", rewards.mean())
            self._epoch_means.add("bsn/arch_loss", arch_loss)
            self._epoch_means.add("bsn/multiplier", self.multiplier.value)
        for j, b in enumerate(self.budgets):
            self._epoch_means.add(f"bsn/cost_{b.name}", sum(c[j] for c in costs) / len(costs))
        self._epoch_means.add("bsn/penalty", sum(penalties) / len(penalties))
        self._epoch_means.add("bsn/connected", sum(map(self.is_connected, archs)) / len(archs))

    # ----- validation and epoch summaries ------------------------------------------------------------------------

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
        means = self._epoch_means.pop()
        shown.update({k: v for k, v in means.items() if k.startswith("bsn/cost_")})
        metrics.update({k: v for k, v in means.items() if not k.startswith("bsn/cost_")})
        self.log_dict(metrics, prog_bar=False)
        self.log_dict(shown, prog_bar=True)
        if self.trainer.is_global_zero:
            _logger.info(
                "epoch %d: %s",
                self.current_epoch,
                ", ".join(f"{k}={v:.4g}" for k, v in {**shown, **metrics}.items()),
            )
        self.training_module.on_train_epoch_end()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bsn_keep_prob_history"] = self.keep_prob_history
        checkpoint["bsn_skipped_samples"] = self.skipped_samples

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        _upgrade_baselines(state)
        # a checkpoint written before the multiplier existed: the penalty's weight was lam
        state.setdefault("multiplier.value", self.multiplier.value.detach().clone())
        self.keep_prob_history = list(checkpoint.get("bsn_keep_prob_history", []))
        self.skipped_samples = int(checkpoint.get("bsn_skipped_samples", 0))
