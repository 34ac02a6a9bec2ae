"""nni-bsn: Budgeted Super Networks as an NNI 3.0 one-shot strategy.

``import nni_bsn`` is light: it sets the filters for NNI's import-time warnings and gym's banner (so import it before
NNI) and loads :class:`BSN` and :func:`load_found` (with torch, NNI and :mod:`nni_bsn.compat`, whose filelock guard
applies then) on first use, so that the command line checks its arguments before the heavy libraries load.
"""

from typing import Any

from nni_bsn.quiet import filter_import_warnings as _filter_import_warnings
from nni_bsn.quiet import hide_gym_banner as _hide_gym_banner

_filter_import_warnings()
_hide_gym_banner()

__version__ = "0.1.0"
__all__ = ["BSN", "load_found"]


def __getattr__(name: str) -> Any:
    if name == "BSN":
        from nni_bsn.strategy.bsn import BSN

        return BSN
    if name == "load_found":
        from nni_bsn import compat  # noqa: F401  (as for BSN: NNI's shims before NNI runs)
        from nni_bsn.jobs.found import load_found

        return load_found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
