"""BSN: Budgeted Super Networks as an NNI one-shot strategy."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from nni.mutable import Categorical, CategoricalMultiple, MutableAnnotation
from nni.nas.evaluator.pytorch.lightning import LightningModule
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch.strategy import OneShotStrategy, no_default_hook
from nni.nas.oneshot.pytorch.supermodule.operation import NATIVE_MIXED_OPERATIONS
from nni.nas.oneshot.pytorch.supermodule.sampling import (
    MixedOpPathSamplingPolicy,
    PathSamplingCell,
    PathSamplingInput,
    PathSamplingLayer,
    PathSamplingRepeat,
)

from evaluators.blocks import GATE_ON
from nni_bsn import compat as _compat  # noqa: F401  (guards NNI's experiment lock)
from nni_bsn.strategy.budget import (
    Budget,
    CostEvaluationError,
    calibrate_keep_prob,
    charged_costs,
    probe_archs,
    resolve_limit,
)
from nni_bsn.strategy.checks import (
    OPTION_CHECKS,
    check_costs_and_budgets,
    describe_cost,
    set_up_costs,
)
from nni_bsn.strategy.connectivity import space_connectivity
from nni_bsn.strategy.lightning import BSNLightningModule
from nni_bsn.strategy.policy import ArchitectureDistribution, is_gate

__all__ = ["BSN"]

_logger = logging.getLogger(__name__)

Arch = dict[str, Any]

_AUTO_START = 0.95  # init_keep_prob='auto' never starts above the paper's keep-probability


_FLOAT_OPTIONS = ("lam", "arc_learning_rate", "baseline_decay", "entropy_coef")
_NOT_OPTIONS = ("cost", "budget", "mutation_hooks")


class BSN(OneShotStrategy):
    """Budgeted Super Networks. See `reference <https://arxiv.org/abs/1706.00046>`__.

    T. Veniat and L. Denoyer, *Learning Time/Memory-Efficient Deep Architectures with Budgeted Super Networks*,
    CVPR 2018. Every choice of the space follows a learned distribution (a Bernoulli per binary gate
    ``LayerChoice({'off', 'on'})``, a categorical per other choice). Each training step draws
    ``num_samples`` architectures, splits the batch between them and runs each chunk through its own sampled
    path only (NNI's path-sampling super-modules); the weights follow the evaluator's optimizer on the mean
    loss, and the distribution follows REINFORCE on the reward ``-(loss + lam * penalty)``, where the penalty
    sums ``max(0, C/B - 1)`` (``'hinge'``, the paper's), ``|C/B - 1|`` (``'abs'``) or ``C/B - 1`` (``'lagrange'``,
    ``lam`` then a learned multiplier) over the budgets, costs
    being counted on the pruned architecture (gates on no input -> output path are off).

    Supported mutables are those of :class:`~nni.nas.strategy.RandomOneShot`: LayerChoice, InputChoice with
    ``n_chosen=1``, Repeat, Cell, and ``nni.choice`` in mixed operations.

    Where we differ from the original code (and why): an architecture whose input does not reach the output
    is charged the cost of the whole super network (the original charged it nothing, so cutting the network
    looked attractive); validation and export use the deterministic architecture (the original's deterministic
    evaluation never ran); only sampled paths compute (the original computed every node and multiplied by 0);
    one architecture per batch chunk rather than per example, which is what makes skipping compute possible.

    Parameters
    ----------
    cost
        A cost evaluator from :mod:`evaluators` (bound to the space at mutation time), any callable
        ``arch -> float``, or a list of these (one per budget). Before training a plain callable is called on
        at most ``budget.PROBES`` (4) probe architectures (:func:`~nni_bsn.strategy.budget.probe_archs`): a percentage
        budget is of the dearest probe, and a budget below the cheapest probe is refused (``ValueError``).
    budget
        The maximum cost: a number in the evaluator's unit or a percentage of the whole super network's cost
        (``'25%'``); a list, one per cost.
    lam
        Weight of the budget penalty in the reward (costs are normalised by the budget, so ``lam=1`` charges a
        10% excess like a 0.1 loss increase). Default 2.
    penalty
        ``'hinge'`` (only excess is penalised, the paper's), ``'abs'`` (pulled towards the budget) or
        ``'lagrange'``: the penalty ``C/B - 1`` weighted by a multiplier of ``E[C] = B`` learned by dual ascent instead
        of ``lam`` (from 0, within ``[-lam, lam]``; :class:`~nni_bsn.strategy.reward.Multiplier`).
    penalty_gradient
        How the gradient of the penalty reaches the gates' logits. ``'reinforce'`` is the paper's: REINFORCE on
        the whole reward. ``'local'`` (default) keeps REINFORCE for the loss but differentiates the expected
        penalty exactly around each sample: every gate is flipped and the sample re-costed (costs are cheap),
        which is unbiased for the same objective and far less noisy, so short searches reach the budget.
        Choices other than gates always use REINFORCE on the whole reward.
    num_samples
        Architectures sampled per step; the batch is split between them. More samples lower the variance of
        the gradient of the distribution (with a leave-one-out baseline) but run more, smaller chunks: on the
        default digits fabric a step costs 1.3x (2 samples) and 2x (4 samples) the step with 1 sample
        (``benchmarks/RESULTS.md``), so the default is 1, with a moving-average baseline.
    same_batch
        Each of the step's architectures trains and is scored on the whole batch instead of its share of it
        (``num_samples`` times the step's work, or twice with DisARM's pairs): the samples' losses then differ only
        by their architectures, not by the examples each saw (common random numbers), which is what a comparison
        of samples (the leave-one-out baseline, DisARM's pairs) needs.
    estimator
        How the gates learn from the loss. ``'reinforce'`` (the paper's): REINFORCE with the baseline below.
        ``'disarm'``: DisARM (Dong et al., 2020), an antithetic estimator for Bernoulli variables: each of the
        ``num_samples`` draws is a pair of architectures sharing one uniform draw (so a step runs ``2 *
        num_samples`` samples), and a gate learns only from pairs that disagree on it. The other choices use
        REINFORCE (leave-one-out over the step's samples) either way.
    reward_data
        The batches the architecture's reward is measured on. ``'train'`` (the paper's): the batch the weights
        just trained on. ``'val'``: a validation batch after the weights' step (a forward pass only, in training
        mode), one train and one validation batch a step as NNI's DARTS has it (an epoch is the longer of the
        two loaders, the shorter cycled); the evaluator's validation data still chooses the exported network.
    init_keep_prob
        Initial probability of keeping each gate. ``'auto'`` (default): the largest uniform probability (at most
        0.95) whose expected cost, as the reward counts it, meets every budget, found before training by costing
        a few hundred sampled architectures (a fraction of a second); so the search trains in-budget networks
        from its first step and its cost scales with the budget. When no probability meets the budget (on a
        fabric, dropping gates disconnects samples, which are charged the whole network), the one closest to it.
        With a plain callable cost, ``'auto'`` is 0.95. A number sets it directly; the paper starts every gate at
        0.95 (logits at 3), which makes the first epochs train nearly the whole super network whatever the budget.
    arc_optimizer, arc_learning_rate
        Optimizer (``'adam'`` or ``'sgd'``) and learning rate of the distribution's logits (default Adam, 0.1).
    baseline
        ``'auto'`` (leave-one-out mean of the step's samples when ``num_samples > 1``, else a moving average),
        ``'mean'`` or ``'ema'``.
    baseline_decay
        Decay of the moving-average baseline.
    entropy_coef
        Weight of an entropy bonus on the distribution (0 disables it).
    warmup_epochs
        Epochs during which only the weights train (architectures still sampled from the distribution).
    gradient_clip_val
        Gradient clipping of the weights.
    export_samples
        Architectures drawn at export time when the deterministic one misses a budget.
    select
        What is exported. ``'probable'`` (the paper's): the deterministic architecture (keep-probability > 0.5) if
        it fits, else the most probable that does. ``'filled'``: that architecture, then gates switched on, the most
        probable first (on a fabric each with the most probable path through it), while every budget holds (it
        spends the budget that ``'probable'`` leaves; :mod:`nni_bsn.strategy.fill`). ``'supernet'``
        (Once-for-All's and SPOS's way): at the end of training, in-budget candidates drawn from the distribution,
        filled towards the budget, then mutated and crossed, are scored by their inherited validation accuracy with
        BatchNorm re-estimated for each, and the best is exported (:mod:`nni_bsn.strategy.evolution`).
    allow_over_budget
        Export the closest architecture (with a warning) when none is found within every budget, instead of
        raising.
    mutation_hooks
        Extra mutation hooks (see :class:`~nni.nas.oneshot.pytorch.strategy.OneShotStrategy`).

    Examples
    --------
    >>> from nni.nas.experiment import NasExperiment
    >>> from nni_bsn import BSN
    >>> from evaluators import MacsCost
    >>> strategy = BSN(cost=MacsCost(input_shape=(1, 1, 16, 16)), budget='50%')
    >>> NasExperiment(space, evaluator, strategy).run()              # doctest: +SKIP
    >>> arch = strategy.export_top_models(formatter='dict')[0]       # doctest: +SKIP
    >>> strategy.report()                                            # doctest: +SKIP
    """

    def __init__(
        self,
        cost: Any,
        budget: float | str | Sequence[float | str],
        *,
        lam: float = 2.0,
        penalty: str = "hinge",
        penalty_gradient: str = "local",
        num_samples: int = 1,
        same_batch: bool = False,
        estimator: str = "reinforce",
        reward_data: str = "train",
        init_keep_prob: float | str = "auto",
        arc_optimizer: str = "adam",
        arc_learning_rate: float = 0.1,
        baseline: str = "auto",
        baseline_decay: float = 0.9,
        entropy_coef: float = 0.0,
        warmup_epochs: int = 0,
        gradient_clip_val: float | None = None,
        export_samples: int = 1000,
        select: str = "probable",
        allow_over_budget: bool = False,
        mutation_hooks: list | None = None,
    ):
        # The options are read from the signature (option_defaults), the one place that names them.
        given = locals()
        options = {name: given[name] for name in BSN.option_defaults()}
        super().__init__(mutation_hooks=mutation_hooks)
        self._costs, self._budget_specs = check_costs_and_budgets(cost, budget)
        for name, (ok, requirement) in OPTION_CHECKS.items():
            if not ok(options[name]):
                raise ValueError(f"BSN: {name} must be {requirement}, got {options[name]!r}")
        options = {name: float(v) if name in _FLOAT_OPTIONS else v for name, v in options.items()}
        self.cost, self.budget = cost, budget
        keep = options.pop("init_keep_prob")  # the strategy's own; the other options go to the module
        self.init_keep_prob = keep if keep == "auto" else float(keep)
        self.kwargs = options
        self.start_keep_prob: float | None = None  # what 'auto' chose (or the number given)
        self.budgets: list[Budget] = []
        self.distribution: ArchitectureDistribution | None = None
        self._prune: Callable[[Arch], Arch] | None = None
        self._is_connected: Callable[[Arch], bool] | None = None
        self._graph: Any = None  # the space's GateGraph, where it prunes by one

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """BSN's options with their defaults, in signature order (every keyword-only argument but the mutation
        hooks): the one home of the defaults, which configurations and the command line read."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {
            p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in _NOT_OPTIONS
        }

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}"
            for k, v in [
                ("cost", self.cost),
                ("budget", self.budget),
                ("init_keep_prob", self.init_keep_prob),
                *self.kwargs.items(),
            ]
        )
        return f"BSN({args})"

    # ----- mutation ---------------------------------------------------------------------------------------------

    def default_mutation_hooks(self) -> list:
        return [
            PathSamplingLayer.mutate,
            PathSamplingInput.mutate,
            PathSamplingRepeat.mutate,
            PathSamplingCell.mutate,
            *[op.mutate for op in NATIVE_MIXED_OPERATIONS],
            no_default_hook,
        ]

    def run_hook(self, hook, name, module, memo):
        return hook(module, name, memo, {"mixed_op_sampling": MixedOpPathSamplingPolicy})

    def mutate_model(self, model: ModelSpace) -> ModelSpace:
        if not isinstance(model, ModelSpace):
            raise TypeError(f"BSN: the model must be an NNI ModelSpace, got {type(model).__name__}")
        mutables = {}
        for label, m in model.simplify().items():
            if isinstance(m, MutableAnnotation):
                continue
            if isinstance(m, CategoricalMultiple) and m.n_chosen == 1 or isinstance(m, Categorical):
                mutables[label] = m
            else:
                raise TypeError(
                    f"BSN: {m!r} is not supported; BSN handles categorical choices "
                    "(LayerChoice, InputChoice with n_chosen=1, Repeat depth, nni.choice)"
                )
        if not mutables:
            raise ValueError("BSN: the model space has no choice to search (model.simplify() is empty)")
        self._prune = getattr(model, "prune", None)
        self._is_connected = space_connectivity(model)
        self._graph = getattr(model, "graph", None) if self._prune is not None else None
        auto = self.init_keep_prob == "auto"
        self.distribution = ArchitectureDistribution(mutables, _AUTO_START if auto else self.init_keep_prob)
        self.budgets = [
            self._make_budget(c, spec, model, mutables) for c, spec in zip(self._costs, self._budget_specs)
        ]
        self.start_keep_prob = self._calibrate() if auto else self.init_keep_prob
        model.train()  # measuring costs may have switched modules to eval mode; the search trains them
        _logger.info(
            "BSN: %d gates, %d other choices; budgets: %s",
            len(self.distribution.gate_labels),
            len(self.distribution.choice_labels),
            ", ".join(f"{b.name} <= {b.limit:.6g} {b.unit}".strip() for b in self.budgets),
        )
        return super().mutate_model(model)

    def _calibrate(self) -> float:
        dist = self.distribution
        if not dist.gate_labels or not all(hasattr(c, "bind") for c in self._costs):
            return _AUTO_START  # calibrating would call a plain callable cost hundreds of times

        def charged(arch: Arch) -> list[float]:
            return charged_costs(
                arch,
                self.budgets,
                self._is_connected,
                context=" while choosing the start (init_keep_prob='auto')",
            )

        p, ratio = calibrate_keep_prob(
            dist.gate_labels,
            dist.choice_options(),
            dist.choice_labels,
            charged,
            [b.limit for b in self.budgets],
            start=_AUTO_START,
        )
        dist.set_keep_prob(p)
        _logger.info(
            "BSN: gates start at keep-probability %.3f (expected cost %.2fx the tightest budget)", p, ratio
        )
        return p

    def _make_budget(self, cost: Any, spec: tuple[float, bool], model: ModelSpace, mutables: dict) -> Budget:
        # Evaluators of the protocol count on the pruned architecture themselves; plain callables get it pruned.
        name, _ = describe_cost(cost)
        try:
            bound = cost.bind(model) if hasattr(cost, "bind") else cost
        except ValueError as e:  # a bad argument of the evaluator, e.g. an input_shape that does not fit
            raise ValueError(f"BSN: cost {name!r}: {str(e).removeprefix('BSN: ')}") from None
        except Exception as e:
            raise CostEvaluationError(
                f"BSN: cost {name!r} failed while binding to the model space: {type(e).__name__}: {e}"
            ) from e
        name, unit = describe_cost(bound)
        prune = (lambda a: a) if hasattr(cost, "bind") or self._prune is None else self._prune

        def evaluate(arch: Arch) -> float:
            return float(bound(prune(arch)))

        full, cheapest, probed = set_up_costs(
            bound,
            lambda arch: bound(prune(arch)),
            lambda: probe_archs(mutables, is_gate, GATE_ON, getattr(model, "graph", None)),
            name,
        )
        try:
            limit = resolve_limit(spec, full, None if probed else cheapest, name=name, unit=unit)
        except ValueError as e:
            raise ValueError(f"BSN: {e}") from None
        if probed and limit < cheapest:
            raise ValueError(
                f"BSN: budget {limit:.6g} {unit} for {name} is below every architecture BSN probed before training "
                f"(the cheapest of {probed} costs {cheapest:.6g} {unit}); raise the budget"
            )
        if cheapest is None and callable(getattr(bound, "min_cost", None)):
            _logger.warning(
                "BSN: the cheapest architecture's %s is not known on this space, so the budget (%.6g %s) is "
                "not checked before training",
                name,
                limit,
                unit,
            )
        number, pct = spec
        return Budget(
            evaluator=evaluate,
            limit=limit,
            spec=f"{number:g}%" if pct else number,
            name=name,
            unit=unit,
            full=full,
        )

    def train_dataloader(
        self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]
    ) -> Any:
        if self.kwargs["reward_data"] != "val":
            return train_dataloader_fn()
        val = val_dataloader_fn()
        if val is None:
            raise ValueError(
                "BSN: reward_data='val' needs validation data: give the evaluator val_dataloaders"
            )
        # Lightning combines the dict: each step gets {'train': batch, 'val': batch}
        return {"train": train_dataloader_fn(), "val": val}

    def configure_oneshot_module(self, training_module: LightningModule) -> BSNLightningModule:
        if self.distribution is None:
            raise RuntimeError("BSN: mutate_model must run before the one-shot module is built")
        return BSNLightningModule(
            training_module,
            self.distribution,
            self.budgets,
            prune=self._prune,
            is_connected=self._is_connected,
            graph=self._graph,
            **self.kwargs,
        )

    # ----- results ------------------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The exported architecture, its costs against the budgets, and how it was chosen."""
        module = self.oneshot_module
        if module.last_selection is None:
            module.export()
        rep = module.last_selection.report()
        rep["budget_specs"] = {b.name: b.spec for b in self.budgets}
        rep["units"] = {b.name: b.unit for b in self.budgets}
        rep["full_costs"] = {b.name: b.full for b in self.budgets}
        rep["skipped_samples"] = module.skipped_samples
        rep["ranks"] = module.rank_agreement
        rep["start_keep_prob"] = self.start_keep_prob
        return rep
