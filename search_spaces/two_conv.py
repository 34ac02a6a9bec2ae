"""The hand-designed anchor of Fashion-MNIST's benchmark, as a model space with nothing to choose: "2 Conv <100K
parameters" (zalandoresearch/fashion-mnist's benchmark table, listed at 0.925): conv 5x5 1->32, 2x2 max-pool,
conv 5x5 32->64, 2x2 max-pool, linear to the classes. At 28x28 grey and 10 classes it has 83,466 parameters.

A space, so that ``compare`` retrains it (row ``two-conv``) exactly as it retrains every found architecture, and
the cost evaluators count it the same way."""

from __future__ import annotations

from nni.nas.nn.pytorch import ModelSpace
from torch import nn

__all__ = ["TwoConv"]


class TwoConv(ModelSpace):
    """Two 5x5 convolutions (``same`` padding), each followed by ReLU and a 2x2 max-pool, then one linear layer."""

    def __init__(self, image_size: int = 28, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Linear(64 * side * side, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
