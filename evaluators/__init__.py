"""Cost evaluators: what an architecture of an NNI model space costs.

Bind an evaluator once to a raw model space, then ask ``cost(arch)`` every training step::

    macs = MacsCost(input_shape=(1, 3, 32, 32)).bind(space)
    macs(arch)            # MACs of space.freeze(space.prune(arch)), exactly as fvcore counts them
"""

from evaluators.base import CallableCost, CompositeCost, CostEvaluator, as_evaluator
from evaluators.counting.flops import MacsCost, ParamsCost
from evaluators.distributed.cost import DistributedCost
from evaluators.latency.cost import LatencyCost
from evaluators.table import AdditiveCost, TableCost

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
