"""nni-bsn: Budgeted Super Networks as an NNI 3.0 one-shot strategy."""

from . import compat as _compat  # noqa: F401  (silences NNI/torch import noise, guards the filelock hang)
from .strategy import BSN

__version__ = "0.1.0"
__all__ = ["BSN"]
