"""Cost evaluators: what an architecture of an NNI model space costs.

Bind an evaluator once to a raw model space, then ask ``cost(arch)`` every training step::

    macs = MacsCost(input_shape=(1, 3, 32, 32)).bind(space)
    macs(arch)            # MACs of space.freeze(space.prune(arch)), exactly as fvcore counts them
"""

from .base import CallableCost, CompositeCost, CostEvaluator, as_evaluator
from .distributed import DistributedCost
from .flops import MacsCost, ParamsCost
from .latency import LatencyCost
from .table import AdditiveCost, TableCost

__all__ = [
    "CostEvaluator",
    "TableCost",
    "AdditiveCost",
    "CallableCost",
    "CompositeCost",
    "as_evaluator",
    "MacsCost",
    "ParamsCost",
    "LatencyCost",
    "DistributedCost",
]
