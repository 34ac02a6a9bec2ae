"""Counting on any NNI space: MACs and parameters as fvcore counts them (``flops``: :class:`MacsCost`,
:class:`ParamsCost`). On a gate space the counts are read once per gate; on any other NNI space, per-label tables
are fitted from fvcore's per-module counts (``label_tables``): the labels a module may depend on
(``local_labels``), labels derived from several choices where one choice alone does not decide a module's cost
(``derived_labels``), the architectures to measure so that every table is known (``covering``), fresh architectures
that construct only the chosen operators (``frozen_build``), and the tables' exact extremes by variable elimination
(``table_extremes``).
"""

from evaluators.counting.flops import MacsCost, ParamsCost

__all__ = ["MacsCost", "ParamsCost"]
