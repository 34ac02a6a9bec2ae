"""What one periodic checkpoint of a search costs: RotatingCheckpointIO (serialised in memory, written, fsynced,
renamed) on the CNF 4x16 super network with its Adam state, median of 30 writes, one torch thread.

    python benchmarks/bench_checkpoint.py   # appends to benchmarks/RESULTS.md
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import append  # noqa: E402

from nni_bsn.jobs.checkpoints import RotatingCheckpointIO  # noqa: E402
from search_spaces import ConvolutionalNeuralFabric  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    space = ConvolutionalNeuralFabric(layers=4, channels=16, image_size=16, in_channels=1)
    optimizer = torch.optim.Adam(space.parameters())
    for p in space.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # Adam's moments exist, as in a real checkpoint
    checkpoint = {"state_dict": space.state_dict(), "optimizer_states": [optimizer.state_dict()], "epoch": 0}
    writer, folder = RotatingCheckpointIO(), Path(tempfile.mkdtemp())
    seconds = []
    for _ in range(30):
        started = time.perf_counter()
        writer.save_checkpoint(checkpoint, folder / "last.ckpt")
        seconds.append(time.perf_counter() - started)
    size = (folder / "last.ckpt").stat().st_size
    params = sum(p.numel() for p in space.parameters())
    body = (
        f"CNF 4x16 ({params:,} parameters, with Adam's state): {size / 1e6:.2f} MB a checkpoint, median "
        f"{1000 * statistics.median(seconds):.1f} ms a write (max {1000 * max(seconds):.1f} ms, 30 writes)."
    )
    print(body)
    append("Cost of one periodic search checkpoint", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
