"""The paper's configurations (``nni-bsn search --preset paper-cnf``): its recipe (bsn_reference.md §4), meant for a
GPU and CIFAR-10 on disk, on each of its super networks."""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

_PAPER_RECIPE: dict[str, Any] = {
    "dataset": "cifar10",
    "epochs": 300,
    "batch_size": 64,
    "optimizer": "sgd",
    "learning_rate": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "lr_milestones": (150, 225),
    "arc_optimizer": "sgd",
    "arc_learning_rate": 1e-3,
    "init_keep_prob": 0.95,
}
PRESETS: dict[str, dict[str, Any]] = {
    "paper-cnf": {"space": "cnf", "layers": 8, "channels": 128, **_PAPER_RECIPE},
    "paper-resnet-fabric": {
        "space": "resnet-fabric",
        "units": 3,
        "maps": (16, 32, 64),
        "shortcuts": "slr",
        **_PAPER_RECIPE,
    },
}
