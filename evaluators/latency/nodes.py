"""What an aggregation node of a gate space runs in ONNX Runtime, for each pattern of live inputs.

Every node of ``space.graph`` that has at least one gated input aggregates its inputs (sum, then ReLU:
``AddReLU`` of the CNF, the residual sums of the ResNet fabric), and what runs there depends on the
architecture. Its *live* inputs are the gated or ungated edges on an input -> output path; every other input is a
zero map left by an 'off' or dead gate, a constant that ORT still *adds* (it does not simplify ``x + 0``; leading
zeros fold into one constant). A node's inputs are listed in summation order, the order of ``space.graph.edges``
(which is the order both fabrics sum in); a *pattern* is the bit mask of its live inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["NodeSum", "node_signature", "pattern_signatures", "aggregation_nodes"]


class NodeSum(nn.Module):
    """An aggregation node as the pruned model runs it: ``live`` inputs summed, then ``zeros`` constant zero maps
    added (what an 'off' or dead gate leaves in the sum: ORT keeps those additions), then ReLU."""

    def __init__(self, live: int, zeros: int, shape: Sequence[int]):
        super().__init__()
        self.live, self.zeros, self.shape = live, zeros, tuple(shape)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        for _ in range(self.zeros):
            out = out + torch.zeros(self.shape)
        return torch.relu(out)

    def extra_repr(self) -> str:
        return f"live={self.live}, zeros={self.zeros}, shape={self.shape}"


def node_signature(pattern: Sequence[bool]) -> tuple[int, int]:
    """``(live inputs, constant additions)`` of a node whose inputs, in summation order, are live or zero.

    Zero maps that come first are constants added together, which ORT folds into one; every later zero is one
    addition that runs. ``(False, False, True)`` -> ``(1, 1)``; ``(True, False, False)`` -> ``(1, 2)``.
    """
    live = sum(bool(p) for p in pattern)
    lead = 0
    for p in pattern:
        if p:
            break
        lead += 1
    return live, (len(pattern) - live) - max(0, lead - 1)


def pattern_signatures(n_inputs: int, fuse_live: bool) -> list[tuple[int, int]]:
    """``node_signature`` of every pattern ``1 .. 2**n_inputs - 1`` of a node (bit ``b``: input ``b`` is live).

    With ``fuse_live`` the live inputs count as one: ORT fuses their sum into the convolutions producing them.
    """
    out = []
    for p in range(1, 2**n_inputs):
        live, zeros = node_signature([bool(p >> b & 1) for b in range(n_inputs)])
        out.append((1 if fuse_live else live, zeros))
    return out


def aggregation_nodes(
    graph: Any, gate_out_shape: Mapping[str, Sequence[int]]
) -> list[tuple[int, list[int], tuple[int, ...]]]:
    """The nodes of ``graph`` with at least one gated input: ``(node index, input edge indices in summation
    order, node shape)``, the shape being a gated input's block output (``gate_out_shape[label]``).

    A node whose inputs are all ungated runs the same in every architecture and is left out.
    """
    inputs: dict[int, list[int]] = {}
    shape: dict[int, tuple[int, ...]] = {}
    for i, (_, t, label) in enumerate(graph.edges):
        inputs.setdefault(t, []).append(i)
        if label is not None:
            shape.setdefault(t, tuple(gate_out_shape[label]))
    return [(t, edges, shape[t]) for t, edges in inputs.items() if t in shape]
