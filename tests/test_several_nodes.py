"""BSN's search and compare on two nodes, simulated on one machine: two torchrun launchers (node ranks 0 and 1,
gloo on 127.0.0.1) running the command line with ``--num-nodes 2 --devices 1``.

- Both finish, one output folder is written (by global rank 0), and the report says the ranks agreed: the digests
  of both ranks' final logits and exported architecture, gathered on rank 0, are equal, and the architecture's is
  that of the ``arch.json`` written.
- The killed-rank case: rank 1 is killed with SIGKILL mid-training; rank 0 stops with one line well within
  ``--ddp-timeout``, and its checkpoint is resumed by a single-node ``--resume`` to a complete result.
- compare under the same launch: NNI's RandomOneShot, ENAS and DARTS and BSN as rows, each a DDP job of its own on
  both nodes (its own rendezvous port), one output folder, and every row's ranks agreed.

The first takes 20-45 s on 2 busy cores and the compare 60-80 s; both run by default. The killed-rank case took
50-70 s there, so it is marked slow (``pytest -m slow tests/test_several_nodes.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--layers", "2", "--channels", "4", "--image-size", "8", "--no-onnx", "--seed", "3"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(node: int, port: int, cwd: Path, *args: str, job: str = "search") -> subprocess.Popen:
    """``torchrun --nnodes 2 --nproc-per-node 1 --node-rank <node> ... -m nni_bsn <job> --num-nodes 2 ...``."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    torchrun += ["--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port)]
    command = ["-m", "nni_bsn", job, "--num-nodes", "2", "--devices", "1", *TINY, "--out", "run", *args]
    # stdout (Lightning's progress bars, the summary) and stderr (nni-bsn's lines, torchrun's) apart
    out = open(cwd / f"node{node}.out", "w")  # noqa: SIM115  (closed with the process)
    err = open(cwd / f"node{node}.err", "w")  # noqa: SIM115
    return subprocess.Popen(torchrun + command, cwd=cwd, env=_env(), stdout=out, stderr=err, text=True)


def _finish(process: subprocess.Popen, timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _digest(arch: dict) -> str:
    """As :func:`nni_bsn.strategy.ranks.agreement` digests an architecture."""
    return hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_two_nodes_finish_with_one_result_whose_logits_and_architecture_both_ranks_share(tmp_path):
    port = _free_port()
    nodes = [_launch(node, port, tmp_path, "--epochs", "2") for node in (1, 0)]
    codes = [_finish(p, 400) for p in nodes]
    logs = {node: (tmp_path / f"node{node}.err").read_text() for node in (0, 1)}
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run"]  # no partial, no rank's folder
    assert not (tmp_path / "run.lock").exists()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    ranks = report["ranks"]
    assert ranks["world_size"] == 2 and ranks["agreed"] is True
    assert len(set(ranks["logits_sha256"])) == 1 and len(ranks["logits_sha256"]) == 2
    arch = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert ranks["arch_sha256"] == [_digest(arch)] * 2
    assert report["config"]["num_nodes"] == 2 and report["trained"]["epochs"] == 2
    summary = (tmp_path / "node0.out").read_text()
    assert "ranks: 2, agreed on the logits and the architecture: yes" in summary


def test_compare_on_two_nodes_runs_nni_strategies_whose_ranks_agree_and_writes_once(tmp_path):
    """NNI's RandomOneShot, ENAS and DARTS (and BSN) as compare's rows under the same two-node launch: each row
    is a DDP job of its own on both nodes, and says that its ranks agreed (nni-bsn's fix on NNI's rows)."""
    port = _free_port()
    args = ("--strategies", "random,enas,darts,bsn", "--epochs", "2", "--limit-train-batches", "6")
    nodes = [
        _launch(node, port, tmp_path, *args, "--limit-val-batches", "3", job="compare") for node in (1, 0)
    ]
    codes = [_finish(p, 600) for p in nodes]
    logs = {node: (tmp_path / f"node{node}.err").read_text() for node in (0, 1)}
    assert codes[0] == 0 and codes[1] in (0, 1), logs[0][-3000:] + logs[1][-3000:]  # 1: a row failed
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run"]
    report = json.loads((tmp_path / "run" / "compare.json").read_text())
    rows = report["rows"]
    assert {r["name"] for r in rows} >= {"random", "enas", "darts", "darts:derived", "bsn"}
    for row in rows:  # a tiny search may export a disconnected network: a failed row, but its ranks agreed
        assert row["status"] == "ok" or "disconnected" in row["status"], row["status"]
        assert row["ranks"]["world_size"] == 2 and row["ranks"]["agreed"] is True, row["name"]
        if not row["name"].endswith(":derived"):  # a derivation's 'ranks' are its search's
            assert row["ranks"]["arch_sha256"] == [_digest(row["arch"])] * 2
    assert any("DDP over 2 ranks: every searched row's ranks agreed" in n for n in report["notes"])


def _worker_of(launcher: subprocess.Popen, timeout: float = 60) -> psutil.Process:
    """The search process torchrun started."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        children = psutil.Process(launcher.pid).children(recursive=True)
        workers = [c for c in children if "nni_bsn" in " ".join(c.cmdline())]
        if workers:
            return workers[0]
        time.sleep(0.2)
    raise AssertionError("torchrun started no search")


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_in_one_line_and_its_checkpoint_resumes_on_one_node(tmp_path):
    port = _free_port()
    args = ("--epochs", "5", "--ddp-timeout", "60")
    node1 = _launch(1, port, tmp_path, *args)
    node0 = _launch(0, port, tmp_path, *args)
    worker = _worker_of(node1)
    checkpoint = tmp_path / "run.partial" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and node0.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists(), (tmp_path / "node0.err").read_text()[-3000:]
    killed = time.time()
    worker.send_signal(signal.SIGKILL)
    code = _finish(node0, 120)
    noticed = time.time() - killed
    _finish(node1, 60)
    log = (tmp_path / "node0.err").read_text()
    assert code != 0
    assert noticed < 60, f"rank 0 took {noticed:.0f} s to stop"
    ours = [line for line in log.splitlines() if line.startswith("nni-bsn: error:")]
    assert len(ours) == 1 and "rank 0 of 2 stopped: another rank died" in ours[0], log[-3000:]
    assert "--resume" in ours[0] and "run.partial" in ours[0]
    assert not (tmp_path / "run").exists()

    done = subprocess.run(
        [sys.executable, "-m", "nni_bsn", "search", *TINY, "--epochs", "5", "--out", "run", "--resume"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["trained"]["epochs"] == 5 and report["config"]["num_nodes"] == 1
    assert not (tmp_path / "run.partial").exists()


@pytest.mark.parametrize(
    ("accelerator", "devices", "gpus", "cores", "nodes", "said"),
    [
        ("cpu", 1, 0, 2, 2, "--num-nodes 2: DDP over 2 ranks, 1 CPU process(es), gloo on each node"),
        ("gpu", 4, 4, 2, 3, "--num-nodes 3: DDP over 12 ranks, 4 GPU(s) on each node"),
        ("cpu", 1, 0, 2, 1, None),
    ],
)
def test_the_nodes_are_announced(accelerator, devices, gpus, cores, nodes, said):
    from nni_bsn.jobs.ranks import check_devices

    assert check_devices(accelerator, devices, gpus, cores, nodes) == said
