"""Building blocks of the fabrics: conv-BN edges, up/down edges, the zero candidate and the gate helper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import LayerChoice
from torch import nn

__all__ = ["ConvBN", "UpConvBN", "Zero", "AddReLU", "gate", "GATE_ON", "GATE_OFF"]

# NNI's binary-gate convention, LayerChoice({'off': ..., 'on': ...}), used here to build gates; evaluators/blocks.py
# spells it again to recognise gates in any NNI space, because the two floors never import each other.
GATE_ON = "on"
GATE_OFF = "off"


class ConvBN(nn.Sequential):
    """``k x k`` convolution followed by batch norm, optionally ReLU (the original code's ``ConvBn``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        relu: bool = False,
        bias: bool = True,
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=False))
        super().__init__(*layers)


class UpConvBN(nn.Module):
    """Nearest-neighbour x2 upsampling then a 3x3 conv-BN: the fabric's *up* edge.

    The conv runs at the upsampled (output) resolution, so it costs four times what the original
    code charged for it (its bug B4): we count what runs.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.conv = ConvBN(in_channels, out_channels, 3, 1, relu=False, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Zero(nn.Module):
    """The 'off' candidate of a gate: zeros with the output shape of the gated op, and no compute.

    ``stride`` shrinks (as a padded 3x3 conv with that stride does), ``upsample`` grows the map.
    Every candidate of a gate must return the same shape: DARTS sums candidates, nodes sum edges.
    """

    def __init__(self, out_channels: int, stride: int = 1, upsample: int = 1):
        super().__init__()
        self.out_channels, self.stride, self.upsample = out_channels, stride, upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.stride > 1:
            h, w = (h - 1) // self.stride + 1, (w - 1) // self.stride + 1
        return x.new_zeros(x.shape[0], self.out_channels, h * self.upsample, w * self.upsample)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, stride={self.stride}, upsample={self.upsample}"


class AddReLU(nn.Module):
    """A fabric node: ReLU of the sum of its inputs."""

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        out = inputs[0]
        for t in inputs[1:]:
            out = out + t
        return F.relu(out)


def gate(op: nn.Module, off: nn.Module, label: str) -> LayerChoice:
    """A binary gate: ``LayerChoice({'off': off, 'on': op})``.

    This is the one form that NNI's DARTS, GumbelDARTS, Proxyless, RandomOneShot and ENAS all accept
    with the meaning "keep or drop this block", and BSN reads it as one Bernoulli variable.
    """
    return LayerChoice({GATE_OFF: off, GATE_ON: op}, label=label)
