"""Appending a measured result to benchmarks/RESULTS.md with date, command, machine and versions."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, load avg {load:.2f}"


def _relative(script: str) -> str:
    """The script as run from the checkout's root (no path of this machine in RESULTS.md)."""
    path = Path(script).resolve()
    root = RESULTS.parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


def append(title: str, body: str) -> None:
    from nni_bsn.jobs.outputs import versions

    command = "python " + " ".join([_relative(sys.argv[0]), *sys.argv[1:]])
    vers = ", ".join(f"{k} {v}" for k, v in versions().items())
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## {title} ({stamp})\n\n- command: `{command}`\n- machine: {machine()}\n- versions: {vers}\n\n"
        f"{body.rstrip()}\n"
    )
    with RESULTS.open("a") as f:
        f.write(text)
    print(text)
