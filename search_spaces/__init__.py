"""The paper's super networks as NNI model spaces, with binary gates and pruning: the Convolutional Neural Fabric
(``cnf``, B-CNF) and the ResNet fabric (``resnet_fabric``, B-ResNet; a plain CIFAR ResNet without shortcuts), built
from conv-BN edges and the gate helper (``ops``), with the live-edge sweep and cheapest path that every evaluator
reaches through ``space.graph`` (``gate_graph``); and the hand-designed anchor they are compared with, Fashion-MNIST
benchmark's 2-conv network (``two_conv``), a space with nothing to choose."""

from .cnf import ConvolutionalNeuralFabric, cnf_edge_label
from .gate_graph import GateGraph
from .ops import GATE_OFF, GATE_ON, AddReLU, ConvBN, UpConvBN, Zero, gate
from .resnet_fabric import ResNetFabric
from .two_conv import TwoConv

__all__ = [
    "ConvolutionalNeuralFabric",
    "ResNetFabric",
    "TwoConv",
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
