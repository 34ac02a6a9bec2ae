"""The Convolutional Neural Fabric (Saxena & Verbeek 2016) as BSN's B-CNF super network.

The fabric is a grid of nodes: ``layers`` columns by ``scales`` rows, where scale ``s`` holds maps of
``image_size / 2**s`` pixels and every node has the same number of channels. Between consecutive layers, node
``(l, s)`` receives from ``(l-1, s-1)`` (a *down* edge: stride-2 3x3 conv-BN), ``(l-1, s)`` (a *same* edge: 3x3
conv-BN) and ``(l-1, s+1)`` (an *up* edge: x2 nearest upsampling, then 3x3 conv-BN). Inside the first layer,
*zip* down-edges ``(0, s) -> (0, s+1)`` bring the stem's features to every scale; inside the last layer, zip
down-edges carry information down to the 1x1 map, where a 1x1 conv classifies. A node is ReLU of the sum of its
inputs. Every edge is one binary gate.

Number of gates: ``(layers - 1) * (3 * scales - 2) + 2 * (scales - 1)``: 122 for 8 layers at 32x32.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from .gate_graph import GateGraph
from .ops import AddReLU, ConvBN, UpConvBN, Zero, gate

__all__ = ["ConvolutionalNeuralFabric", "cnf_edge_label"]


def cnf_edge_label(l1: int, s1: int, l2: int, s2: int) -> str:
    """Label of the gate on the edge from node (layer l1, scale s1) to node (layer l2, scale s2)."""
    return f"l{l1}s{s1}_l{l2}s{s2}"


class ConvolutionalNeuralFabric(ModelSpace):
    """B-CNF: the Convolutional Neural Fabric with one binary gate per edge.

    Parameters
    ----------
    layers
        Number of layers (columns) of the fabric, at least 2.
    channels
        Channels of every node.
    image_size
        Side of the (square) input image; a power of two. The fabric has ``log2(image_size) + 1`` scales, down to 1x1.
    in_channels
        Channels of the input image.
    num_classes
        Number of classes predicted by the 1x1-conv classifier on the 1x1 map.

    Example
    -------
    >>> space = ConvolutionalNeuralFabric(layers=4, channels=16, image_size=16, in_channels=1)
    >>> len(space.gate_labels)
    46
    """

    def __init__(
        self,
        layers: int = 8,
        channels: int = 128,
        image_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
    ):
        super().__init__()
        for name, value, low in (
            ("layers", layers, 2),
            ("channels", channels, 1),
            ("in_channels", in_channels, 1),
            ("num_classes", num_classes, 1),
            ("image_size", image_size, 2),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(
                    f"ConvolutionalNeuralFabric: {name} must be an integer >= {low}, got {value!r}"
                )
        if image_size & (image_size - 1):
            raise ValueError(
                f"ConvolutionalNeuralFabric: image_size must be a power of two, got {image_size}"
            )
        self.layers, self.channels, self.image_size = layers, channels, image_size
        self.in_channels, self.num_classes = in_channels, num_classes
        self.scales = int(math.log2(image_size)) + 1
        C, L, S = channels, layers, self.scales

        self.stem = ConvBN(in_channels, C, 3, 1, relu=True)
        self.node = AddReLU()
        self.edges = nn.ModuleDict()
        # incoming[(l, s)]: the (source node, label) pairs summed at node (l, s), in evaluation order.
        self.incoming: dict[tuple[int, int], list[tuple[tuple[int, int], str]]] = {}
        graph_edges: list[tuple[tuple[int, int], tuple[int, int], str | None]] = []

        def add_edge(src: tuple[int, int], dst: tuple[int, int]) -> None:
            (l1, s1), (l2, s2) = src, dst
            label = cnf_edge_label(l1, s1, l2, s2)
            if s1 < s2:  # down: stride-2 conv at the coarser output scale
                op, off = ConvBN(C, C, 3, 2), Zero(C, stride=2)
            elif s1 == s2:  # same
                op, off = ConvBN(C, C, 3, 1), Zero(C)
            else:  # up: nearest x2, then conv at the finer output scale
                op, off = UpConvBN(C, C), Zero(C, upsample=2)
            self.edges[label] = gate(op, off, label)
            self.incoming.setdefault(dst, []).append((src, label))
            graph_edges.append((src, dst, label))

        for s in range(S - 1):  # first layer: zip down the scales
            add_edge((0, s), (0, s + 1))
        for layer in range(1, L):
            for s in range(S):
                for k in (s - 1, s, s + 1):
                    if 0 <= k < S:
                        add_edge((layer - 1, k), (layer, s))
                if layer == L - 1 and s > 0:  # last layer: zip down to the 1x1 map
                    add_edge((layer, s - 1), (layer, s))
        self.classifier = nn.Conv2d(C, num_classes, 1)
        # Node (l, s) is computed after every node of layer l-1 and after (l, s-1): the order of `incoming`.
        self.order = [(0, s) for s in range(1, S)] + [(layer, s) for layer in range(1, L) for s in range(S)]
        self.graph = GateGraph(sorted(graph_edges, key=lambda e: self._rank(e[0])), (0, 0), (L - 1, S - 1))

    def _rank(self, node: tuple[int, int]) -> int:
        return node[0] * self.scales + node[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = {(0, 0): self.stem(x)}
        for node in self.order:
            maps[node] = self.node([self.edges[label](maps[src]) for src, label in self.incoming[node]])
        out = self.classifier(maps[(self.layers - 1, self.scales - 1)])
        return out.view(-1, self.num_classes)

    @property
    def gate_labels(self) -> list[str]:
        """Labels of every gate, in the fabric's evaluation order."""
        return list(self.edges.keys())

    def prune(self, arch: dict[str, Any]) -> dict[str, Any]:
        """``arch`` with every gate that lies on no input -> output path turned off."""
        return self.graph.prune(arch)

    def is_connected(self, arch: dict[str, Any]) -> bool:
        """Whether the input reaches the classifier in ``arch``."""
        return self.graph.is_connected(arch)
