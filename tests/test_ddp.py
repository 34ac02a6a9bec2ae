"""One-shot strategies under Lightning DDP with 2 CPU processes (gloo): BSN completes with identical logits and one
architecture on both ranks; NNI's RandomOneShot exports a different architecture on each rank unless nni-bsn's fix
(:class:`nni_bsn.strategy.peers.RankSync`) is given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("scripts") / "ddp_strategy.py"


def _ranks(tmp_path: Path, strategy: str, sync: bool = True) -> list[dict]:
    """Run the script with 2 DDP processes; what each rank wrote."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / f"{strategy}-{int(sync)}"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), strategy, str(int(sync))],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_bsn_under_ddp_keeps_identical_logits_on_both_ranks(tmp_path):
    ranks = _ranks(tmp_path, "bsn")
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] > 0
    assert ranks[0]["values"] == ranks[1]["values"]
    assert ranks[0]["arch"] == ranks[1]["arch"] and ranks[0]["ranks"]["agreed"] is True
    # the logits moved: the architecture distribution was trained, not just kept in sync
    assert len(set(ranks[0]["values"])) > 1


def test_nni_random_one_shot_ranks_export_apart_without_the_fix_and_together_with_it(tmp_path):
    """NNI issue #5013 reproduced: RandomOneShot draws from an unseeded RandomState on each rank, so the two ranks
    of one DDP run export different architectures; with RankSync both draw from the shared seed."""
    apart = _ranks(tmp_path, "random", sync=False)
    assert apart[0]["arch"] != apart[1]["arch"]
    assert apart[0]["ranks"]["agreed"] is False and apart[1]["ranks"] == apart[0]["ranks"]
    together = _ranks(tmp_path, "random", sync=True)
    assert together[0]["arch"] == together[1]["arch"]
    assert together[0]["ranks"]["agreed"] is True and together[0]["global_step"] > 0
