"""How good a found network is: BatchNorm statistics re-estimated for it, top-1 accuracy, optional fine-tuning."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "recalibrate_batchnorm",
    "evaluate_accuracy",
    "accuracy_counts",
    "finetune",
    "input_reaches_output",
]


def recalibrate_batchnorm(model: nn.Module, loader, batches: int = 20) -> None:
    """Re-estimate BatchNorm statistics of an exported sub-network on training batches.

    The super network's running statistics mix every sampled architecture; the exported one needs its own.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the recalibration batches
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x)
    model.eval()


def input_reaches_output(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether ``model``'s output depends on its input: two random inputs (fixed seed, eval mode) give different
    outputs. A space without gates can still cut every path, e.g. NasBench201 with ``'none'`` on every edge into a
    cell's output, whose network predicts one class whatever it is shown."""
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = model(torch.randn(2, *input_shape[1:]))
    return not torch.allclose(out[0], out[1])


def evaluate_accuracy(model: nn.Module, loader) -> float:
    """Top-1 accuracy of ``model`` on ``loader``."""
    correct, seen = accuracy_counts(model, loader).tolist()
    return correct / max(seen, 1.0)


def accuracy_counts(model: nn.Module, loader) -> torch.Tensor:
    """Top-1 correct and seen examples of ``model`` (in eval mode) on ``loader``, as a float64 tensor ``[2]`` on the
    batches' device: summed there, read by the host once, and summable over the ranks of a DDP run."""
    model.eval()
    counts = None
    with torch.no_grad():
        for x, y in loader:
            if counts is None:
                counts = torch.zeros(2, dtype=torch.float64, device=y.device)
            counts[0] += (model(x).argmax(-1) == y).sum()
            counts[1] += y.numel()
    return counts if counts is not None else torch.zeros(2, dtype=torch.float64)


def finetune(
    model: nn.Module,
    train,
    val,
    num_classes: int,
    epochs: int,
    *,
    learning_rate: float,
    weight_decay: float,
    accelerator: str = "cpu",
) -> nn.Module:
    """Train ``model`` further for ``epochs`` with NNI's classification recipe; returns it."""
    from nni.nas.evaluator.pytorch import Classification

    from nni_bsn.network.training import quiet_trainer_options

    ev = Classification(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        train_dataloaders=train,
        val_dataloaders=val,
        num_classes=num_classes,
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        **quiet_trainer_options("nni-bsn: fine-tuning"),
    )
    ev.fit(model)
    return model
