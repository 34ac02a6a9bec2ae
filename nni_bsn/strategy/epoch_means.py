"""Per-step search metrics averaged over an epoch, logged once at its end: Lightning's ``self.log`` costs ~1 ms a
call, several percent of a small network's step, and reading a tensor each step would make the host wait for the
device (a GPU) each step."""

from __future__ import annotations

import math

import torch

__all__ = ["EpochMeans"]


class EpochMeans:
    """Sums and counts by name; a tensor is summed on its device (non-finite values left out) and read once, by
    :meth:`pop`."""

    def __init__(self) -> None:
        self._sums: dict[str, list] = {}

    def add(self, name: str, value: float | torch.Tensor) -> None:
        total = self._sums.setdefault(name, [0.0, 0])
        if isinstance(value, torch.Tensor):
            finite = torch.isfinite(value.detach())
            total[0] = total[0] + torch.where(finite, value.detach(), 0.0)
            total[1] = total[1] + finite.to(torch.long)
        elif math.isfinite(value):
            total[0] += value
            total[1] += 1

    def pop(self) -> dict[str, float]:
        """The mean of each name with a finite value since the last call; starts anew."""
        sums = {k: (float(total), int(n)) for k, (total, n) in self._sums.items()}
        self._sums = {}
        return {k: total / n for k, (total, n) in sums.items() if n}
