"""The evaluator's training recipe: NNI's classification module with momentum SGD and a step schedule, a
callback that times the training steps, and the trainer options of a quiet CPU run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import nni
import torch
from nni.nas.evaluator.pytorch.lightning import ClassificationModule
from pytorch_lightning.callbacks import Callback

__all__ = ["QUIET_CPU", "EpochLog", "ScheduledClassificationModule", "StepTimer"]

#: Lightning trainer options of a quiet run on the CPU (compare's rows, tests, benchmarks): no logger, progress
#: bar, checkpoints, model summary or sanity validation.
QUIET_CPU: dict[str, Any] = dict(
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_checkpointing=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


@nni.trace
class ScheduledClassificationModule(ClassificationModule):
    """NNI's ``ClassificationModule`` whose optimizer takes a momentum and whose learning rate drops by
    ``gamma`` at each epoch of ``lr_milestones`` (the paper: SGD 0.1, momentum 0.9, x0.1 at epochs 150 and 225).

    Everything else (metrics ``train_acc``/``val_acc``, losses, logging) is NNI's.
    """

    def __init__(
        self, *, momentum: float = 0.9, lr_milestones: Sequence[int] = (), gamma: float = 0.1, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.momentum, self.lr_milestones, self.gamma = momentum, tuple(lr_milestones), gamma

    def configure_optimizers(self) -> Any:
        options: dict[str, Any] = {
            "lr": self.hparams.learning_rate,
            "weight_decay": self.hparams.weight_decay,
        }
        if self.optimizer is torch.optim.SGD:
            options["momentum"] = self.momentum
        optimizer = self.optimizer(self.parameters(), **options)
        if not self.lr_milestones:
            return optimizer
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.lr_milestones), self.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _final_report(self) -> None:
        if (
            self.trainer.callback_metrics
        ):  # empty when resumed from a checkpoint whose epochs were all trained
            super()._final_report()


class StepTimer(Callback):
    """A Lightning callback recording the wall time of every training step and epoch."""

    def __init__(self):
        self.steps: list[float] = []
        self.epochs: list[float] = []
        self._step_start: float | None = None
        self._epoch_start: float | None = None
        self._fit_start: float | None = None
        #: Training seconds of the interrupted runs this one resumed (read back from the checkpoint).
        self.earlier_seconds = 0.0

    def on_fit_start(self, trainer, pl_module):
        self._fit_start = time.perf_counter()

    def state_dict(self) -> dict[str, float]:
        """Saved in every checkpoint: the training seconds so far, over this run and the ones it resumed."""
        now = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return {"seconds": self.earlier_seconds + now}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.earlier_seconds = float(state_dict.get("seconds", 0.0))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(time.perf_counter() - self._step_start)

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if self._epoch_start is not None:  # not set when a search resumes mid-epoch
            self.epochs.append(time.perf_counter() - self._epoch_start)

    def summary(self) -> dict[str, float | None]:
        """Steps timed, and the median step (ms) and epoch (s)."""
        return {
            "steps": len(self.steps),
            "step_ms_median": round(1000 * statistics.median(self.steps), 3) if self.steps else None,
            "epoch_s_median": round(statistics.median(self.epochs), 3) if self.epochs else None,
        }


class EpochLog(Callback):
    """One line per finished epoch on standard output (``<name>: epoch 3/6, 41 s, train_acc 0.83, val_acc 0.81``),
    so that a long run in a log file shows where it is."""

    def __init__(self, name: str):
        self.name = name
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if not k.startswith("prob/") and torch.as_tensor(v).numel() == 1
        }
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        seconds = time.perf_counter() - self._started
        epoch = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        print(f"{self.name}: {epoch}, {seconds:.0f} s" + (f", {shown}" if shown else ""), flush=True)
