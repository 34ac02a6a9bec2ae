"""CIFAR ResNets and the ResNet fabric (BSN's B-ResNet super network).

``ResNetFabric(units=3, shortcuts='')`` is the plain CIFAR ResNet-20 (He et al. 2016, 6*units+2 layers, projection
shortcuts where the shape changes) with every residual branch gated. ``shortcuts='slr'`` adds the original code's
fabric: each unit ``n`` of stage ``b >= 1`` also sums extra residual blocks fed by units of stage ``b - 1``:

- ``'s'``: from unit ``W - 2 - n`` of the previous stage;
- ``'l'``: from unit ``W - 1 - n`` (not for ``n = 0``);
- ``'r'``: from unit ``W - 3 - n`` (not for ``n = W - 1``);

where unit ``-1`` means the previous stage's input. A shortcut block is a BasicBlock plus its 1x1 projection,
strided by the resolution ratio (2, or 4 from a stage input two stages back).

Gated: residual branches and shortcut blocks. Not gated: the stem, identity and projection skips of the main
path, and the classifier. The original code put a gate on every node, stem and classifier included, so about
half of its initial architectures could not reach the output; here every architecture is connected.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from .gate_graph import GateGraph
from .ops import ConvBN, Zero, gate

__all__ = ["ResNetFabric", "BasicBlock", "ShortcutBlock"]


class BasicBlock(nn.Module):
    """The residual branch: 3x3 conv-BN-ReLU (strided) then 3x3 conv-BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels, 3, stride, relu=True, bias=False)
        self.conv2 = ConvBN(out_channels, out_channels, 3, 1, relu=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ShortcutBlock(nn.Module):
    """An extra residual block between stages: BasicBlock(x) + 1x1 projection(x)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.block = BasicBlock(in_channels, out_channels, stride)
        self.proj = ConvBN(in_channels, out_channels, 1, stride, relu=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.proj(x)


class ResNetFabric(ModelSpace):
    """Plain CIFAR ResNet (``shortcuts=''``) or ResNet fabric (``shortcuts='slr'``) with gated blocks.

    Parameters
    ----------
    units
        Residual units per stage (3 gives ResNet-20, 18 ResNet-110).
    maps
        Channels of each stage; each must double the previous one (the stride is the ratio).
    shortcuts
        Which extra shortcut blocks to add between stages: any of ``'s'``, ``'l'``, ``'r'``; ``''`` for none.
    in_channels, num_classes
        Input channels and classes.

    Example
    -------
    >>> space = ResNetFabric(units=3, shortcuts='')   # ResNet-20, 9 gated residual branches
    >>> len(space.gate_labels)
    9
    """

    def __init__(
        self,
        units: int = 3,
        maps: tuple[int, ...] = (16, 32, 64),
        shortcuts: str = "slr",
        in_channels: int = 3,
        num_classes: int = 10,
    ):
        super().__init__()
        maps = tuple(maps)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"ResNetFabric: units must be an integer >= 1, got {units!r}")
        if not maps or any(not isinstance(m, int) or m < 1 for m in maps):
            raise ValueError(f"ResNetFabric: maps must be positive integers, got {maps!r}")
        if any(b != 2 * a for a, b in zip(maps, maps[1:])):
            raise ValueError(
                f"ResNetFabric: each stage must have twice the channels of the previous one, got {maps!r}"
            )
        if not isinstance(shortcuts, str) or set(shortcuts) - set("slr"):
            raise ValueError(
                f"ResNetFabric: shortcuts must use only the letters 's', 'l', 'r', got {shortcuts!r}"
            )
        self.units, self.maps, self.shortcuts = units, maps, shortcuts
        self.in_channels, self.num_classes = in_channels, num_classes
        W = units

        self.stem = ConvBN(in_channels, maps[0], 3, 1, relu=True, bias=False)
        self.skips = nn.ModuleDict()  # projection skips of the main path (identity elsewhere)
        self.branches = nn.ModuleDict()  # gated residual branches, one per unit
        self.extra = nn.ModuleDict()  # gated shortcut blocks between stages
        # extra_in[(b, n)]: (source unit, label) of the shortcut blocks summed in unit (b, n);
        # a source unit (b', -1) is the input of stage b'.
        self.extra_in: dict[tuple[int, int], list[tuple[tuple[int, int], str]]] = {}
        graph_edges: list[tuple[Any, Any, str | None]] = []

        def unit_name(b: int, n: int) -> str:
            return f"s{b}u{n}" if n >= 0 else f"s{b}in"

        for b, c_out in enumerate(maps):
            for n in range(W):
                c_in = maps[b - 1] if (b > 0 and n == 0) else c_out
                stride = c_out // c_in
                prev = (b, n - 1)  # the unit's input: the previous unit, or the stage input (b, -1)
                label = f"res_{unit_name(b, n)}"
                self.branches[label] = gate(
                    BasicBlock(c_in, c_out, stride), Zero(c_out, stride=stride), label
                )
                if stride > 1:
                    self.skips[unit_name(b, n)] = ConvBN(c_in, c_out, 1, stride, relu=False, bias=False)
                graph_edges += [(prev, (b, n), None), (prev, (b, n), label)]
                if b == 0:
                    continue
                sources = []
                if "s" in shortcuts:
                    sources.append(W - 2 - n)
                if "l" in shortcuts and n != 0:
                    sources.append(W - 1 - n)
                if "r" in shortcuts and n != W - 1:
                    sources.append(W - 3 - n)
                for k in sources:
                    if k < -1:  # only possible with units == 1
                        continue
                    src = (b - 1, k)
                    src_ch = maps[b - 1] if k >= 0 else (maps[b - 2] if b >= 2 else maps[0])
                    src_stride = c_out // src_ch
                    label = f"sc_{unit_name(*src)}_{unit_name(b, n)}"
                    self.extra[label] = gate(
                        ShortcutBlock(src_ch, c_out, src_stride), Zero(c_out, stride=src_stride), label
                    )
                    self.extra_in.setdefault((b, n), []).append((src, label))
                    graph_edges.append((src, (b, n), label))
            if b + 1 < len(maps):  # stage b's output is stage b+1's input
                graph_edges.append(((b, W - 1), (b + 1, -1), None))
        self.classifier = nn.Linear(maps[-1], num_classes)
        graph_edges.insert(0, ("stem", (0, -1), None))
        self.graph = GateGraph(graph_edges, "stem", (len(maps) - 1, W - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        W = self.units
        outs: dict[tuple[int, int], torch.Tensor] = {(0, -1): self.stem(x)}
        for b in range(len(self.maps)):
            if b > 0:
                outs[(b, -1)] = outs[(b - 1, W - 1)]
            for n in range(W):
                name = f"s{b}u{n}"
                h = outs[(b, n - 1)]
                skip = self.skips[name](h) if name in self.skips else h
                out = skip + self.branches[f"res_{name}"](h)
                for src, label in self.extra_in.get((b, n), []):
                    out = out + self.extra[label](outs[src])
                outs[(b, n)] = F.relu(out)
        h = F.adaptive_avg_pool2d(outs[(len(self.maps) - 1, W - 1)], 1).flatten(1)
        return self.classifier(h)

    @property
    def gate_labels(self) -> list[str]:
        """Labels of every gate: residual branches, then shortcut blocks."""
        return list(self.branches.keys()) + list(self.extra.keys())

    def prune(self, arch: dict[str, Any]) -> dict[str, Any]:
        """``arch`` with every gate that lies on no input -> output path turned off."""
        return self.graph.prune(arch)

    def is_connected(self, arch: dict[str, Any]) -> bool:
        """Whether the input reaches the classifier in ``arch`` (always, in this space)."""
        return self.graph.is_connected(arch)
