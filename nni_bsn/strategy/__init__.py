"""The strategy: :class:`BSN`, the NNI one-shot strategy, and everything its search step is made of. Its
LightningModule (``lightning``: one step samples architectures, runs only their paths, updates the weights, then
the logits), the architecture distribution (``policy``), the budgeted reward and its gradient estimators
(``reward``), budgets and penalties (``budget``), what BSN exports (``selection``; with ``select='supernet'``,
chosen on the trained super network: ``evolution``), whether an architecture's output depends on its input
(``connectivity``), BSN's option checks (``checks``, ``names``), its DDP ranks' agreement (``ranks``) and the same
for NNI's own strategies (``peers``). Nothing here knows of files or command lines. ``import nni_bsn.strategy`` is
light; ``BSN`` loads torch and NNI on first use.
"""

from typing import Any

__all__ = ["BSN"]


def __getattr__(name: str) -> Any:
    if name == "BSN":
        from nni_bsn.strategy.bsn import BSN

        return BSN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
