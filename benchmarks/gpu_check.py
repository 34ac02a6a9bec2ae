"""The GPU path, checked on a CUDA machine in a few minutes (run by benchmarks/gpu_check.sh; issue 23).

    python benchmarks/gpu_check.py --out DIR            # on a machine with CUDA
    python benchmarks/gpu_check.py --out DIR --dry-run  # anywhere: tiny sizes on the CPU, checks the set-up

1. Step times on the CNF with CIFAR-shaped random data in memory: BSN at 50% of the MACs, the fixed sub-network BSN
   exported (the same MACs) trained plainly, and NNI's DARTS on the same space; medians after a warm-up, each step
   timed between CUDA synchronisations. Host synchronisations per step counted with
   ``torch.cuda.set_sync_debug_mode('warn')`` (every call that makes the host wait for the GPU warns once), for
   BSN's step and for the plain step beside it (what Lightning itself adds).
2. The command line end to end on the GPU: ``search --preset paper-cnf`` for one epoch on a CIFAR-10 folder of
   random images (50,000, the real size), ``export`` of what it found, ``sweep`` at two budgets and ``compare`` of
   BSN and DARTS on digits; each exit code, time and last line.
3. DDP over the GPUs the machine has (``--devices N``), when it has more than one.

Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

STEPS, WARMUP = 60, 10


class _SyncedTimer(pl.Callback):
    """Each training step's wall time, the GPU's work included (synchronised at both ends)."""

    def __init__(self, cuda: bool):
        self.cuda, self.steps = cuda, []

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = self._now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(self._now() - self._t)

    def median_ms(self) -> float:
        return round(1000 * statistics.median(self.steps[WARMUP:] or self.steps), 3)


def _evaluator(data, accelerator: str, steps: int, timer: pl.Callback):
    from nni.nas.evaluator.pytorch import Classification, DataLoader

    return Classification(
        train_dataloaders=DataLoader(data, batch_size=128, shuffle=True),
        val_dataloaders=DataLoader(data, batch_size=128),
        num_classes=10,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=1,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )


def _syncs_per_step(cuda: bool, fit, steps: int) -> float | None:
    """Host synchronisations per training step of ``fit()`` (None on the CPU: nothing to count)."""
    if not cuda:
        fit()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return round(len(syncs) / steps, 2)


def step_times(dry: bool) -> dict:
    """BSN@50% MACs, its fixed sub-network and DARTS on one CNF: median step ms, ratios, host syncs per step."""
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import DARTS

    from evaluators import MacsCost
    from nni_bsn import BSN
    from nni_bsn.network.export import load_frozen_model
    from search_spaces import ConvolutionalNeuralFabric

    cuda = not dry
    accelerator = "gpu" if cuda else "cpu"
    layers, channels, steps = (2, 4, 4) if dry else (6, 64, STEPS)

    def space():
        return ConvolutionalNeuralFabric(layers=layers, channels=channels, image_size=32, in_channels=3)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(128 * steps, 3, 32, 32, generator=g), torch.randint(0, 10, (128 * steps,), generator=g)
    )
    out = {"space": f"CNF {layers}x{channels}, 32x32, batch 128", "steps": steps}
    bsn_timer = _SyncedTimer(cuda)
    bsn = BSN(cost=MacsCost(input_shape=(1, 3, 32, 32)), budget="50%")
    engine = SequentialExecutionEngine()
    out["bsn_syncs_per_step"] = _syncs_per_step(
        cuda,
        lambda: bsn(
            RawFormatModelSpace.from_model(space(), _evaluator(data, accelerator, steps, bsn_timer)), engine
        ),
        steps,
    )
    arch = next(bsn.list_models()).sample
    fixed_timer = _SyncedTimer(cuda)
    fixed = load_frozen_model(space, arch)
    out["fixed_syncs_per_step"] = _syncs_per_step(
        cuda, lambda: _evaluator(data, accelerator, steps, fixed_timer).fit(fixed), steps
    )
    darts_timer = _SyncedTimer(cuda)
    DARTS()(
        RawFormatModelSpace.from_model(space(), _evaluator(data, accelerator, steps, darts_timer)), engine
    )
    out.update(
        bsn_step_ms=bsn_timer.median_ms(),
        fixed_step_ms=fixed_timer.median_ms(),
        darts_step_ms=darts_timer.median_ms(),
        fixed_macs=MacsCost(input_shape=(1, 3, 32, 32)).bind(space())(arch),
        full_macs=MacsCost(input_shape=(1, 3, 32, 32)).bind(space()).full_cost(),
    )
    out["bsn_over_fixed"] = round(out["bsn_step_ms"] / out["fixed_step_ms"], 3)
    out["bsn_over_darts"] = round(out["bsn_step_ms"] / out["darts_step_ms"], 3)
    return out


def _cifar_folder(root: Path, n_train: int) -> Path:
    """A CIFAR-10 folder in torchvision's format with random images (``n_train`` over the five batches)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per = n_train // 5
    for i in range(1, 6):
        batch = {
            "data": rng.integers(0, 256, (per, 3072), dtype=np.uint8),
            "labels": list(range(10)) * (per // 10),
        }
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {"data": rng.integers(0, 256, (1000, 3072), dtype=np.uint8), "labels": list(range(10)) * 100}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return root


def _cli(args: list[str], log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "nni_bsn", *args], stdout=f, stderr=subprocess.STDOUT)
    lines = [ln for ln in log.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if "it/s" not in ln), "")
    return {
        "command": "nni-bsn " + " ".join(args),
        "rc": proc.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "last_line": last[:200],
    }


def end_to_end(dry: bool, out: Path) -> list[dict]:
    """search (paper-cnf, one epoch), export, sweep and compare through the command line, on the GPU."""
    acc = ["--accelerator", "cpu" if dry else "gpu"]
    data = _cifar_folder(out / "cifar", 500 if dry else 50_000)
    search = (
        ["--layers", "2", "--channels", "4", "--dataset", "cifar10"] if dry else ["--preset", "paper-cnf"]
    )
    found = out / "paper-cnf"
    runs = [
        (["search", *search, "--data-dir", str(data), "--epochs", "1", *acc, "--out", str(found)], "search"),
        (["export", str(found / "arch.json"), "--out", str(out / "exported.onnx")], "export"),
        (["sweep", "--budgets", "25%,50%", "--epochs", "1", *acc, "--out", str(out / "sweep")], "sweep"),
        (
            [
                "compare",
                "--strategies",
                "bsn,darts",
                "--epochs",
                "1",
                *acc,
                "--no-onnx",
                "--out",
                str(out / "cmp"),
            ],
            "compare",
        ),
    ]
    if not dry and torch.cuda.device_count() > 1:
        n = str(torch.cuda.device_count())
        runs.append((["search", "--devices", n, *acc, "--epochs", "2", "--out", str(out / "ddp")], "ddp"))
    return [_cli(a, out / f"{name}.log") for a, name in runs]


def _markdown(result: dict) -> str:
    s, env = result["steps"], result["env"]
    lines = [f"Machine: {env['device']}, torch {env['torch']}, CUDA {env['cuda']}, {env['gpus']} GPU(s).", ""]
    lines += [f"Step times: failed: {s['error']}"] if "error" in s else _step_lines(s)
    lines += ["", "| command | exit | seconds | last line |", "|---|---|---|---|"]
    for r in result["cli"]:
        lines.append(
            f"| `{r['command']}` | {r['rc']} | {r['seconds']} | {r['last_line'].replace('|', '/')} |"
        )
    if env["gpus"] < 2:
        lines.append("\nDDP over several GPUs: not run (one GPU).")
    return "\n".join(lines)


def _step_lines(s: dict) -> list[str]:
    return [
        f"Step times ({s['space']}, {s['steps']} steps, median after {WARMUP}, synchronised):",
        "",
        "| run | step ms | host syncs per step |",
        "|---|---|---|",
        f"| BSN @ 50% MACs | {s['bsn_step_ms']} | {s['bsn_syncs_per_step']} |",
        f"| its fixed sub-network ({s['fixed_macs'] / s['full_macs']:.0%} of the MACs), plain training | "
        f"{s['fixed_step_ms']} | {s['fixed_syncs_per_step']} |",
        f"| NNI DARTS, same space | {s['darts_step_ms']} | - |",
        "",
        f"BSN / fixed: {s['bsn_over_fixed']}x; BSN / DARTS: {s['bsn_over_darts']}x.",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: check the set-up only")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here; run with --dry-run to check the set-up on the CPU",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.dry_run
    result = {
        "env": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "gpus": torch.cuda.device_count() if cuda else 0,
            "device": torch.cuda.get_device_name(0) if cuda else "CPU (dry run)",
        }
    }
    try:
        result["steps"] = step_times(args.dry_run)
    except Exception as e:  # the command-line part still runs; the table says what failed
        result["steps"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    result["cli"] = end_to_end(args.dry_run, out)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    text = _markdown(result)
    (out / "gpu_check.md").write_text(text)
    print(text)
    return 0 if all(r["rc"] == 0 for r in result["cli"]) else 1


if __name__ == "__main__":
    sys.exit(main())
