"""The evaluator's training recipe: NNI's classification module with momentum SGD and a step schedule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nni
import torch
from nni.nas.evaluator.pytorch.lightning import ClassificationModule

__all__ = ["ScheduledClassificationModule"]


@nni.trace
class ScheduledClassificationModule(ClassificationModule):
    """NNI's ``ClassificationModule`` whose optimizer takes a momentum and whose learning rate drops by
    ``gamma`` at each epoch of ``lr_milestones`` (the paper: SGD 0.1, momentum 0.9, x0.1 at epochs 150 and 225).

    Everything else (metrics ``train_acc``/``val_acc``, losses, logging) is NNI's.
    """

    def __init__(self, *, momentum: float = 0.9, lr_milestones: Sequence[int] = (), gamma: float = 0.1,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.momentum, self.lr_milestones, self.gamma = momentum, tuple(lr_milestones), gamma

    def configure_optimizers(self) -> Any:
        options: dict[str, Any] = {"lr": self.hparams.learning_rate, "weight_decay": self.hparams.weight_decay}
        if self.optimizer is torch.optim.SGD:
            options["momentum"] = self.momentum
        optimizer = self.optimizer(self.parameters(), **options)
        if not self.lr_milestones:
            return optimizer
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.lr_milestones), self.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
