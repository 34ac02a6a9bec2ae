"""The cost of running an architecture over several devices: :class:`DistributedCost` (``cost``: the live block DAG
list-scheduled over N devices, its makespan with transfers, and the plan), and ``run``, which executes a plan for
real over torch.distributed (gloo) to check the model against the clock.
"""

from evaluators.distributed.cost import DistributedCost

__all__ = ["DistributedCost"]
