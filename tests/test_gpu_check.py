"""benchmarks/gpu_check.sh checks its own set-up on the CPU (--dry-run): every part runs at tiny sizes and the
command-line runs all exit 0. About three minutes on 2 cores: -m slow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_part_on_the_cpu(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "error" not in result["steps"] and result["steps"]["bsn_step_ms"] > 0
    assert [r["rc"] for r in result["cli"]] == [0, 0, 0, 0]
    assert "| BSN @ 50% MACs |" in (tmp_path / "gpu_check.md").read_text()
