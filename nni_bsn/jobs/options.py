"""The command line's options of the jobs, in one table: each option's config field, type and help. Defaults are
not written here: they are the configs' (:class:`SearchConfig`, :class:`CompareConfig`), whose BSN fields are BSN's.

The table gives the argparse options (:func:`add_options`), reads them back (:func:`given_options`) and writes a
configuration as a command line (:func:`command_line`).
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from nni_bsn.jobs.config import (
    CIFAR_IMAGE_SIZE,
    COMPARE_SPACES,
    COSTS,
    ESTIMATORS,
    PENALTIES,
    REWARD_DATA,
    SELECTIONS,
    SPACES,
    STRATEGY_NAMES,
    CompareConfig,
    SearchConfig,
)
from nni_bsn.jobs.presets import PRESETS

__all__ = [
    "Option",
    "OPTIONS",
    "CONFIGS",
    "COMMAND_DEFAULTS",
    "add_options",
    "given_options",
    "command_line",
    "command_defaults",
]

SEARCH = ("search", "sweep")
EVERY = ("search", "sweep", "compare")

#: The configuration each command fills.
CONFIGS: dict[str, type] = {"search": SearchConfig, "sweep": SearchConfig, "compare": CompareConfig}
#: Where a command's default differs from its configuration's.
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {"sweep": {"out": "bsn-sweep"}}


def _int_at_least(low: int, wording: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, refused with ``expected <wording>``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated integers."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def keep_prob(text: str) -> float | str:
    """An argparse type: ``auto`` or a probability strictly between 0 and 1."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a probability strictly between 0 and 1, got {text!r}"
        )
    return value


@dataclass(frozen=True)
class Option:
    """One command-line option: the config field it sets, its help, and the commands that take it.

    ``help`` (``compare_help`` for compare) may name ``{spaces}``, ``{costs}``, ``{strategies}``, ``{cifar_size}``
    and ``{default}``; without
    ``{default}`` the default is appended (``none`` says what a default of None means). A switch (``const``) takes
    no argument and sets its field to ``const``.
    """

    field: str
    help: str
    type: Callable[[str], Any] | None = None
    commands: tuple[str, ...] = EVERY
    group: str | None = None
    flag: str | None = None
    const: Any = None
    choices: tuple[Any, ...] | None = None
    space: str | None = None  # shapes this space only: a command line for another space leaves it out
    none: str | None = None
    compare_help: str | None = None  # the help of ``nni-bsn compare`` where it differs

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.field.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option(
        "strategies",
        "comma-separated, among {strategies}, or bsn@<budget> (e.g. bsn@25%) for BSN at its own budget",
        commands=("compare",),
    ),
    Option("space", "search space: {spaces}"),
    Option("dataset", "digits (embedded), cifar10, cifar100, fashion-mnist, or imagefolder (your images)"),
    Option(
        "data_dir",
        "folder holding cifar-10-batches-py/, cifar-100-python/ or Fashion-MNIST's idx files; for imagefolder, "
        "<class>/ folders of images, or train/ (val/, test/) holding them",
        none="$NNI_BSN_DATA, else for fashion-mnist Debian's dataset-fashion-mnist folder if installed, else ./data",
    ),
    Option(
        "train_size",
        "use N training images (a fixed class-balanced subset; validation and test unchanged)",
        positive_int,
        none="all",
    ),
    Option("cost", "the budgeted cost: {costs}", compare_help="BSN's budgeted cost: {costs}"),
    Option(
        "budget",
        "budget: a number in the cost's unit or a percentage",
        commands=("search", "compare"),
        compare_help="BSN's budget and the +penalty rows' baseline",
    ),
    Option("epochs", "search epochs", positive_int, compare_help="search epochs of every strategy"),
    Option(
        "retrain_epochs",
        "epochs to retrain each found architecture from scratch",
        positive_int,
        commands=("compare",),
        none="the search epochs",
    ),
    Option(
        "settle",
        "stop each search once its most probable architecture is the same at N consecutive epoch ends "
        "(--epochs is then the most; strategies without probabilities run every epoch)",
        positive_int,
        commands=("compare",),
        none="every search runs --epochs",
    ),
    Option("batch_size", "batch size", positive_int),
    Option("seed", "random seed", int),
    Option(
        "seeds",
        "comma-separated seeds: every row runs once per seed; the table gives mean +- std",
        int_list,
        commands=("compare",),
        none="the one --seed",
    ),
    Option(
        "random_archs",
        "architectures drawn per random-arch row and seed, each retrained",
        positive_int,
        commands=("compare",),
    ),
    Option("jobs", "rows run at once, each in its own process", positive_int, commands=("compare",)),
    Option("accelerator", "Lightning accelerator", choices=("auto", "cpu", "gpu")),
    Option(
        "devices",
        "devices; > 1 runs Lightning DDP (on GPUs; on CPU as many gloo processes, at most the cores)",
        positive_int,
        compare_help="devices of each row's searches and retraining (Lightning)",
    ),
    Option(
        "num_nodes",
        "nodes (machines) of a DDP run started on each by torchrun or srun, --devices on each "
        "(docs: the multi-device guide)",
        positive_int,
        compare_help="nodes of each row's searches and retraining, the comparison started on each by torchrun "
        "or srun; each row meets at a port of its own, the launch's + 1 + the row's number (docs: the "
        "multi-device guide)",
    ),
    Option(
        "ddp_timeout",
        "seconds a DDP rank waits for the others before it stops (a rank that died or hangs)",
        positive_float,
    ),
    Option(
        "preset", "the paper's configuration", choices=tuple(sorted(PRESETS)), commands=SEARCH, none="none"
    ),
    Option("force", "replace the output folder if it exists", const=True),
    Option(
        "resume",
        "continue an interrupted search from the checkpoint kept in <out>.partial/",
        const=True,
        commands=(*SEARCH, "compare"),
        compare_help="reuse the rows an interrupted or failed comparison kept in <out>.partial/rows/ (the same "
        "options; more seeds or rows may be added)",
    ),
    Option("layers", "CNF layers", positive_int, group="space shape", space="cnf"),
    Option("channels", "CNF channels", positive_int, group="space shape", space="cnf"),
    Option(
        "image_size",
        "input size (default: {default} on digits, {cifar_size} on CIFAR and Fashion-MNIST)",
        positive_int,
        group="space shape",
    ),
    Option(
        "units", "ResNet-fabric units per stage", positive_int, group="space shape", space="resnet-fabric"
    ),
    Option("maps", "ResNet-fabric channels per stage", int_list, group="space shape", space="resnet-fabric"),
    Option(
        "shortcuts",
        "ResNet-fabric shortcut letters among s, l, r ('' for none)",
        group="space shape",
        space="resnet-fabric",
    ),
    Option(
        "lam",
        "weight of the budget penalty",
        float,
        group="BSN",
        compare_help="BSN's weight of the budget penalty and the +penalty rows' scale",
    ),
    Option(
        "penalty",
        "over-budget penalty: hinge max(0, C/B - 1) (the paper's) or abs |C/B - 1| (pulls the cost to the budget)",
        choices=PENALTIES,
        group="BSN",
    ),
    Option("num_samples", "architectures per step, the batch split between them", positive_int, group="BSN"),
    Option(
        "same_batch",
        "each of the step's architectures on the whole batch, not its share (the samples' losses then differ by "
        "their architectures only; num_samples times the work)",
        const=True,
        group="BSN",
    ),
    Option(
        "select",
        "what is exported: probable (the paper's: keep-probability > 0.5, else the most probable within budget), "
        "filled (that, then the most probable gates, each with its path, while the budget holds) or supernet "
        "(candidates within budget scored by inherited validation accuracy, BatchNorm re-estimated)",
        choices=SELECTIONS,
        group="BSN",
    ),
    Option(
        "estimator",
        "the gates' gradient: reinforce (the paper's) or disarm (antithetic pairs: 2 x num_samples a step)",
        choices=ESTIMATORS,
        group="BSN",
    ),
    Option(
        "reward_data",
        "the batches the reward is measured on: train (the paper's) or val (a held-out batch a step)",
        choices=REWARD_DATA,
        group="BSN",
    ),
    Option("arc_learning_rate", "logits learning rate", float, group="BSN"),
    Option(
        "init_keep_prob",
        "initial keep-probability of every gate, or 'auto': the largest (<= 0.95) whose "
        "expected cost meets the budget; the paper's is 0.95",
        keep_prob,
        group="BSN",
    ),
    Option("warmup_epochs", "weights-only epochs first", non_negative_int, group="BSN", commands=SEARCH),
    Option(
        "allow_over_budget",
        "export the closest architecture if none fits",
        const=True,
        group="BSN",
        commands=SEARCH,
    ),
    Option(
        "finetune_epochs",
        "train the found architecture further before evaluating it",
        non_negative_int,
        group="BSN",
        commands=SEARCH,
    ),
    Option(
        "limit_train_batches",
        "training batches per epoch, for quick checks",
        positive_int,
        commands=("compare",),
        none="all",
    ),
    Option(
        "limit_val_batches",
        "validation batches per epoch, for quick checks",
        positive_int,
        commands=("compare",),
        none="all",
    ),
    Option(
        "threads",
        "torch threads of each strategy's process (one keeps timings comparable when other work "
        "shares the CPU)",
        positive_int,
        commands=("compare",),
        none="torch's default",
    ),
    Option(
        "strategy_timeout",
        "seconds allowed per strategy (search and retraining); it then fails",
        positive_float,
        commands=("compare",),
        none="no limit",
    ),
    Option(
        "onnx",
        "skip the ONNX export",
        flag="--no-onnx",
        const=False,
        compare_help="skip the ONNX export and the latency column",
    ),
    Option("out", "output folder"),
)


def options_of(command: str) -> Iterator[Option]:
    """The options of ``command``, in the table's order."""
    return (o for o in OPTIONS if command in o.commands)


def command_defaults(command: str) -> dict[str, Any]:
    """Every field of ``command``'s configuration with its default for that command."""
    config = CONFIGS[command]()
    return {**{f.name: getattr(config, f.name) for f in fields(config)}, **COMMAND_DEFAULTS.get(command, {})}


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _help(option: Option, command: str, default: Any) -> str:
    text = option.compare_help if command == "compare" and option.compare_help else option.help
    if option.const is None:
        shown = option.none if default is None and option.none else _text(default)
        text = text if "{default}" in text else text + " (default: {default})"
        text = text.format(
            default=shown or "''",
            spaces=", ".join(COMPARE_SPACES if command == "compare" else SPACES),
            costs=", ".join(COSTS),
            strategies=", ".join(STRATEGY_NAMES),
            cifar_size=CIFAR_IMAGE_SIZE,
        )
    return text.replace("%", "%%")  # argparse formats help with %


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add ``command``'s options to ``parser``; each defaults to None, meaning "not given"."""
    defaults = command_defaults(command)
    groups: dict[str, Any] = {}
    for o in options_of(command):
        target = parser if o.group is None else groups.setdefault(o.group, parser.add_argument_group(o.group))
        kwargs: dict[str, Any] = {
            "dest": o.field,
            "default": None,
            "help": _help(o, command, defaults[o.field]),
        }
        if o.const is not None:
            kwargs.update(action="store_const", const=o.const)
        else:
            kwargs.update(type=o.type, choices=o.choices)
        target.add_argument(o.flag_name, **kwargs)


def given_options(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The fields of the options given on the command line."""
    return {
        o.field: getattr(args, o.field)
        for o in options_of(command)
        if getattr(args, o.field, None) is not None
    }


def command_line(command: str, cfg: Any) -> str:
    """The ``nni-bsn <command>`` line that gives every option of ``cfg`` (switches only when on)."""
    words = ["nni-bsn", command]
    for o in options_of(command):
        value = getattr(cfg, o.field)
        if value is None or (o.space is not None and o.space != cfg.space):
            continue
        if o.const is not None:
            words += [o.flag_name] if value == o.const else []
        else:
            words += [o.flag_name, _text(value)]
    return shlex.join(words)
