"""NNI 3.0's one-shot test spaces, ported for BSN's tests.

Modelled on ``test/ut/nas/nn/models.py`` of microsoft/nni (tag v3.0): the same mutables (LayerChoice, InputChoice,
``nni.choice`` widths and kernel sizes, Repeat, Cell, multi-head attention, a custom op with a width argument) on
the same shapes (MNIST-sized ``1 x 28 x 28`` inputs; ``(q, k, v)`` triples of ``1 x 128`` for the attention model),
so that what NNI's strategies accept or refuse carries over.
"""

from __future__ import annotations

from functools import partial

import nni
import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import (
    Cell,
    InputChoice,
    LayerChoice,
    ModelSpace,
    MutableBatchNorm2d,
    MutableConv2d,
    MutableLinear,
    MutableMultiheadAttention,
    ParametrizedModule,
    Repeat,
)
from torch import nn

__all__ = ["MODELS", "INPUT_SHAPES", "EXPECT_SUCCESS"]


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel_size=3, groups=in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class SimpleNet(ModelSpace):
    """A LayerChoice of two convs, a LayerChoice of dropouts, an optional hidden width and an InputChoice."""

    def __init__(self, value_choice: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = LayerChoice([nn.Conv2d(32, 64, 3, 1), DepthwiseSeparableConv(32, 64)], label="conv")
        self.maxpool = nn.MaxPool2d(2)
        self.dropout1 = LayerChoice([nn.Dropout(0.25), nn.Dropout(0.5), nn.Dropout(0.75)], label="dropout")
        self.dropout2 = nn.Dropout(0.5)
        hidden = nni.choice("hidden", [32, 64, 128]) if value_choice else 64
        self.fc1 = MutableLinear(9216, hidden)
        self.fc2 = MutableLinear(hidden, 10)
        self.rpfc = nn.Linear(10, 10)
        self.input_ch = InputChoice(2, 1, label="input")

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.maxpool(self.conv2(x))
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        x = self.fc2(x)
        x = self.input_ch([x, self.rpfc(x)])
        return F.log_softmax(x, dim=1)


class MultiHeadAttentionNet(ModelSpace):
    """An embedding width shared by two linear layers and a multi-head attention."""

    def __init__(self, head_count: int = 1) -> None:
        super().__init__()
        embed_dim = nni.choice("embed_dim", [32, 64])
        self.linear1 = MutableLinear(128, embed_dim)
        self.mhatt = MutableMultiheadAttention(embed_dim, head_count)
        self.linear2 = MutableLinear(embed_dim, 1)

    def forward(self, batch):
        query, key, value = batch
        q, k, v = self.linear1(query), self.linear1(key), self.linear1(value)
        output, _ = self.mhatt(q, k, v, need_weights=False)
        return F.relu(self.linear2(output))


class ValueChoiceConvNet(ModelSpace):
    """A width and a kernel size (with its padding) shared by a conv, a batch norm and the next conv."""

    def __init__(self) -> None:
        super().__init__()
        ch1 = nni.choice("ch1", [16, 32])
        kernel = nni.choice("kernel", [3, 5])
        self.conv1 = MutableConv2d(1, ch1, kernel, padding=kernel // 2)
        self.batch_norm = MutableBatchNorm2d(ch1)
        self.maxpool = nn.MaxPool2d(2)
        self.conv2 = MutableConv2d(ch1, 64, 3)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.batch_norm(self.conv1(x)))
        x = self.maxpool(self.conv2(x))
        x = self.fc(torch.mean(x, (2, 3)))
        return F.log_softmax(x, dim=1)


class RepeatNet(ValueChoiceConvNet):
    """ValueChoiceConvNet with a padded second conv and a Repeat of 1 to 4 linear layers on top."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = MutableConv2d(nni.choice("ch1", [16, 32]), 64, 3, padding=1)
        self.rpfc = Repeat(nn.Linear(10, 10), (1, 4), label="rep")

    def forward(self, x):
        x = F.relu(self.batch_norm(self.conv1(x)))
        x = self.maxpool(self.conv2(x))
        x = self.rpfc(self.fc(torch.mean(x, (2, 3))))
        return F.log_softmax(x, dim=1)


def _cell_op(index: int, kernel: int):
    def make(_node: int, _op: int, inp: int | None) -> nn.Module:
        in_ch = (5 if index == 0 else 3 * 4) if inp is not None and inp < 1 else 4
        return nn.Conv2d(in_ch, 4, kernel, padding=kernel // 2)

    return make


class CellNet(ModelSpace):
    """A Repeat (depth 1 to 3) of Cells whose ops are built by a factory that sees the chosen input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 5, 7, stride=4)
        self.cells = Repeat(
            lambda index: Cell(
                {"conv1": _cell_op(index, 1), "conv2": _cell_op(index, 3)},
                3,
                merge_op="loose_end",
                label=f"cell{index}",
            ),
            (1, 3),
            label="rep",
        )
        self.fc = nn.Linear(3 * 4, 10)

    def forward(self, x):
        x = self.cells(self.stem(x))
        x = self.fc(torch.mean(x, (2, 3)))
        return F.log_softmax(x, dim=1)


class MyOp(ParametrizedModule):
    """A custom op whose width is an ``nni.choice``: no NNI one-shot strategy has a super-module for it."""

    def __init__(self, some_ch) -> None:
        super().__init__()
        self.some_ch = some_ch
        self.batch_norm = nn.BatchNorm2d(some_ch)

    def forward(self, x):
        return self.batch_norm(x)


class CustomOpValueChoiceNet(ModelSpace):
    """ValueChoiceConvNet with its batch norm inside a custom op (``MyOp``)."""

    def __init__(self) -> None:
        super().__init__()
        ch1 = nni.choice("ch1", [16, 32])
        kernel = nni.choice("kernel", [3, 5])
        self.conv1 = MutableConv2d(1, ch1, kernel, padding=kernel // 2)
        self.batch_norm = MyOp(ch1)
        self.conv2 = MutableConv2d(ch1, 64, 3, padding=1)
        self.maxpool = nn.MaxPool2d(2)
        self.dropout1 = LayerChoice([nn.Dropout(0.25), nn.Dropout(0.5), nn.Dropout(0.75)], label="dropout")
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.batch_norm(self.conv1(x)))
        x = self.maxpool(self.conv2(x))
        x = self.fc(torch.mean(x, (2, 3)))
        return F.log_softmax(x, dim=1)


MODELS = {
    "simple": partial(SimpleNet, False),
    "simple_value_choice": SimpleNet,
    "value_choice": ValueChoiceConvNet,
    "repeat": RepeatNet,
    "cell": CellNet,
    "multihead_attention": partial(MultiHeadAttentionNet, 1),
    "custom_op": CustomOpValueChoiceNet,
}

INPUT_SHAPES = {name: (1, 1, 28, 28) for name in MODELS}
INPUT_SHAPES["multihead_attention"] = (1, 128)  # one of the three (q, k, v) tensors

# NNI's test_strategy.py: every one-shot strategy that supports nni.choice succeeds except on the custom op.
EXPECT_SUCCESS = {name: name != "custom_op" for name in MODELS}


def small_hub_space(name: str):
    """NNI hub space ``name`` (lower case: nasbench201, darts, enas, nasnet, amoebanet, pnas, proxylessnas,
    mobilenetv3, shufflenet, autoformer) at a small size, 10 classes, for 32x32 RGB inputs (tests, benchmarks)."""
    import nni.nas.hub.pytorch as hub

    if name == "nasbench201":
        return hub.NasBench201(stem_out_channels=4, num_modules_per_stack=1, num_labels=10)
    if name == "proxylessnas":
        return hub.ProxylessNAS(width_mult=0.25, num_labels=10)
    if name == "mobilenetv3":
        return hub.MobileNetV3Space(num_labels=10, width_multipliers=(0.25, 0.5), expand_ratios=(1, 2))
    if name == "shufflenet":
        return hub.ShuffleNetSpace(num_labels=10, channel_search=False)
    if name == "autoformer":
        return hub.AutoformerSpace(
            search_embed_dim=(48, 64),
            search_mlp_ratio=(1.0, 2.0),
            search_num_heads=(1, 2),
            search_depth=(2, 3),
            img_size=32,
            patch_size=8,
            num_labels=10,
            qkv_bias=True,
        )
    cells = {"darts": "DARTS", "enas": "ENAS", "nasnet": "NASNet", "amoebanet": "AmoebaNet", "pnas": "PNAS"}
    return getattr(hub, cells[name])(width=4, num_cells=3, dataset="cifar")
