"""What a job is asked to do: the search and compare configurations, the names they accept, and their checks."""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nni_bsn.strategy.names import ESTIMATORS, PENALTIES, REWARD_DATA, SELECTIONS

__all__ = [
    "UsageError",
    "SPACES",
    "COMPARE_SPACES",
    "COSTS",
    "ESTIMATORS",
    "PENALTIES",
    "SELECTIONS",
    "REWARD_DATA",
    "DATASETS",
    "CIFAR_IMAGE_SIZE",
    "DDP_TIMEOUT",
    "STRATEGY_NAMES",
    "STRATEGIES",
    "PEER_VARIANTS",
    "JobConfig",
    "SearchConfig",
    "CompareConfig",
    "bsn_defaults",
    "canonical_dataset",
    "default_image_size",
    "bsn_row_budget",
    "row_label",
    "parse_strategies",
    "distributed_devices",
    "check_data_cost_budget",
    "check_space_shape",
    "check_search_config",
    "check_compare_config",
]

SPACES = ("cnf", "resnet-fabric", "nasbench201", "mobilenetv3", "proxylessnas")
COMPARE_SPACES = ("cnf", "resnet-fabric", "nasbench201")
FABRICS = ("cnf", "resnet-fabric")  # the gate spaces: fixed networks and the +penalty rows need their gates
COSTS = ("macs", "params", "latency", "distributed:N")
DATASETS = (
    "digits",
    "cifar10",
    "cifar100",
    "fashion-mnist",
    "imagefolder",
)  # nni_bsn.data.DATASETS (a test checks)
# The image size of a job on CIFAR or Fashion-MNIST (28 padded to 32) that gives none (digits: the configs').
CIFAR_IMAGE_SIZE = 32
# Seconds a DDP rank waits for the others in one collective before it stops with one line (a rank that died or
# hangs); Lightning's own default is 30 minutes.
DDP_TIMEOUT = 120.0

#: Accepted ``--strategies`` names and the row label of each.
STRATEGY_NAMES: dict[str, str] = {
    "bsn": "BSN",
    "darts": "DARTS",
    "gumbel-darts": "GumbelDARTS",
    "enas": "ENAS",
    "proxyless": "Proxyless",
    "random": "RandomOneShot",
    "darts+penalty": "DARTS+penalty",
    "proxyless+penalty": "Proxyless+penalty",
    "darts-fast": "DARTS, arch lr 1e-2 (not its paper's)",
}
#: Peers away from their authors' settings, asked for by name only: DARTS with 33x its paper's architecture lr 3e-4.
PEER_VARIANTS: dict[str, dict[str, Any]] = {"darts-fast": {"arc_learning_rate": 1e-2}}
#: The rows of a comparison by default: every strategy at its authors' settings.
STRATEGIES: tuple[str, ...] = tuple(n for n in STRATEGY_NAMES if n not in PEER_VARIANTS)
#: Rows that search nothing: fixed networks, retrained like every found architecture.
FIXED_NAMES: dict[str, str] = {
    "full": "Full super network",
    "cheapest": "Cheapest connected path",
    "resnet": "Plain ResNet (fabric, no shortcuts)",
    "two-conv": "2-conv network (<100K params)",
}
#: The fixed rows that are no architecture of the searched space (any space: no gates needed).
STANDALONE_FIXED = ("two-conv",)
#: Rows of a kind at a budget of their own, ``<kind>@<budget>``: BSN searching under it, random architectures
#: drawn within it (anywhere in it, or costing 90-100% of it).
BUDGETED_KINDS: dict[str, str] = {
    "bsn": "BSN {budget}",
    "bsn-abs": "BSN abs {budget}",
    "bsn-abs-warm": "BSN abs, 1 weights-only epoch first {budget}",
    "bsn-k2": "BSN 2 samples {budget}",
    "bsn-disarm": "BSN DisARM {budget}",
    "bsn-abs-disarm": "BSN abs, DisARM {budget}",
    "bsn-lagrange": "BSN lagrange {budget}",
    "bsn-filled": "BSN, export filled to the budget {budget}",
    "bsn-lagrange-filled": "BSN lagrange, export filled to the budget {budget}",
    "bsn-val": "BSN held-out reward {budget}",
    "bsn-supernet": "BSN, chosen on the super network {budget}",
    "random-arch": "Random arch <= {budget}",
    "random-arch90": "Random arch 90-100% of {budget}",
}
#: BSN's rows and the options each sets over the configuration's (``bsn-abs``: the |C/B - 1| penalty, ``-warm`` after a
#: weights-only epoch, ``-disarm`` with DisARM's pairs, ``bsn-lagrange`` the learned multiplier, ``-filled`` the export
#: filled to the budget; the others its estimators: 2 samples with leave-one-out, DisARM's pair, the held-out reward).
BSN_KINDS: dict[str, dict[str, Any]] = {
    "bsn": {},
    "bsn-abs": {"penalty": "abs"},
    "bsn-abs-warm": {"penalty": "abs", "warmup_epochs": 1},
    "bsn-k2": {"num_samples": 2},
    "bsn-disarm": {"estimator": "disarm", "num_samples": 1},
    "bsn-abs-disarm": {"penalty": "abs", "estimator": "disarm", "num_samples": 1},
    "bsn-lagrange": {"penalty": "lagrange"},
    "bsn-filled": {"select": "filled"},
    "bsn-lagrange-filled": {"penalty": "lagrange", "select": "filled"},
    "bsn-val": {"reward_data": "val"},
    "bsn-supernet": {"select": "supernet"},
}
#: The cost band of each random-architecture kind, as fractions of its budget.
RANDOM_BANDS: dict[str, tuple[float, float]] = {"random-arch": (0.0, 1.0), "random-arch90": (0.9, 1.0)}
#: Strategies whose architecture weights also give a row derived the DARTS paper's way (``<name>:derived``).
DERIVED_FROM: tuple[str, ...] = (
    "darts",
    "gumbel-darts",
    "proxyless",
    "darts+penalty",
    "proxyless+penalty",
    "darts-fast",
)
DERIVED = ":derived"


class UsageError(ValueError):
    """Bad input from the user: the CLI prints it on one line and exits with code 2."""


def bsn_defaults() -> dict[str, Any]:
    """BSN's keyword options and their defaults, read from the one place they are written: BSN's signature.

    Read from ``strategy.py``'s source (what :meth:`BSN.option_defaults` reads by introspection), so that the
    configurations and the command line have them without importing torch and NNI; a test checks both agree.
    """
    tree = ast.parse((Path(__file__).parents[1] / "strategy" / "bsn.py").read_text())
    module = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    not_options = ast.literal_eval(module["_NOT_OPTIONS"])
    bsn = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BSN")
    init = next(n for n in bsn.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    return {
        arg.arg: ast.literal_eval(default)
        for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults)
        if arg.arg not in not_options
    }


_BSN = bsn_defaults()


@dataclass
class JobConfig:
    """What every job is given: the space, the data, the budget, the weights' optimizer, BSN's options, the
    output. Each job's configuration adds its own and may change a default."""

    space: str = "cnf"
    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None  # None: every training image
    cost: str = "macs"
    budget: str = "50%"
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    # space shape
    layers: int = 4
    channels: int = 16
    image_size: int | None = 16
    units: int = 2
    maps: tuple[int, ...] = (8, 16, 32)
    shortcuts: str = "slr"
    # the weights' optimizer
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    # BSN: its defaults are BSN's own (bsn_defaults)
    lam: float = _BSN["lam"]
    penalty: str = _BSN["penalty"]
    num_samples: int = _BSN["num_samples"]
    same_batch: bool = _BSN["same_batch"]
    estimator: str = _BSN["estimator"]
    reward_data: str = _BSN["reward_data"]
    arc_learning_rate: float = _BSN["arc_learning_rate"]
    init_keep_prob: float | str = _BSN["init_keep_prob"]
    select: str = _BSN["select"]
    onnx: bool = True
    out: str = "bsn-search"
    force: bool = False

    def bsn_options(self) -> dict[str, Any]:
        """The BSN keyword arguments this configuration sets."""
        return {name: getattr(self, name) for name in _BSN if hasattr(self, name)}

    def as_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class SearchConfig(JobConfig):
    """Everything ``nni-bsn search`` needs; the defaults are a few-minute run on digits with 2 CPU cores."""

    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    ddp_timeout: float = DDP_TIMEOUT
    momentum: float = 0.9
    lr_milestones: tuple[int, ...] = ()
    arc_optimizer: str = _BSN["arc_optimizer"]
    warmup_epochs: int = _BSN["warmup_epochs"]
    allow_over_budget: bool = _BSN["allow_over_budget"]
    finetune_epochs: int = 0  # after the search
    resume: bool = False
    preset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompareConfig(JobConfig):
    """Everything ``nni-bsn compare`` needs; the defaults run all eight rows on digits in minutes on 2 CPU cores.

    The budget is BSN's, the +penalty rows' baseline, and the "within budget" column's; every search and every
    retraining uses the same optimizer."""

    strategies: tuple[str, ...] = STRATEGIES
    epochs: int = 3
    retrain_epochs: int | None = None  # None: the search epochs
    # Stop a search once its most probable architecture is the same at this many consecutive epoch ends
    # (``epochs`` is then the most); None: every search runs ``epochs``.
    settle: int | None = None
    channels: int = 8
    # Lightning's limit_train_batches / limit_val_batches for searches and retraining (tests use a few batches)
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    # One thread per strategy process: on a 2-core machine that other work shares, a 2-thread OpenMP pool runs
    # 5-40x slower; one thread stays within ~2x. None: torch's default (all cores).
    threads: int | None = 1
    strategy_timeout: float | None = None  # seconds per strategy (search + retraining), None: no limit
    seeds: tuple[int, ...] | None = None  # None: the one seed of ``seed``
    random_archs: int = 5  # architectures drawn per random-arch row and seed
    jobs: int = 1  # rows run at once, each in its own process
    resume: bool = False  # reuse the rows an interrupted or failed run kept in <out>.partial/rows/
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    ddp_timeout: float = DDP_TIMEOUT
    out: str = "bsn-compare"

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds every row runs with (``seeds``, else ``(seed,)``)."""
        return tuple(self.seeds) if self.seeds else (self.seed,)

    @property
    def retrain(self) -> int:
        """Retraining epochs (the search epochs unless ``retrain_epochs`` is set)."""
        return self.retrain_epochs if self.retrain_epochs is not None else self.epochs

    def search_config(self) -> SearchConfig:
        """The :class:`SearchConfig` with this space, data and optimizer (what ``build_space`` reads)."""
        known = {f.name for f in fields(SearchConfig)}
        return SearchConfig(**{k: v for k, v in asdict(self).items() if k in known})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompareConfig:
        """The configuration written by :meth:`as_dict`."""
        values = dict(values)
        for key in ("strategies", "maps", "seeds"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def canonical_dataset(name: str) -> str | None:
    """The dataset's name as :data:`DATASETS` spells it (``fashion_mnist`` -> ``fashion-mnist``), else None."""
    key = str(name).lower().replace("-", "").replace("_", "")
    return next((d for d in DATASETS if d.replace("-", "") == key), None)


def default_image_size(dataset: str, configured: int | None) -> int | None:
    """The input size of a job that does not give one: the configured size on digits, else 32."""
    return configured if canonical_dataset(dataset) == "digits" else CIFAR_IMAGE_SIZE


def row_kind(name: str) -> str:
    """The kind of row ``name``: ``bsn`` for ``bsn@25%``, ``darts`` for ``darts:derived``, else the name."""
    return name.partition("@")[0].partition(":")[0]


def row_budget(name: str) -> str | None:
    """The budget of a ``<kind>@<budget>`` row (e.g. ``bsn@25%``, ``random-arch@10%``), else None."""
    kind, at, budget = name.partition("@")
    return budget if at and kind in BUDGETED_KINDS else None


def bsn_row_budget(name: str) -> str | None:
    """The budget of a ``bsn@<budget>`` or ``bsn-abs@<budget>`` row (BSN at its own budget), else None."""
    return row_budget(name) if row_kind(name) in BSN_KINDS else None


def row_label(name: str) -> str:
    """The table label of row ``name``."""
    budget = row_budget(name)
    if budget is not None:
        return BUDGETED_KINDS[row_kind(name)].format(budget=budget)
    base = name.removesuffix(DERIVED)
    label = {**STRATEGY_NAMES, **FIXED_NAMES}[base]
    return label + " (DARTS derivation)" if name.endswith(DERIVED) else label


def _known(name: str) -> bool:
    return name in STRATEGY_NAMES or name in FIXED_NAMES or row_budget(name) is not None


def parse_strategies(text: str | Sequence[str]) -> tuple[str, ...]:
    """Row names from ``'bsn,darts,...'`` (or a list); raises :class:`UsageError` on an empty or unknown name."""
    from nni_bsn.strategy.budget import parse_budget

    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(n).strip().lower() for n in items if str(n).strip()]
    if not names:
        raise UsageError(f"--strategies is empty; give comma-separated names among {', '.join(STRATEGIES)}")
    unknown = [n for n in names if not _known(n)]
    if unknown:
        raise UsageError(
            f"unknown strategy {unknown[0]!r}; choose among {', '.join(tuple(STRATEGY_NAMES) + tuple(FIXED_NAMES))} "
            "(or bsn@<budget>, e.g. bsn@25%, for BSN at its own budget; random-arch@<budget> or "
            "random-arch90@<budget> for random architectures within it)"
        )
    for n in names:
        if row_budget(n) is not None:
            try:
                parse_budget(row_budget(n))
            except ValueError as e:
                raise UsageError(f"strategy {n!r}: {e}") from None
    return tuple(dict.fromkeys(names))


def distributed_devices(cost: str) -> int | None:
    """The device count of a ``distributed:N`` cost, else None; raises :class:`UsageError` on a bad ``N``."""
    if not str(cost).startswith("distributed"):
        return None
    name, colon, n = str(cost).partition(":")
    if name != "distributed" or not colon or not n.strip().isdigit() or int(n) < 1:
        raise UsageError(
            f"cost {cost!r}: write distributed:N with N a positive number of devices, e.g. distributed:4"
        )
    return int(n)


def check_data_cost_budget(dataset: str, cost: str, budget: Any) -> None:
    """Raise :class:`UsageError` (one line) for an unknown dataset or cost, or a malformed budget."""
    from nni_bsn.strategy.budget import parse_budget

    if canonical_dataset(dataset) is None:
        raise UsageError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if cost not in COSTS[:-1] and distributed_devices(cost) is None:
        raise UsageError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
    try:
        parse_budget(budget)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_space_shape(cfg: JobConfig) -> None:
    """Raise :class:`UsageError` for a ResNet-fabric shape the space would refuse deep in its constructor."""
    if cfg.space != "resnet-fabric":
        return
    if not isinstance(cfg.shortcuts, str) or set(cfg.shortcuts) - set("slr"):
        raise UsageError(
            f"--shortcuts must use only the letters s, l, r ('' for none), got {cfg.shortcuts!r}"
        )
    if not cfg.maps or min(cfg.maps) < 1:
        raise UsageError(f"--maps must be comma-separated positive channel counts, got {cfg.maps!r}")


def check_search_config(cfg: SearchConfig) -> None:
    """Raise :class:`UsageError` if ``cfg`` names an unknown space, dataset or cost, or a bad budget or shape."""
    if cfg.space not in SPACES:
        raise UsageError(f"unknown space {cfg.space!r}; choose one of {', '.join(SPACES)}")
    check_space_shape(cfg)
    check_data_cost_budget(cfg.dataset, cfg.cost, cfg.budget)


def check_compare_config(cfg: CompareConfig) -> None:
    """Raise :class:`UsageError` if ``cfg`` names an unknown strategy or space, or a bad budget, shape, epoch
    count or timeout."""
    parse_strategies(cfg.strategies)
    if cfg.space not in COMPARE_SPACES:
        raise UsageError(
            f"compare runs on the fabrics and NasBench201; unknown or unsupported space {cfg.space!r}: choose "
            f"{', '.join(COMPARE_SPACES)}"
        )
    needs_gates = set(FIXED_NAMES) - set(STANDALONE_FIXED)
    gated = [n for n in parse_strategies(cfg.strategies) if n in needs_gates or n.endswith("+penalty")]
    if gated and cfg.space not in FABRICS:
        raise UsageError(
            f"{gated[0]!r} needs a fabric's gates ({' or '.join(FABRICS)}); leave it out on {cfg.space}"
        )
    if cfg.epochs < 1 or cfg.retrain < 1:
        raise UsageError(f"epochs must be >= 1, got search {cfg.epochs} and retrain {cfg.retrain}")
    timeout = cfg.strategy_timeout
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--strategy-timeout must be a positive number of seconds, got {timeout!r}")
    if cfg.seeds is not None and not cfg.seeds:
        raise UsageError("--seeds is empty; give comma-separated integers, e.g. --seeds 0,1,2")
    if len(set(cfg.seed_list)) != len(cfg.seed_list):
        raise UsageError(f"--seeds repeats a seed: {','.join(map(str, cfg.seed_list))}")
    if cfg.settle is not None and not (isinstance(cfg.settle, int) and 2 <= cfg.settle <= cfg.epochs):
        raise UsageError(
            f"--settle must be an integer from 2 to --epochs ({cfg.epochs}), got {cfg.settle!r}: it counts the "
            "epoch ends with the same most probable architecture"
        )
    for option in ("random_archs", "jobs", "devices", "num_nodes"):
        if not isinstance(getattr(cfg, option), int) or getattr(cfg, option) < 1:
            raise UsageError(
                f"--{option.replace('_', '-')} must be a positive integer, got {getattr(cfg, option)!r}"
            )
    check_space_shape(cfg)
    check_data_cost_budget(cfg.dataset, cfg.cost, cfg.budget)
