"""The evaluator's training recipe: NNI's classification module with momentum SGD and a step schedule, a
callback that times the training steps, the progress a run shows (a bar on a terminal, one line per epoch
elsewhere), and the trainer options of a quiet CPU run."""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import nni
import torch
from nni.nas.evaluator.pytorch.lightning import ClassificationModule
from pytorch_lightning.callbacks import Callback, TQDMProgressBar

__all__ = [
    "QUIET_CPU",
    "EpochLog",
    "ScheduledClassificationModule",
    "StderrProgressBar",
    "StepTimer",
    "epoch_figures",
    "progress_options",
    "quiet_trainer_options",
]

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
        # callback_metrics is empty when resumed from a checkpoint whose epochs were all trained: nothing to report
        if self.trainer.callback_metrics:
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
    """One line per finished epoch on standard error, for a log file or a pipe where a progress bar would write
    carriage returns: ``nni-bsn: epoch 3/10: train_loss 0.41, val_acc 0.88, 42 s`` (with BSN's expected cost
    against its budget and the gates kept with probability above 0.5).

    The line of an epoch is written when the next one starts (or training ends): the module logs its epoch-end
    metrics (BSN's costs) after the callbacks' ``on_train_epoch_end`` hooks have run.
    """

    def __init__(self, prefix: str = "nni-bsn", stream: TextIO | None = None):
        self.prefix = prefix
        self.stream = stream
        self._started = time.perf_counter()
        self._finished: tuple[int, float] | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._finished = (trainer.current_epoch + 1, time.perf_counter() - self._started)

    def on_train_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)

    def _write(self, trainer, pl_module) -> None:
        if self._finished is None or not trainer.is_global_zero:
            return
        epoch, seconds = self._finished
        self._finished = None
        shown = epoch_figures(trainer.callback_metrics, getattr(pl_module, "distribution", None))
        line = f"{self.prefix}: epoch {epoch}/{trainer.max_epochs}: {', '.join([*shown, f'{seconds:.0f} s'])}"
        print(line, file=self.stream or sys.stderr, flush=True)


def epoch_figures(metrics: dict[str, Any], distribution=None) -> list[str]:
    """An epoch's figures as ``name value`` strings: losses and accuracies, BSN's expected cost per budget, and
    how many gates a BSN ``distribution`` keeps with probability above 0.5."""
    values = {k: float(v) for k, v in metrics.items() if v is not None and torch.as_tensor(v).numel() == 1}
    shown = [
        f"{k} {values[k]:.3g}" for k in ("train_loss", "train_acc", "val_loss", "val_acc") if k in values
    ]
    for name, cost in sorted(
        (k.removeprefix("bsn/cost_"), v) for k, v in values.items() if k.startswith("bsn/cost_")
    ):
        budget = values.get(f"bsn/budget_{name}")
        shown.append(
            f"expected {name} {cost:.4g}" + (f" (budget {budget:.4g})" if budget is not None else "")
        )
    if distribution is not None and hasattr(distribution, "keep_probs"):
        probs = distribution.keep_probs()
        if probs.numel():
            shown.append(f"gates > 0.5: {int((probs > 0.5).sum())}/{probs.numel()}")
    return shown


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bar on standard error, where every progress line goes; standard output keeps the
    results (its bars are made with ``file=sys.stdout``, read when each is made)."""

    def init_train_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_sanity_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()


def progress_options(
    prefix: str = "nni-bsn", callbacks: Sequence[Callback] = (), stream=None
) -> dict[str, Any]:
    """Trainer options for progress that fits where it goes: Lightning's bar when standard error is a terminal,
    else one :class:`EpochLog` line per epoch (no carriage returns in log files)."""
    stream = stream or sys.stderr
    on_terminal = hasattr(stream, "isatty") and stream.isatty()
    shown = StderrProgressBar() if on_terminal else EpochLog(prefix, stream)
    return {"enable_progress_bar": on_terminal, "callbacks": [*callbacks, shown]}


def quiet_trainer_options(prefix: str = "nni-bsn") -> dict[str, Any]:
    """Trainer options (``Classification(..., **quiet_trainer_options())``) for a search from Python that writes
    nothing into the current folder (no ``lightning_logs/``, no ``checkpoints/``), prints no model summary or
    sanity check, and shows its progress as :func:`progress_options` does."""
    quiet = {k: v for k, v in QUIET_CPU.items() if k != "accelerator"}  # the caller's device
    return {**quiet, **progress_options(prefix)}
