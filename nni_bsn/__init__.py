"""nni-bsn: Budgeted Super Networks as an NNI 3.0 one-shot strategy."""

from . import compat as _compat  # noqa: F401  (silences NNI/torch import noise, guards the filelock hang)

__version__ = "0.1.0"
