"""The labels a module path of a frozen architecture may depend on: those of the mutables above it in the space,
nearest first, what the cell structure says it is known to follow, and the masks without which it counts 0.
:func:`~evaluators.counting.label_tables.fit_tables` uses them as its priors, known labels and masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from evaluators.counting.derived_labels import (
    EXISTS,
    LIVE,
    DerivedLabels,
    cell_priors,
    cell_structure,
    repeat_blocks,
)

__all__ = ["LocalLabels"]


class LocalLabels:
    """The labels likely to matter to a module path of the frozen model, nearest first (a tie-breaker): those of
    the mutables on the way to it in the space, and what :func:`~evaluators.counting.derived_labels.cell_priors` adds."""

    def __init__(self, space: nn.Module, grid: dict[str, list[Any]], reached_only: bool) -> None:
        self.modules = dict(space.named_modules())
        self.reached_only = reached_only
        self.extra = cell_priors(space)
        self.known = cell_structure(space)
        if not reached_only:  # every module of a cell counts, whether its output reaches anything or not
            self.known = {p: tuple(x for x in g if not x.endswith(LIVE)) for p, g in self.known.items()}
        self.blocks = repeat_blocks(space, grid)
        for path, exists in self.blocks.items():  # whether a Repeat block exists comes before the depth
            self.extra[path] = [exists, *self.extra.get(path, [])]
        self._cache: dict[str, list[str]] = {}

    def masks(self, derived: Sequence[DerivedLabels]) -> list[str]:
        """The derived labels without which a module counts 0: a Repeat block's existence, and a chained cell's
        liveness for a count of what reaches the output."""
        ends = (LIVE, EXISTS) if self.reached_only else (EXISTS,)
        return [n for d in derived for n in d.names if n.endswith(ends)]

    def mask_of(self, path: str) -> str | None:
        """The label without which a frozen path counts 0: whether its chained cell reaches the classifier (for a
        count of what reaches the output), else whether the Repeat block holding it exists; ``None`` for a path
        always counted."""
        live = next((x for x in self.structural(path) or () if x.endswith(LIVE)), None)
        return live or next((self.blocks[p] for p in self._space_paths(path) if p in self.blocks), None)

    def structural(self, path: str) -> tuple[str, ...] | None:
        """The labels the count of a frozen path is known to be a function of (``cell_structure``), or ``None``."""
        return next((self.known[p] for p in self._space_paths(path) if p in self.known), None)

    def _at(self, path: str) -> list[str]:
        if path not in self._cache:
            module = self.modules.get(path)
            own = _labels_within(module) if module is not None and path else []
            extra = self.extra.get(path, [])
            # a mutable's own label first; a cell's labels after what its counts depend on beyond its operators
            self._cache[path] = own[:1] + extra + own[1:] if len(own) == 1 else extra + own
        return self._cache[path]

    def _space_paths(self, path: str) -> list[str]:
        """The space's module paths above a frozen path, deepest first (a frozen Repeat drops its ``blocks``)."""
        out, cur = [], ""
        for part in path.split(".") if path else []:
            step = f"{cur}.{part}" if cur else part
            if step not in self.modules and f"{cur}.blocks.{part}" in self.modules:
                step = f"{cur}.blocks.{part}"
            out.append(cur := step)
        return out[::-1]

    def __call__(self, path: str) -> list[str]:
        out: list[str] = []
        for p in self._space_paths(path):
            out += [x for x in self._at(p) if x not in out]
        return out


def _labels_within(module: nn.Module) -> list[str]:
    """The labels of a mutable module, or of the mutables inside a plain one (a block whose children's choices, such
    as an optional squeeze-and-excite, move its modules' indices)."""
    if hasattr(module, "simplify"):
        return list(module.simplify())
    return list(dict.fromkeys(label for child in module.children() for label in _labels_within(child)))
