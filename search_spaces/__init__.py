"""The paper's super networks as NNI model spaces, with binary gates and pruning."""

from .cnf import ConvolutionalNeuralFabric, cnf_edge_label
from .gate_graph import GateGraph
from .ops import GATE_OFF, GATE_ON, AddReLU, ConvBN, UpConvBN, Zero, gate
from .resnet_fabric import ResNetFabric

__all__ = [
    "ConvolutionalNeuralFabric",
    "ResNetFabric",
    "GateGraph",
    "ConvBN",
    "UpConvBN",
    "Zero",
    "AddReLU",
    "gate",
    "GATE_ON",
    "GATE_OFF",
    "cnf_edge_label",
]
