"""MkDocs hook: pages built from the repository when the site is built, so that none is a copy to keep in step.

- ``benchmarks/results.md`` is ``benchmarks/RESULTS.md`` (every benchmark run, appended by the benchmark scripts),
  and its plots ``benchmarks/*.png`` sit beside it, so its relative image links resolve.
- ``reference/cli.md`` is the ``--help`` of ``nni-bsn`` and of each of its commands, from the argparse parser.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("search", "sweep", "compare", "export")
HELP_WIDTH = "100"  # argparse wraps at $COLUMNS: fixed, so the page does not depend on the terminal

RESULTS_PREAMBLE = """# Every benchmark run

This page is `benchmarks/RESULTS.md`, the log the benchmark scripts append to: each run with its date, command,
machine (load average included) and versions, in the order they ran. Earlier sections may describe code that has
changed since; the [results page](index.md) says which runs are current.

"""

CLI_PREAMBLE = """# Command line

The help of `nni-bsn` and each of its commands, as `nni-bsn <command> --help` prints it (this page is generated
from the parser when the site is built). Every option has the same default as the Python API's; BSN's options
are BSN's own (`BSN.option_defaults()`).

"""


def _help(argv: list[str]) -> str:
    """What ``nni-bsn <argv> --help`` prints."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from nni_bsn.cli import build_parser

    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args([*argv, "--help"])
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue().rstrip()


def cli_page() -> str:
    """The command-line reference: one section per command, each its ``--help`` verbatim."""
    parts = [CLI_PREAMBLE, "## nni-bsn\n\n```text\n" + _help([]) + "\n```\n"]
    for command in COMMANDS:
        parts.append(f"## nni-bsn {command}\n\n```text\n{_help([command])}\n```\n")
    return "\n".join(parts)


def on_files(files, config):
    """Add the generated pages and RESULTS.md's plots to the site."""
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "benchmarks/results.md", content=RESULTS_PREAMBLE + results))
    for png in sorted((ROOT / "benchmarks").glob("*.png")):
        files.append(File.generated(config, f"benchmarks/{png.name}", abs_src_path=str(png)))
    files.append(File.generated(config, "reference/cli.md", content=cli_page()))
    return files
