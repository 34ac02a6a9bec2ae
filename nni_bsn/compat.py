"""Compatibility fixes for NNI 3.0 on today's stack (torch 2.14, Lightning 2.6, numpy 2)."""

from __future__ import annotations

import warnings

# NNI regenerates wrappers for every class of torch.nn at import; torch 2.14 has two that are not modules.
warnings.filterwarnings("ignore", message=r".*is found to be not a nn\.Module.*", category=RuntimeWarning)
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
