"""The preprocessing a network's input needs, recorded and applied.

Every dataset of :mod:`nni_bsn.data` says how it turns a raw image into an input (:func:`preprocessing`); a search
writes that record into ``report.json`` and the ONNX file's metadata, and :func:`preprocess` applies it to a new
image, so that a deployed network sees what it was trained on. Light: numpy and torch only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["preprocessing", "preprocess"]


def preprocessing(
    channels: int, size: int, mean: Any, std: Any, pixels: str, native: int | None, pad: int = 0
) -> dict[str, Any]:
    """The record of how a raw image becomes an input: its pixel values scaled into [0, 1] (``pixels`` says
    how), padded with ``pad`` zero pixels per side, resized bilinearly to ``size`` x ``size`` (antialiased when
    shrinking), then ``(x - mean) / std`` per channel. ``native``: the side of the dataset's raw images (None:
    any); ``mean`` and ``std``: one number, or one per channel."""
    mean, std = (np.broadcast_to(np.asarray(v, dtype=float), (channels,)).tolist() for v in (mean, std))
    return {
        "channels": channels,
        "image_size": size,
        "pixels": pixels,
        "native_size": native,
        "pad": pad,
        "resize": "bilinear",
        "mean": mean,
        "std": std,
    }


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    shrinking = min(x.shape[-2:]) > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


def preprocess(image: Any, record: dict[str, Any]) -> torch.Tensor:
    """One image as the network takes it, a ``(1, C, S, S)`` float tensor, following ``record`` (a report's
    ``preprocessing``). ``image``: a PIL image (converted to the record's grey or RGB, bytes divided by 255), or
    an array ``(H, W)`` or ``(H, W, C)`` of values already scaled into [0, 1] as ``record['pixels']`` says. An
    image whose side is not the dataset's (``native_size``) is first resized to it."""
    channels, size = int(record["channels"]), int(record["image_size"])
    if hasattr(image, "convert"):  # a PIL image
        image = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    if x.shape[0] != channels:
        raise ValueError(f"preprocess: the network takes {channels} channel(s), the image has {x.shape[0]}")
    x = x[None]
    native = record.get("native_size")
    if native and tuple(x.shape[-2:]) != (
        native,
        native,
    ):  # first as the dataset's own images, then as they were
        x = _resize(x, native)
    if record.get("pad"):
        x = F.pad(x, (record["pad"],) * 4)
    if tuple(x.shape[-2:]) != (size, size):
        x = _resize(x, size)
    mean = torch.tensor(record["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(record["std"], dtype=torch.float32).view(1, -1, 1, 1)
    x = (x - mean) / std
    if record.get("grey_to_rgb"):  # NNI's hub spaces take RGB: the grey channel repeated
        x = x.expand(1, 3, size, size).contiguous()
    return x
