"""Build one architecture of an NNI space afresh, constructing only the candidates it chooses.

In NNI 3.0 a ``Cell`` built inside ``model_context(arch)`` (how ``freeze`` re-creates a cell whose operators come
from factories, and how a space is built afresh for an architecture) constructs every candidate operator of every
node, then its fixed ``LayerChoice`` keeps the chosen one: on the DARTS space 7 operators are built for each one
kept, three quarters of the build's time. :func:`only_chosen_candidates` makes the candidates lazy for the
duration of a build: the chosen one is constructed by the same factory call (or the same deep copy) as in NNI, the
others never are, so the network is the one NNI builds, with fewer weights drawn for nothing.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

__all__ = ["only_chosen_candidates"]


class _Deferred:
    """A candidate operator not constructed yet."""

    def __init__(self, make: Callable[[], nn.Module]) -> None:
        self.make = make


def _deferred(op: Any, node_index: int, op_index: int, chosen: int) -> _Deferred:
    if isinstance(op, nn.Module):
        return _Deferred(lambda: copy.deepcopy(op))
    if callable(op):
        return _Deferred(lambda: op(node_index, op_index, chosen))
    raise TypeError(f"Unrecognized type {type(op)} for op {op}")


@contextlib.contextmanager
def only_chosen_candidates() -> Iterator[None]:
    """Within the block, a fixed cell builds only its chosen operators (see the module docstring)."""
    import nni.nas.nn.pytorch.cell as cell
    from nni.nas.nn.pytorch import LayerChoice

    create, fixed = cell.create_cell_op_candidates, LayerChoice.__dict__["create_fixed_module"]

    def candidates(op_candidates: Any, node_index: int, op_index: int, chosen: int | None) -> Any:
        if chosen is None or not isinstance(op_candidates, (list, dict)):  # not a fixed cell: NNI's own way
            return create(op_candidates, node_index, op_index, chosen)
        # keyed as NNI keys them: a dict by its keys, a list by the string of each index
        named = (
            op_candidates
            if isinstance(op_candidates, dict)
            else {str(i): op for i, op in enumerate(op_candidates)}
        )
        ops = {k: _deferred(op, node_index, op_index, chosen) for k, op in named.items()}
        return ops, any(not isinstance(op, nn.Module) for op in named.values())

    def fixed_module(cls: type, sample: dict, candidates: Any, **kwargs: Any) -> Any:
        out = fixed.__func__(cls, sample, candidates, **kwargs)
        return out.make() if isinstance(out, _Deferred) else out

    cell.create_cell_op_candidates = candidates
    LayerChoice.create_fixed_module = classmethod(fixed_module)
    try:
        yield
    finally:
        cell.create_cell_op_candidates = create
        LayerChoice.create_fixed_module = fixed
