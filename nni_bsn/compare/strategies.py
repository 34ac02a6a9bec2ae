"""The strategy of each row of ``nni-bsn compare`` and what is read from it after its search: BSN's selection,
ENAS's controller updates, how settled the choices ended, and the DARTS paper's derivation of an architecture."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Any

from pytorch_lightning.callbacks import Callback

from evaluators.blocks import GATE_ON
from nni_bsn.jobs.config import (
    BSN_KINDS,
    DERIVED_FROM,
    PEER_VARIANTS,
    CompareConfig,
    bsn_row_budget,
    row_kind,
)

__all__ = [
    "is_bsn",
    "make_strategy",
    "strategy_details",
    "choice_stats",
    "probabilities",
    "derived_architecture",
    "SettleStop",
    "rank_sync_callbacks",
    "ranks_agreed",
]

_logger = logging.getLogger(__name__)


def is_bsn(name: str) -> bool:
    return row_kind(name) in BSN_KINDS


def make_strategy(
    name: str, cfg: CompareConfig, space: Any, input_shape: tuple[int, ...], budget: dict[str, Any]
):
    """The strategy of row ``name`` and what to say about its set-up."""
    from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, RandomOneShot

    from nni_bsn.compat import DartsWithPenalty, ProxylessWithPenalty, TaggedENAS, fabric_flops_profiler
    from nni_bsn.jobs.builders import build_cost, rebuild_space
    from nni_bsn.strategy.bsn import BSN

    if is_bsn(name):
        cost = build_cost(cfg.cost, input_shape)
        options = {**cfg.bsn_options(), **BSN_KINDS[row_kind(name)]}
        return BSN(cost=cost, budget=bsn_row_budget(name) or cfg.budget, **options), {}
    if name in ("darts+penalty", "proxyless+penalty"):
        # On a separate copy of the raw space: shape inference runs a forward pass (BatchNorm statistics move).
        profiler = fabric_flops_profiler(rebuild_space(budget["space_spec"]), input_shape)
        full = float(profiler.profile({label: GATE_ON for label in space.gate_labels}))
        baseline = budget["fraction"] * full
        penalty = {"profiler": profiler, "baseline": baseline, "scale": cfg.lam, "nonlinear": "positive"}
        cls = DartsWithPenalty if name == "darts+penalty" else ProxylessWithPenalty
        info = {
            "penalty": {
                "profiler": f"nni FlopsProfiler (MACs of conv/linear, every '{GATE_ON}' gate)",
                "full_flops": full,
                "baseline": baseline,
                "scale": cfg.lam,
                "nonlinear": "positive",
                "aggregate": "add",
                "probabilities": "live tensors (nni_bsn.compat fix)",
            }
        }
        return cls(penalty=penalty), info
    factories: dict[str, Callable[[], Any]] = {
        "darts": DARTS,
        "darts-fast": lambda: DARTS(**PEER_VARIANTS["darts-fast"]),
        "gumbel-darts": GumbelDARTS,
        "proxyless": Proxyless,
        "random": RandomOneShot,
        "enas": lambda: TaggedENAS(reward_metric_name="val_acc"),
    }
    return factories[name](), {}


def rank_sync_callbacks(name: str, cfg: CompareConfig) -> list:
    """NNI's strategies on several ranks get nni-bsn's fix (:class:`~nni_bsn.strategy.peers.RankSync`); BSN has its
    own scheme, and one process needs none."""
    if is_bsn(name) or cfg.devices * cfg.num_nodes == 1:
        return []
    from nni_bsn.strategy.peers import RankSync

    return [RankSync()]


def ranks_agreed(module, arch: dict[str, Any], derived):
    """Under DDP: whether the ranks agreed (:func:`~nni_bsn.strategy.peers.peer_agreement`), and rank 0's
    architecture and derivation on every rank, so that ranks that disagreed still evaluate the same network."""
    from nni_bsn.strategy.peers import peer_agreement, rank0s
    from nni_bsn.strategy.ranks import world_size

    if world_size() == 1:
        return arch, derived, None
    ranks = peer_agreement(module, arch)
    if ranks["agreed"]:
        return arch, derived, ranks
    derived_arch = rank0s(derived[0] if derived is not None else None)
    _logger.warning("the DDP ranks disagree (%s); every rank evaluates rank 0's architecture", ranks)
    return rank0s(arch), (derived_arch, derived[1]) if derived is not None else None, ranks


def strategy_details(name: str, strategy) -> dict[str, Any]:
    """What the row keeps about how the strategy ended: BSN's selection, ENAS's controller updates."""
    module = strategy.oneshot_module
    extra: dict[str, Any] = {}
    if is_bsn(name):  # bsn@25% rows too
        rep = strategy.report()
        keys = (
            "method",
            "within_budget",
            "connected",
            "costs",
            "candidates_checked",
            "notes",
            "start_keep_prob",
            "skipped_samples",
        )
        extra["bsn_selection"] = {k: rep.get(k) for k in keys}
    if name == "enas":
        trajectories = int(module._trajectory_counter)
        extra["enas"] = {
            "trajectories": trajectories,
            "batches_per_update": module.batches_per_update,
            "ppo_updates": int(trajectories // module.batches_per_update),
        }
    return extra


def choice_stats(module, probs: dict[str, dict[Any, float]] | None = None) -> dict[str, Any] | None:
    """How settled the strategy's choices ended: the mean largest probability and normalised entropy per choice
    (of ``probs``, else of the module's :func:`probabilities`)."""
    probs = probabilities(module) if probs is None else probs
    if not probs:
        return None
    top, entropy = [], []
    for weights in probs.values():
        p = [max(float(w), 0.0) for w in weights.values()]
        total = sum(p) or 1.0
        p = [x / total for x in p]
        top.append(max(p))
        h = -sum(x * math.log(x) for x in p if x > 0)
        entropy.append(h / math.log(len(p)) if len(p) > 1 else 0.0)
    n = len(top)
    return {
        "choices": n,
        "mean_max_prob": round(sum(top) / n, 4),
        "min_max_prob": round(min(top), 4),
        "mean_entropy": round(sum(entropy) / n, 4),  # 1: uniform, 0: settled
    }


class SettleStop(Callback):
    """Stop a search once its most probable architecture (the argmax of every choice's probabilities) is the same
    at ``patience`` consecutive epoch ends; :meth:`summary` says when, and how settled each epoch ended.

    A strategy without probabilities (RandomOneShot) has no choice to settle: it runs every epoch."""

    def __init__(self, patience: int):
        self.patience = patience
        # per epoch end: mean largest probability, choices whose argmax moved, epoch ends with this argmax so far
        self.history: list[dict[str, Any]] = []
        self._last: dict[str, Any] | None = None
        self.settled_epoch: int | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        probs = probabilities(pl_module)
        if not probs:
            return
        argmax = {label: max(weights, key=weights.get) for label, weights in probs.items()}
        last = self._last
        moved = None if last is None else sum(argmax[k] != last.get(k) for k in argmax)
        unchanged = self.history[-1]["unchanged"] + 1 if moved == 0 else 1
        self._last = argmax
        stats = choice_stats(pl_module, probs) or {}
        self.history.append({"max_prob": stats.get("mean_max_prob"), "moved": moved, "unchanged": unchanged})
        settled = unchanged >= self.patience
        strategy = getattr(trainer, "strategy", None)  # under DDP every process stops, or none does
        if strategy is not None:
            settled = strategy.reduce_boolean_decision(settled, all=True)
        if settled:
            self.settled_epoch = trainer.current_epoch + 1
            trainer.should_stop = True

    def summary(self, epochs_run: int) -> dict[str, Any]:
        return {
            "patience": self.patience,
            "epochs_run": epochs_run,
            "settled_epoch": self.settled_epoch,  # None: not settled within the epochs
            **{
                f"{key}_per_epoch": [h[key] for h in self.history]
                for key in ("max_prob", "moved", "unchanged")
            },
        }


def probabilities(module) -> dict[str, dict[Any, float]]:
    """The strategy's probability of every candidate of every choice (``export_probs``), or {} if it has none."""
    try:
        return {
            label: {v: float(w) for v, w in dict(weights).items()}
            for label, weights in module.export_probs().items()
        }
    except Exception:  # RandomOneShot and others without probabilities
        return {}


def derived_architecture(name: str, strategy, graph, exported) -> tuple[dict[str, Any], Any] | None:
    """The DARTS paper's derivation from the strategy's probabilities and its inherited network, where it applies."""
    from nni_bsn.compare.derivation import derive_darts

    probs = probabilities(strategy.oneshot_module)
    if row_kind(name) not in DERIVED_FROM or not probs:
        return None
    arch = derive_darts(probs, graph)
    if arch == dict(exported):  # the zero candidate won nowhere: the same network as NNI's export
        return None
    return arch, copy.deepcopy(strategy.model_space.freeze(arch).executable_model())
