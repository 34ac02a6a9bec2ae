"""Measured latency with ONNX Runtime: :class:`LatencyCost` (``cost``: a table of measured blocks plus the whole
model's check), its on-disk cache keyed by machine and protocol (``cache``), what a node runs and how nodes combine
(``nodes``), checks of the table against whole-model measurements and per-block attribution (``diagnostics``), and
the measuring itself (``ort``: ONNX export, session options, the timing protocol, the CPU model).
"""

from evaluators.latency.cost import LatencyCost

__all__ = ["LatencyCost"]
