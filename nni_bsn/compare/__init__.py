"""The comparison harness, ``nni-bsn compare``: BSN beside NNI's DARTS, GumbelDARTS, ENAS, Proxyless and
RandomOneShot, random architectures of the same cost and fixed networks, on the same space, data and seeds. ``run``
plans the jobs and runs each in its own process (``python -m nni_bsn.compare.row``); ``row`` searches (or takes a
given architecture), then retrains it from scratch the same way for every row; ``strategies`` builds each row's
strategy and reads what it found; ``derivation`` is the DARTS paper's derivation beside NNI's argmax;
``random_baseline`` draws random connected architectures in a cost band; ``summary`` aggregates over seeds and
judges the targets; ``report`` and ``front_plot`` write the tables and the accuracy-cost front.
"""

from typing import Any

__all__ = ["run_compare"]


def __getattr__(name: str) -> Any:
    if name == "run_compare":
        from nni_bsn.compare.run import run_compare

        return run_compare
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
