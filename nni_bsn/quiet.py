"""The filters for NNI's and Lightning's noise: their import-time warnings, and the warnings and logs of every run.

Light (no torch, no NNI), so that ``import nni_bsn`` sets the import-time filters before NNI is imported and the
command line can check its arguments before the heavy libraries load. :mod:`nni_bsn.compat` re-exports them.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import io
import logging
import sys
import warnings

__all__ = [
    "NOISY_MODULES",
    "filter_import_warnings",
    "hide_gym_banner",
    "quiet_library_warnings",
    "quiet_library_logs",
]

#: Modules whose warnings the command line hides: NNI's and Lightning's advice that holds for every search here
#: (e.g. ModelCheckpoint with manual optimization, few dataloader workers, NNI's unclosed experiment log).
NOISY_MODULES = r"(nni|pytorch_lightning|lightning|lightning_fabric)(\.|$)"


def filter_import_warnings() -> None:
    """Hide the warnings NNI raises while it is imported (to take effect, call it before NNI is imported)."""
    # NNI regenerates wrappers for every class of torch.nn at import; torch 2.14 has two that are not modules.
    warnings.filterwarnings("ignore", message=r".*is found to be not a nn\.Module.*", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")


class _QuietGymImport(importlib.abc.MetaPathFinder):
    """Finds ``gym`` as usual, and runs its ``__init__`` with stderr captured (it prints an 'unmaintained' banner).

    gym 0.26.2 is pinned because NNI 3.0's ENAS needs it with tianshou 0.5.1; NNI only uses ``gym.Env`` and
    ``gym.spaces``, which work with numpy 2. ``nni.nas.strategy`` imports it.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "gym":
            return None
        sys.meta_path.remove(self)  # once, and so that find_spec below finds the real gym
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def quietly(module) -> None:
                with contextlib.redirect_stderr(io.StringIO()):
                    exec_module(module)

            spec.loader.exec_module = quietly
        return spec


def hide_gym_banner() -> None:
    """Capture the banner gym prints on stderr when it is first imported (by NNI), without importing it now."""
    if "gym" not in sys.modules and not any(isinstance(f, _QuietGymImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietGymImport())


def quiet_library_warnings() -> None:
    """Hide the warnings raised from NNI's and Lightning's modules, and keep BSN's own visible.

    BSN warns from its ``training_step`` with ``stacklevel=2``, which attributes the warning to Lightning's
    caller: the last filter, which wins, shows every warning whose message starts with ``BSN:``.
    """
    warnings.filterwarnings("ignore", module=NOISY_MODULES)
    warnings.filterwarnings("default", message=r"BSN: ")


def quiet_library_logs() -> None:
    """Show only the errors of NNI's and Lightning's loggers (their INFO and WARNING lines come at every run).

    Call it after importing them: importing Lightning sets its logger's level."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "nni"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # NNI logs an ERROR for each exception it re-raises (Ctrl-C included): the command line reports it itself.
    for name in ("nni.nas.execution.sequential", "nni.nas.strategy.base"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
