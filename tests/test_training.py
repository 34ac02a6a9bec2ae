"""The training recipe behind the CLI and the paper presets."""

from __future__ import annotations

import pytest
import torch

from nni_bsn.cli import build_parser, config_from_args
from nni_bsn.network.training import ScheduledClassificationModule


def test_sgd_gets_momentum_and_the_learning_rate_drops_at_the_milestones():
    module = ScheduledClassificationModule(
        learning_rate=0.1,
        weight_decay=1e-4,
        optimizer=torch.optim.SGD,
        num_classes=10,
        momentum=0.9,
        lr_milestones=(2, 4),
    )
    module.set_model(torch.nn.Linear(4, 10))
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def test_adam_without_milestones_is_nni_default():
    module = ScheduledClassificationModule(learning_rate=1e-3, optimizer=torch.optim.Adam, num_classes=10)
    module.set_model(torch.nn.Linear(4, 10))
    assert isinstance(module.configure_optimizers(), torch.optim.Adam)


def test_paper_presets_set_the_papers_recipe_and_explicit_options_win():
    args = build_parser().parse_args(["search", "--preset", "paper-cnf", "--epochs", "5"])
    cfg = config_from_args(args)
    assert (cfg.space, cfg.layers, cfg.channels, cfg.dataset) == ("cnf", 8, 128, "cifar10")
    assert (cfg.optimizer, cfg.learning_rate, cfg.momentum, cfg.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert tuple(cfg.lr_milestones) == (150, 225) and cfg.batch_size == 64
    assert (cfg.arc_optimizer, cfg.arc_learning_rate) == ("sgd", 1e-3)
    assert cfg.epochs == 5 and cfg.image_size == 32
    cfg = config_from_args(build_parser().parse_args(["search", "--preset", "paper-resnet-fabric"]))
    assert (cfg.space, cfg.units, tuple(cfg.maps), cfg.shortcuts, cfg.epochs) == (
        "resnet-fabric",
        3,
        (16, 32, 64),
        "slr",
        300,
    )
