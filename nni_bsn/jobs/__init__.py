"""The jobs a user runs, below the command line: what a job is asked to do (``config``: the search and compare
configurations, presets, accepted names and checks; ``options``: the one table of command-line options), what it
builds from that (``builders``: spaces, costs, data), the search (``search``: data, space, cost, BSN through
NasExperiment, evaluation, outputs, resume) and the sweep over budgets (``sweep``), what a search says plainly
(``findings``), and output folders that appear only when complete (``outputs``). The comparison harness,
:mod:`nni_bsn.compare`, is built on these.
"""
