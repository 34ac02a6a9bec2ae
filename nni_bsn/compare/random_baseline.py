"""Random architectures of a given cost: the baseline any NAS result must beat.

:func:`random_architectures` draws distinct connected architectures whose cost lies in a band of the budget,
e.g. ``(0, 1)`` for "anywhere within the budget" or ``(0.9, 1)`` for "between 90% and 100% of it", so that a
searched network is never compared only with smaller ones.

The sampling rule: every mutable uniform over its values (a gate on with probability 1/2), kept when the
architecture is connected and its cost is in the band. That is the uniform distribution over the architectures
in the band. When the band is so small a part of the space that fewer than one draw in ``1 / min_rate`` lands
in it, gates are drawn on with the keep-probability that lands in it most often instead (uniform among the
architectures with the same number of gates on); each draw records the keep-probability it used.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evaluators.blocks import GATE_OFF, GATE_ON, arch_key

__all__ = ["RandomDraw", "random_architectures"]

Arch = dict[str, Any]
_PROBE = 2000


@dataclass(frozen=True)
class RandomDraw:
    """One random architecture, its cost, the gates' keep-probability it was drawn with, and its index."""

    arch: Arch
    cost: float
    keep_prob: float
    index: int


class _Sampler:
    """Draws architectures of a space from its choices' values, gates on with a keep-probability."""

    def __init__(self, values: Mapping[str, Sequence[Any]], rng: random.Random):
        self.values = {label: list(v) for label, v in values.items()}
        self.gates = [label for label, v in self.values.items() if set(v) == {GATE_ON, GATE_OFF}]
        self.rng = rng

    def draw(self, keep_prob: float) -> Arch:
        arch = {label: self.rng.choice(v) for label, v in self.values.items()}
        arch.update({label: GATE_ON if self.rng.random() < keep_prob else GATE_OFF for label in self.gates})
        return arch


def _in_band(
    arch: Arch, cost: Callable[[Arch], float], connected: Callable[[Arch], bool], low: float, high: float
) -> float | None:
    """The cost of ``arch`` if it is connected and within ``[low, high]``, else None."""
    if not connected(arch):
        return None
    c = float(cost(arch))
    return c if low <= c <= high else None


def _rate(sampler: _Sampler, accept: Callable[[Arch], float | None], keep_prob: float, draws: int) -> float:
    return sum(accept(sampler.draw(keep_prob)) is not None for _ in range(draws)) / draws


def _keep_prob(sampler: _Sampler, accept: Callable[[Arch], float | None], min_rate: float) -> float:
    """1/2 when the band is common enough at 1/2; otherwise the grid probability that lands in it most often."""
    if not sampler.gates or _rate(sampler, accept, 0.5, _PROBE) >= min_rate:
        return 0.5
    grid = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    rates = {p: _rate(sampler, accept, p, _PROBE // 4) for p in grid}
    return max(grid, key=lambda p: rates[p])


def random_architectures(
    values: Mapping[str, Sequence[Any]],
    cost: Callable[[Arch], float],
    limit: float,
    n: int,
    *,
    band: tuple[float, float] = (0.0, 1.0),
    prune: Callable[[Arch], Arch] | None = None,
    is_connected: Callable[[Arch], bool] | None = None,
    seed: int | str = 0,
    min_rate: float = 1e-3,
    max_draws: int = 200_000,
) -> list[RandomDraw]:
    """``n`` distinct random architectures with ``band[0] * limit <= cost <= band[1] * limit``.

    ``values`` maps each label to its candidates (``evaluators.blocks.choice_values(space)``); ``cost`` is
    called on the pruned architecture (``prune``, e.g. ``space.prune``); ``is_connected`` rejects architectures
    whose input never reaches the output. Raises ``ValueError`` when ``max_draws`` draws found fewer than ``n``.
    """
    low, high = band
    if not 0 <= low < high:
        raise ValueError(f"band must satisfy 0 <= low < high, got {band}")
    prune = prune or (lambda a: a)
    connected = is_connected or (lambda a: True)
    sampler = _Sampler(values, random.Random(seed))

    def accept(arch: Arch) -> float | None:
        return _in_band(prune(arch), cost, connected, low * limit, high * limit)

    keep_prob = _keep_prob(sampler, accept, min_rate)
    found: dict[tuple, RandomDraw] = {}
    for _ in range(max_draws):
        arch = prune(sampler.draw(keep_prob))
        c = accept(arch)
        key = arch_key(arch)
        if c is not None and key not in found:
            found[key] = RandomDraw(arch=arch, cost=c, keep_prob=keep_prob, index=len(found))
            if len(found) == n:
                return list(found.values())
    raise ValueError(
        f"found {len(found)} of {n} distinct connected architectures with cost in "
        f"[{low * limit:.6g}, {high * limit:.6g}] after {max_draws} draws; widen the band or raise the budget"
    )


def draw_for_row(
    cfg: Any, name: str, seed: int, budget: Mapping[str, Any], space_spec: dict, input_shape: tuple[int, ...]
) -> list[RandomDraw]:
    """The ``cfg.random_archs`` architectures of compare's row ``name`` (``random-arch@25%`` or
    ``random-arch90@25%``) at ``seed``: connected, pruned, their budgeted cost in the row's band of its limit.

    The draws depend on the seed and the row's name only, so a rerun retrains the same architectures.
    """
    from evaluators.blocks import choice_values
    from nni_bsn.jobs.builders import build_cost, rebuild_space
    from nni_bsn.jobs.config import RANDOM_BANDS, row_kind
    from nni_bsn.strategy.connectivity import space_connectivity

    space = rebuild_space(space_spec)
    evaluator = build_cost(cfg.cost, input_shape).bind(rebuild_space(space_spec))
    return random_architectures(
        choice_values(space),
        evaluator.cost,
        budget["limit"],
        cfg.random_archs,
        band=RANDOM_BANDS[row_kind(name)],
        prune=getattr(space, "prune", None),
        is_connected=space_connectivity(space),
        seed=f"{seed}:{name}",
    )
