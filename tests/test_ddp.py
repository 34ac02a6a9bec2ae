"""BSN under Lightning DDP with 2 CPU processes (gloo): completes, identical logits on both ranks, one architecture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("scripts") / "ddp_bsn.py"


def test_bsn_under_ddp_keeps_identical_logits_on_both_ranks(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] > 0
    assert ranks[0]["logits"] == ranks[1]["logits"]
    assert ranks[0]["arch"] == ranks[1]["arch"]
    # the logits moved: the architecture distribution was trained, not just kept in sync
    assert len(set(ranks[0]["logits"])) > 1
