"""``nni-bsn compare``: BSN beside NNI's DARTS / GumbelDARTS / ENAS / Proxyless / RandomOneShot on the same work.

Every strategy searches a fresh instance of the same space, on the same data, with the same seed and the same number
of epochs, through ``NasExperiment`` with the quiet config. Each search runs in a fresh Python process
(``python -m nni_bsn.compare <job.json>``): its peak memory (``ru_maxrss``) is its own, and NNI's global state
(experiment manifest, mutation hooks, profiler formulas) cannot leak from one strategy to the next. The found
architecture is then pruned (gates on no input -> output path are dropped: they cannot change the output), frozen
from a fresh space and retrained from scratch the same way for every strategy; its accuracy, MACs, parameters,
ONNX Runtime latency and 2-device makespan make one row of the table.

Two extra rows use NNI's own cost-aware option: ``darts+penalty`` and ``proxyless+penalty`` add an
``ExpectationProfilerPenalty`` over NNI's ``FlopsProfiler`` (built on the raw space) to the architecture loss, with
the budget as baseline. Stock NNI 3.0 hands that penalty Python floats, so it never reaches α
(nni_integration.md §4.3); these rows use the live-probability fix of :mod:`nni_bsn.compat`.

A strategy that fails gets a row ``failed: <reason>``; the others still run and every output is written.
:func:`run_compare` reports the failures in ``failed``; the CLI then exits with code 1.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .config import SearchConfig, UsageError, check_data_cost_budget

__all__ = ["CompareConfig", "STRATEGIES", "STRATEGY_NAMES", "parse_strategies", "check_config", "run_compare",
           "fabric_flops_profiler", "markdown_table", "equivalent_command"]

_logger = logging.getLogger(__name__)

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
}
STRATEGIES: tuple[str, ...] = tuple(STRATEGY_NAMES)


def _bsn_budget(name: str) -> str | None:
    """The budget of a ``bsn@<budget>`` row (BSN at its own budget, e.g. ``bsn@25%``), else None."""
    return name.split("@", 1)[1] if name.startswith("bsn@") else None


def row_label(name: str) -> str:
    """The table label of strategy ``name``."""
    budget = _bsn_budget(name)
    return f"BSN {budget}" if budget is not None else STRATEGY_NAMES[name]
COMPARE_SPACES = ("cnf", "resnet-fabric")
INHERITED_BN_BATCHES = 20

COLUMNS = ["strategy", "status", "val_acc", "test_acc", "inherited_val_acc", "inherited_test_acc", "macs", "params",
           "latency_ms", "distributed_ms", "search_seconds", "step_ms", "search_rss_growth_mb", "search_peak_rss_mb",
           "retrain_seconds", "budget_cost", "within_budget", "connected", "gates_on", "gates_alive", "gates_total"]


@dataclass
class CompareConfig:
    """Everything ``nni-bsn compare`` needs; the defaults run all eight rows on digits in minutes on 2 CPU cores."""

    strategies: tuple[str, ...] = STRATEGIES
    space: str = "cnf"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 3
    retrain_epochs: int | None = None  # None: the search epochs
    batch_size: int = 64
    seed: int = 0
    # the budget (BSN's, the penalty rows' baseline, and the "within budget" column)
    cost: str = "macs"
    budget: str = "50%"
    # space shape
    layers: int = 4
    channels: int = 8
    image_size: int | None = 16
    units: int = 2
    maps: tuple[int, ...] = (8, 16, 32)
    shortcuts: str = "slr"
    # weights: the same optimizer for every search and every retraining
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    # BSN (those of `nni-bsn search`)
    lam: float = 2.0
    num_samples: int = 4
    arc_learning_rate: float = 0.1
    init_keep_prob: float | str = "auto"
    # Lightning's limit_train_batches / limit_val_batches for searches and retraining (tests use a few batches)
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    onnx: bool = True
    # torch threads of each strategy's process (None: torch's default, all cores). One by default: on a 2-core
    # machine that other work shares, a 2-thread OpenMP pool runs 5-40x slower; one thread stays within ~2x.
    threads: int | None = 1
    strategy_timeout: float | None = None  # seconds per strategy (search + retraining), None: no limit
    out: str = "bsn-compare"
    force: bool = False

    @property
    def retrain(self) -> int:
        return self.retrain_epochs if self.retrain_epochs is not None else self.epochs

    def search_config(self) -> SearchConfig:
        """The :class:`SearchConfig` with this space, data and optimizer (what ``build_space`` reads)."""
        known = {f.name for f in fields(SearchConfig)}
        return SearchConfig(**{k: v for k, v in asdict(self).items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompareConfig:
        values = dict(values)
        for key in ("strategies", "maps"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def parse_strategies(text: str | Sequence[str]) -> tuple[str, ...]:
    """Strategy names from ``'bsn,darts,...'`` (or a list); raises :class:`UsageError` on an empty or unknown name."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(n).strip().lower() for n in items if str(n).strip()]
    if not names:
        raise UsageError(f"--strategies is empty; give comma-separated names among {', '.join(STRATEGIES)}")
    unknown = [n for n in names if n not in STRATEGY_NAMES and _bsn_budget(n) is None]
    if unknown:
        raise UsageError(f"unknown strategy {unknown[0]!r}; choose among {', '.join(STRATEGIES)} "
                         "(or bsn@<budget>, e.g. bsn@25%, for BSN at its own budget)")
    from .budget import parse_budget

    for n in names:
        if _bsn_budget(n) is not None:
            try:
                parse_budget(_bsn_budget(n))
            except ValueError as e:
                raise UsageError(f"strategy {n!r}: {e}") from None
    return tuple(dict.fromkeys(names))


def check_config(cfg: CompareConfig) -> None:
    """Raise :class:`UsageError` if ``cfg`` names an unknown strategy or space, or a bad budget or epoch count."""
    parse_strategies(cfg.strategies)
    if cfg.space not in COMPARE_SPACES:
        raise UsageError(f"compare runs on the fabrics; unknown or unsupported space {cfg.space!r}: choose "
                         f"{' or '.join(COMPARE_SPACES)}")
    if cfg.epochs < 1 or cfg.retrain < 1:
        raise UsageError(f"epochs must be >= 1, got search {cfg.epochs} and retrain {cfg.retrain}")
    check_data_cost_budget(cfg.dataset, cfg.cost, cfg.budget)


# ----- NNI's FlopsProfiler on the fabrics --------------------------------------------------------------------------

_FORMULAS_REGISTERED = False


def _register_fabric_formulas() -> None:
    """Shape and FLOPs formulas for the fabric modules NNI's profiler does not know (once per process).

    ``Zero`` (an 'off' gate: zeros of the gated op's output shape, no compute) and ``UpConvBN`` (nearest x2
    upsampling, then conv-BN at the output resolution: ``F.interpolate`` has no NNI shape formula). Results are
    floats, like NNI's BatchNorm formula without normalisation counting, because NNI's expectation cannot sum
    ints with floats across the candidates of a choice.
    """
    global _FORMULAS_REGISTERED
    if _FORMULAS_REGISTERED:
        return
    from nni.nas.profiler.pytorch.flops import FlopsResult, register_flops_formula
    from nni.nas.profiler.pytorch.utils import profiler_leaf_module, register_shape_inference_formula
    from nni.nas.profiler.pytorch.utils.shape import MutableShape

    from search_spaces.ops import UpConvBN, Zero

    def zero_shape(module, x):
        n, _, h, w = x.real_shape
        if module.stride > 1:
            h, w = (h - 1) // module.stride + 1, (w - 1) // module.stride + 1
        return MutableShape(n, module.out_channels, h * module.upsample, w * module.upsample)

    def up_shape(module, x):
        n, _, h, w = x.real_shape
        return MutableShape(n, module.conv[0].out_channels, 2 * h, 2 * w)

    def up_flops(module, inputs, output, count_bias=True):
        conv = module.conv[0]
        kernel = conv.kernel_size[0] * conv.kernel_size[1]
        bias = conv.bias is not None
        resolution = int(output[-2]) * int(output[-1])
        return FlopsResult(float(conv.out_channels * resolution * (kernel * conv.in_channels + (bias and count_bias))),
                           float(conv.out_channels * (conv.in_channels * kernel + bias)))

    for cls, formula in ((Zero, zero_shape), (UpConvBN, up_shape)):
        profiler_leaf_module(cls)
        register_shape_inference_formula(cls, formula)
    register_flops_formula(Zero, lambda module, inputs, output: FlopsResult(0.0, 0.0))
    register_flops_formula(UpConvBN, up_flops)
    _FORMULAS_REGISTERED = True


def fabric_flops_profiler(space: Any, input_shape: Sequence[int]):
    """NNI's ``FlopsProfiler`` on a raw fabric space, counting multiply-accumulates of convolutions and linears.

    Bias, normalisation and activation counts are off, so the figure is comparable to fvcore's MACs. NNI counts
    every 'on' gate (dead or not), so on a pruned architecture it is above :class:`evaluators.MacsCost`.
    """
    import torch
    from nni.nas.profiler.pytorch.flops import FlopsProfiler

    _register_fabric_formulas()
    # Batch 2: BatchNorm in training mode rejects one value per channel at 1x1 maps; FLOPs ignore the batch.
    example = torch.randn(2, *tuple(input_shape)[1:])
    was_training = space.training
    try:
        return FlopsProfiler(space, example, count_bias=False, count_normalization=False, count_activation=False)
    finally:
        space.train(was_training)


# ----- one strategy, in its own process ------------------------------------------------------------------------------


def _classification(cfg: CompareConfig, train, val, num_classes: int, epochs: int, callbacks=()):
    import torch
    from nni.nas.evaluator.pytorch import Classification

    limits = {k: v for k, v in (("limit_train_batches", cfg.limit_train_batches),
                                ("limit_val_batches", cfg.limit_val_batches)) if v is not None}
    return Classification(
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        optimizer={"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer],
        train_dataloaders=train, val_dataloaders=val, num_classes=num_classes, max_epochs=epochs,
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=False, num_sanity_val_steps=0, callbacks=list(callbacks), deterministic=False, **limits,
    )


def _make_strategy(name: str, cfg: CompareConfig, space: Any, input_shape: tuple[int, ...], budget: dict[str, Any]):
    """The strategy of row ``name`` and what to say about its set-up."""
    from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, RandomOneShot

    from .builders import build_cost
    from .compat import DartsWithPenalty, ProxylessWithPenalty, TaggedENAS
    from .strategy import BSN

    if name == "bsn" or _bsn_budget(name) is not None:
        return BSN(cost=build_cost(cfg.cost, input_shape), budget=_bsn_budget(name) or cfg.budget, lam=cfg.lam,
                   num_samples=cfg.num_samples, arc_learning_rate=cfg.arc_learning_rate,
                   init_keep_prob=cfg.init_keep_prob), {}
    if name in ("darts+penalty", "proxyless+penalty"):
        from .builders import rebuild_space

        # On a separate copy of the raw space: shape inference runs a forward pass (BatchNorm statistics move).
        profiler = fabric_flops_profiler(rebuild_space(budget["space_spec"]), input_shape)
        full = float(profiler.profile({label: "on" for label in space.gate_labels}))
        baseline = budget["fraction"] * full
        penalty = {"profiler": profiler, "baseline": baseline, "scale": cfg.lam, "nonlinear": "positive"}
        cls = DartsWithPenalty if name == "darts+penalty" else ProxylessWithPenalty
        info = {"penalty": {"profiler": "nni FlopsProfiler (MACs of conv/linear, every 'on' gate)",
                            "full_flops": full, "baseline": baseline, "scale": cfg.lam, "nonlinear": "positive",
                            "aggregate": "add", "probabilities": "live tensors (nni_bsn.compat fix)"}}
        return cls(penalty=penalty), info
    factories: dict[str, Callable[[], Any]] = {
        "darts": DARTS, "gumbel-darts": GumbelDARTS, "proxyless": Proxyless, "random": RandomOneShot,
        "enas": lambda: TaggedENAS(reward_metric_name="val_acc"),
    }
    return factories[name](), {}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


def search_and_evaluate(cfg: CompareConfig, name: str, budget: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run strategy ``name`` on ``cfg`` and evaluate what it found; the row's numbers (meant for a fresh process)."""
    import pytorch_lightning as pl
    import torch
    from nni.nas.experiment import NasExperiment

    from .builders import all_costs, build_cost, build_space, rebuild_space
    from .compat import quiet_experiment_config
    from .data import get_dataloaders
    from .evaluation import evaluate_accuracy, recalibrate_batchnorm
    from .training import StepTimer

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    train, val, test, info = get_dataloaders(cfg.dataset, cfg.data_dir, cfg.batch_size, cfg.image_size, cfg.seed)
    space, space_spec = build_space(cfg.search_config(), info.in_channels, info.num_classes, info.image_size)
    input_shape = (1, info.in_channels, info.image_size, info.image_size)
    strategy, setup = _make_strategy(name, cfg, space, input_shape, {**budget, "space_spec": space_spec})
    timer = StepTimer()
    evaluator = _classification(cfg, train, val, info.num_classes, cfg.epochs, callbacks=[timer])
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the same state for every strategy at fit time
    nni_dir = workdir / "nni"
    rss_before = _rss_mb()
    started = time.perf_counter()
    exp = NasExperiment(space, evaluator, strategy, config=quiet_experiment_config(nni_dir))
    try:
        exp.run()
        search_seconds = time.perf_counter() - started
        rss_after = _rss_mb()
        model = next(iter(strategy.list_models()))  # once: ENAS and RandomOneShot export a new sample each call
        arch = dict(model.sample)
        inherited = copy.deepcopy(model.executable_model())  # freeze shares weights with the supernet
        extra: dict[str, Any] = dict(setup)
        module = strategy.oneshot_module
        if name == "bsn" or _bsn_budget(name) is not None:  # bsn@25% rows too
            rep = strategy.report()
            extra["bsn_selection"] = {k: rep.get(k) for k in ("method", "within_budget", "connected", "costs",
                                                               "start_keep_prob")}
        if name == "enas":
            trajectories = int(module._trajectory_counter)
            extra["enas"] = {"trajectories": trajectories, "batches_per_update": module.batches_per_update,
                             "ppo_updates": int(trajectories // module.batches_per_update)}
        # Per-gate probabilities ('prob/...') are left out: the architecture is in the row already.
        final_metrics = {k: round(float(v), 6) for k, v in module.trainer.callback_metrics.items()
                         if v is not None and not k.startswith("prob/") and torch.as_tensor(v).numel() == 1}
    finally:
        exp.stop()  # NNI would otherwise save its experiment checkpoint at interpreter exit
        shutil.rmtree(nni_dir, ignore_errors=True)

    # Accuracy with the supernet's weights: no training, BatchNorm statistics re-estimated for this sub-network.
    recalibrate_batchnorm(inherited, train, batches=INHERITED_BN_BATCHES)
    inherited_acc = {"val": evaluate_accuracy(inherited, val), "test": evaluate_accuracy(inherited, test)}
    del inherited

    # Retrain from scratch: the pruned architecture on a fresh space, the same optimizer, epochs and seed for all.
    fresh = rebuild_space(space_spec)
    pruned = fresh.prune(arch) if hasattr(fresh, "prune") else arch
    connected = bool(fresh.is_connected(arch)) if hasattr(fresh, "is_connected") else None
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net = rebuild_space(space_spec).freeze(pruned)
    started = time.perf_counter()
    _classification(cfg, train, val, info.num_classes, cfg.retrain).fit(net)
    retrain_seconds = time.perf_counter() - started
    accuracy = {"val": evaluate_accuracy(net, val), "test": evaluate_accuracy(net, test)}

    costs = all_costs(space_spec, pruned, input_shape)
    budget_cost = float(build_cost(cfg.cost, input_shape).bind(fresh).cost(pruned))
    latency = onnx_error = None
    if cfg.onnx:
        from .export import export_onnx, measure_ort_latency

        onnx_dir = Path(tempfile.mkdtemp(prefix="onnx-", dir=workdir))
        try:
            export_onnx(net, next(iter(test))[0][:8], onnx_dir / "model.onnx")
            latency = measure_ort_latency(onnx_dir / "model.onnx", input_shape)
        except Exception as e:  # the row keeps its other numbers; the reason goes into the table notes
            onnx_error = _one_line(e)
            _logger.exception("ONNX export or latency failed for %s", name)
        finally:
            shutil.rmtree(onnx_dir, ignore_errors=True)
    gates = [label for label, v in arch.items() if v in ("on", "off")]
    return {
        "strategy": row_label(name),
        "name": name,
        "status": "ok",
        "strategy_args": repr(strategy),
        "val_acc": accuracy["val"],
        "test_acc": accuracy["test"],
        "inherited_val_acc": inherited_acc["val"],
        "inherited_test_acc": inherited_acc["test"],
        "macs": costs["macs"],
        "params": costs["params"],
        "latency_ms": latency["median_ms"] if latency else None,
        "latency": latency,
        "onnx_error": onnx_error,
        "distributed_ms": (costs.get("distributed") or {}).get("makespan_ms"),
        "search_seconds": round(search_seconds, 3),
        "step_ms": timer.summary()["step_ms_median"],
        "search_timing": timer.summary(),
        "torch_threads": torch.get_num_threads(),
        "search_rss_growth_mb": round(rss_after - rss_before, 1),
        "search_peak_rss_mb": round(rss_after, 1),
        "retrain_seconds": round(retrain_seconds, 3),
        "budget_cost": budget_cost,
        "within_budget": budget_cost <= budget["limit"] * (1 + 1e-9),
        "connected": connected,
        "gates_on": sum(arch[g] == "on" for g in gates),
        "gates_alive": sum(pruned[g] == "on" for g in gates),
        "gates_total": len(gates),
        "arch": arch,
        "pruned_arch": pruned,
        "final_epoch_metrics": final_metrics,
        **extra,
    }


def _worker_main(job_path: str) -> int:
    """Entry of the per-strategy process: read the job, run it, write the result (or the failure) as JSON."""
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for logger_name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "nni"):
        logging.getLogger(logger_name).setLevel(logging.ERROR)
    job = json.loads(Path(job_path).read_text())
    cfg = CompareConfig.from_dict(job["config"])
    result_path = Path(job["result"])
    try:
        import nni_bsn  # noqa: F401  (compat: warning filters and the filelock guard before NNI runs)

        result = search_and_evaluate(cfg, job["strategy"], job["budget"], Path(job["workdir"]))
    except Exception as e:
        import traceback

        traceback.print_exc()
        result = {"strategy": row_label(job["strategy"]), "name": job["strategy"], "status": "failed",
                  "error": _one_line(e)}
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, result_path)
    return 0 if result["status"] == "ok" else 1


def _run_in_process(cfg: CompareConfig, name: str, budget: dict[str, Any], jobdir: Path, log: Path) -> dict[str, Any]:
    """Run one strategy in a fresh ``python -m nni_bsn.compare`` process; its output goes to ``log``."""
    workdir = jobdir / name.replace("+", "_")
    workdir.mkdir(parents=True)
    job = {"config": cfg.as_dict(), "strategy": name, "budget": budget, "workdir": str(workdir),
           "result": str(workdir / "result.json")}
    (workdir / "job.json").write_text(json.dumps(job, indent=2))
    failed = {"strategy": row_label(name), "name": name, "status": "failed"}
    with open(log, "w") as out:
        try:
            proc = subprocess.run([sys.executable, "-m", "nni_bsn.compare", str(workdir / "job.json")],
                                  stdout=out, stderr=subprocess.STDOUT, timeout=cfg.strategy_timeout,
                                  cwd=os.getcwd(), check=False)
        except subprocess.TimeoutExpired:
            return {**failed, "error": f"timed out after {cfg.strategy_timeout:g} s"}
    result_path = Path(job["result"])
    if result_path.is_file():
        return json.loads(result_path.read_text())
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return {**failed, "error": f"worker exited with code {proc.returncode}" + (f": {lines[-1][:200]}" if lines else "")}


# ----- the whole comparison ----------------------------------------------------------------------------------------


def _resolve_budget(cfg: CompareConfig, space_spec: dict, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The budget as an absolute limit in the cost's unit, and as a fraction of the whole super network."""
    from .budget import parse_budget
    from .builders import build_cost, rebuild_space

    number, pct = parse_budget(cfg.budget)
    evaluator = build_cost(cfg.cost, input_shape).bind(rebuild_space(space_spec))
    full = float(evaluator.full_cost())
    limit = number / 100.0 * full if pct else number
    cheapest = evaluator.min_cost()
    if cheapest is not None and limit < cheapest:
        raise UsageError(f"budget {cfg.budget} ({cfg.cost} {limit:.6g}) is below the cheapest connected "
                         f"architecture of this space ({cheapest:.6g}); raise --budget")
    return {"cost": cfg.cost, "spec": cfg.budget, "limit": limit, "full": full, "fraction": limit / full,
            "unit": evaluator.describe().get("unit", "")}


def _log_name(name: str) -> str:
    return name.replace("+", "_").replace("@", "_at_").replace("%", "pct")


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and OS of this machine."""
    from evaluators.latency import cpu_model

    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": mem_gib, "os": platform.platform(),
            "python": platform.python_version(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def run_compare(cfg: CompareConfig, workdir: Path, progress: Callable[[str], None] = print,
                command: str | None = None) -> dict[str, Any]:
    """Run every strategy of ``cfg`` (each in its own process), write the outputs into ``workdir``; the report.

    Outputs: ``compare.md`` (table, command, machine, versions, notes), ``compare.csv``, ``compare.json``,
    ``accuracy_vs_cost.png`` (test accuracy against MACs) and ``logs/<strategy>.log`` (each process's output).
    ``report['failed']`` names the strategies that failed; their rows say why.
    """
    from .builders import build_space
    from .data import DataError, get_dataloaders
    from .outputs import versions
    from .plots import plot_accuracy_vs_cost

    check_config(cfg)
    cfg.strategies = parse_strategies(cfg.strategies)
    try:
        _, _, _, info = get_dataloaders(cfg.dataset, cfg.data_dir, cfg.batch_size, cfg.image_size, cfg.seed)
    except DataError as e:
        raise UsageError(str(e)) from None
    space, space_spec = build_space(cfg.search_config(), info.in_channels, info.num_classes, info.image_size)
    input_shape = (1, info.in_channels, info.image_size, info.image_size)
    budget = _resolve_budget(cfg, space_spec, input_shape)
    gates = len(getattr(space, "gate_labels", []))
    del space
    progress(f"comparing {', '.join(cfg.strategies)} on {cfg.space} ({gates} gates) / {cfg.dataset} "
             f"({info.sizes['train']} training images): {cfg.epochs} search epochs, {cfg.retrain} retraining epochs, "
             f"{cfg.cost} budget {cfg.budget} = {budget['limit']:.6g}")
    machine_at_start = machine()  # its load average: other work on the machine slows every timing column
    logs = workdir / "logs"
    logs.mkdir()
    jobdir = Path(tempfile.mkdtemp(prefix="nni-bsn-compare-"))
    rows = []
    started = time.time()
    try:
        for i, name in enumerate(cfg.strategies, 1):
            progress(f"[{i}/{len(cfg.strategies)}] {name}: searching, then retraining")
            t0 = time.perf_counter()
            row_budget = budget
            if _bsn_budget(name) is not None:  # BSN at its own budget: its limit, and its "within budget" column
                row_budget = _resolve_budget(dataclasses.replace(cfg, budget=_bsn_budget(name)), space_spec, input_shape)
            row = _run_in_process(cfg, name, row_budget, jobdir, logs / f"{_log_name(name)}.log")
            row["wall_seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            if row["status"] == "ok":
                progress(f"[{i}/{len(cfg.strategies)}] {name}: val {row['val_acc']:.4f}, test {row['test_acc']:.4f}, "
                         f"MACs {row['macs']:.4g}, search {row['search_seconds']:.1f} s "
                         f"({row['wall_seconds']:.0f} s in all)")
            else:
                progress(f"[{i}/{len(cfg.strategies)}] {name}: failed: {row['error']} "
                         f"(see logs/{_log_name(name)}.log)")
    finally:
        shutil.rmtree(jobdir, ignore_errors=True)
    for row in rows:
        if row["status"] != "ok":
            row["status"] = f"failed: {row['error']}"
    load_at_end = [round(x, 2) for x in os.getloadavg()]
    report = {
        "command": command,
        "equivalent_command": equivalent_command(cfg),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "total_seconds": round(time.time() - started, 1),
        "machine": {**machine_at_start, "load_average_at_end": load_at_end},
        "versions": versions(),
        "dataset": {"name": cfg.dataset, "sizes": info.sizes, "image_size": info.image_size},
        "space": {**space_spec, "gates": gates},
        "budget": budget,
        "config": cfg.as_dict(),
        "rows": rows,
        "failed": [r["name"] for r in rows if r["status"] != "ok"],
    }
    report["notes"] = _notes(cfg, report)
    (workdir / "compare.json").write_text(json.dumps(report, indent=2, default=str))
    with open(workdir / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (workdir / "compare.md").write_text(render_markdown(report))
    plot_accuracy_vs_cost([r for r in rows if r["status"] == "ok"], workdir / "accuracy_vs_cost.png",
                          cost_key="macs", acc_key="test_acc", label_key="strategy")
    return report


def equivalent_command(cfg: CompareConfig) -> str:
    """The ``nni-bsn compare`` command line that spells out every setting of ``cfg``."""
    import shlex

    opts = [("--strategies", ",".join(cfg.strategies)), ("--space", cfg.space), ("--dataset", cfg.dataset),
            ("--data-dir", cfg.data_dir), ("--epochs", cfg.epochs), ("--retrain-epochs", cfg.retrain),
            ("--batch-size", cfg.batch_size), ("--seed", cfg.seed), ("--cost", cfg.cost), ("--budget", cfg.budget)]
    if cfg.space == "cnf":
        opts += [("--layers", cfg.layers), ("--channels", cfg.channels)]
    else:
        opts += [("--units", cfg.units), ("--maps", ",".join(map(str, cfg.maps))), ("--shortcuts", cfg.shortcuts)]
    opts += [("--image-size", cfg.image_size), ("--lam", cfg.lam), ("--init-keep-prob", cfg.init_keep_prob),
             ("--limit-train-batches", cfg.limit_train_batches),
             ("--limit-val-batches", cfg.limit_val_batches), ("--threads", cfg.threads),
             ("--strategy-timeout", cfg.strategy_timeout),
             ("--out", cfg.out)]
    words = ["nni-bsn", "compare"]
    for flag, value in opts:
        if value is not None:
            words += [flag, str(value)]
    if not cfg.onnx:
        words.append("--no-onnx")
    return shlex.join(words)


# ----- the table ---------------------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return format(value, spec)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a markdown table, one row per strategy (failed rows say why)."""
    head = ("| strategy | val acc | test acc | inherited val / test acc | MACs | params | ORT latency ms | "
            "2-device makespan ms | search s | step ms | search ΔRSS MB | alive gates | within budget |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['strategy']} | {r['status']} |" + " |" * (head.count(" | ") - 1))
            continue
        lines.append(
            f"| {r['strategy']} | {_fmt(r['val_acc'], '.4f')} | {_fmt(r['test_acc'], '.4f')} "
            f"| {_fmt(r['inherited_val_acc'], '.4f')} / {_fmt(r['inherited_test_acc'], '.4f')} "
            f"| {_fmt(r['macs'], ',.0f')} | {_fmt(r['params'], ',.0f')} | {_fmt(r['latency_ms'], '.3f')} "
            f"| {_fmt(r['distributed_ms'], '.3f')} | {_fmt(r['search_seconds'], '.1f')} | {_fmt(r['step_ms'], '.1f')} "
            f"| {_fmt(r['search_rss_growth_mb'], '.0f')} | {r['gates_alive']}/{r['gates_total']} "
            f"({r['gates_on']} on) | {_fmt(r['within_budget'], '')} |")
    return "\n".join(lines)


def _notes(cfg: CompareConfig, report: dict[str, Any]) -> list[str]:
    budget, rows = report["budget"], report["rows"]
    notes = [
        f"Same space ({cfg.space}, a fresh instance per strategy), data ({cfg.dataset}), seed ({cfg.seed}), batch "
        f"size ({cfg.batch_size}) and {cfg.epochs} search epochs for every strategy, through NasExperiment "
        "(sequential engine, raw format). Each search runs in a fresh Python process.",
        f"Retraining: the exported architecture is pruned (gates on no input -> output path cannot change the "
        f"output), frozen from a fresh space and trained from scratch for {cfg.retrain} epochs with the same "
        f"optimizer ({cfg.optimizer}, lr {cfg.learning_rate:g}, weight decay {cfg.weight_decay:g}) and seed; val "
        "and test accuracy are those of the retrained model.",
        f"Inherited accuracy: the supernet's weights for the exported architecture, no training, BatchNorm "
        f"statistics re-estimated on {INHERITED_BN_BATCHES} training batches.",
        "MACs (multiply-accumulates, fvcore) and parameters are counted on the pruned architecture. ORT latency: "
        "the retrained model exported to ONNX, ONNX Runtime CPU, batch 1, 1 thread, median of 50 runs after 10 "
        "warm-up runs. 2-device makespan: DistributedCost(devices=2), HEFT schedule with transfers (model, ms).",
        f"Budget: {budget['cost']} <= {budget['limit']:.6g} {budget['unit']} ({budget['spec']} of "
        f"{budget['full']:.6g}). BSN searches with it (lam {cfg.lam:g}); 'within budget' checks every row's "
        "pruned architecture against it. Only BSN and the +penalty rows know about it.",
        "darts+penalty / proxyless+penalty: NNI's own cost-aware option, ExpectationProfilerPenalty over NNI's "
        "FlopsProfiler built on the raw space (conv/linear MACs, every 'on' gate counted, dead or not), baseline = "
        f"the budget as the same fraction ({budget['fraction']:.3g}) of the profiler's full-network count, "
        f"scale {cfg.lam:g}, nonlinear 'positive' (a hinge, like BSN's). Stock NNI 3.0's DARTS/Proxyless penalty "
        "is inert (it receives the probabilities as Python floats, so it never reaches α); these rows use the "
        "live-probability fix of nni_bsn.compat (DartsWithPenalty / ProxylessWithPenalty).",
        "DARTS, GumbelDARTS, Proxyless, RandomOneShot and ENAS (TaggedENAS, reward_metric_name='val_acc') run with "
        "NNI's defaults. RandomOneShot exports a random architecture (by design).",
        f"Torch threads per strategy process: {cfg.threads or 'torch default (all cores)'} (one keeps timings "
        "comparable when other work shares the CPU: a 2-thread OpenMP pool on 2 busy cores runs 5-40x slower). "
        "Timing columns still depend on the machine's load (see the load averages above).",
        "search s: wall time of NasExperiment.run() (strategy set-up included: BSN binds its cost evaluator, ENAS "
        "compiles tianshou's numba code), process start, imports and data excluded. step ms: median training step. "
        "search ΔRSS MB: growth of the process's peak RSS (ru_maxrss) from just before the search to just after, "
        "in the strategy's own process; the absolute peak (in compare.json) includes ~0.9 GB of torch/NNI imports.",
    ]
    last = [f"{r['strategy']} {r['final_epoch_metrics']['train_acc']:.2f}" for r in rows
            if r["status"] == "ok" and "train_acc" in r.get("final_epoch_metrics", {})]
    if last:
        notes.append("Training accuracy of the supernet on the last search batch (noisy, one batch; ~0.1 means its "
                     "sampled or mixed paths did not learn): " + ", ".join(last) + ".")
    for r in rows:
        if r.get("enas"):
            e = r["enas"]
            notes.append(f"ENAS: {e['trajectories']} controller trajectories (one per validation batch) with NNI's "
                         f"default batches_per_update={e['batches_per_update']:g} gave {e['ppo_updates']} PPO "
                         "update(s)" + ("; its export is a sample of the untrained controller." if not e["ppo_updates"]
                                        else "."))
        if r.get("onnx_error"):
            notes.append(f"{r['strategy']}: no latency, ONNX export failed: {r['onnx_error']}")
        if r.get("connected") is False:
            notes.append(f"{r['strategy']}: the exported architecture does not connect input to output.")
    if report["failed"]:
        notes.append(f"Failed: {', '.join(report['failed'])} (their logs are in logs/); `nni-bsn compare` exits "
                     "with code 1 when a strategy failed, after writing every output.")
    return notes


def render_markdown(report: dict[str, Any]) -> str:
    """``compare.md``: the table, the command, the machine, the versions and the notes."""
    m, v = report["machine"], report["versions"]
    lines = [
        "# nni-bsn compare",
        "",
        markdown_table(report["rows"]),
        "",
        f"- command: `{report['command'] or '(Python API: nni_bsn.compare.run_compare)'}`",
        f"- every setting: `{report['equivalent_command']}`",
        f"- date: {report['date']}; total {report['total_seconds']:.0f} s",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}; "
        f"load average (1/5/15 min) {m['load_average_1_5_15']} at the start, {m['load_average_at_end']} at the end",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- space: {json.dumps(report['space'])}; data: {report['dataset']['name']} {report['dataset']['sizes']}, "
        f"image {report['dataset']['image_size']}",
        "",
        "Notes:",
        "",
        *[f"- {n}" for n in report["notes"]],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1]))
