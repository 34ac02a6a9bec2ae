"""BSN under Lightning DDP on the CPU (gloo), 2 processes: run as a script (Lightning relaunches it per rank).

Usage: python ddp_bsn.py OUT_DIR. Each rank writes OUT_DIR/rank<r>.json with its logits and exported architecture.
"""

import json
import os
import sys
import tempfile
import warnings

os.environ.setdefault("HOME", tempfile.mkdtemp())
warnings.filterwarnings("ignore")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from nni.nas.evaluator.pytorch import Classification  # noqa: E402
from nni.nas.execution import SequentialExecutionEngine  # noqa: E402
from nni.nas.space import RawFormatModelSpace  # noqa: E402
from pytorch_lightning.strategies import DDPStrategy  # noqa: E402

from evaluators import MacsCost  # noqa: E402
from nni_bsn import BSN  # noqa: E402
from nni_bsn.data import get_dataloaders  # noqa: E402
from nni_bsn.jobs.ranks import release_process_group  # noqa: E402
from search_spaces import ConvolutionalNeuralFabric  # noqa: E402


def main(out: str) -> None:
    pl.seed_everything(0, verbose=False)
    torch.set_num_threads(1)
    train, val, _, _ = get_dataloaders("digits", batch_size=32, image_size=8, seed=0)
    space = ConvolutionalNeuralFabric(layers=3, channels=4, image_size=8, in_channels=1)
    ev = Classification(
        train_dataloaders=train,
        val_dataloaders=val,
        num_classes=10,
        max_epochs=2,
        limit_train_batches=8,
        limit_val_batches=2,
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(find_unused_parameters=True, process_group_backend="gloo"),
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    strategy = BSN(
        cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="50%", num_samples=2, arc_learning_rate=0.2
    )
    strategy(RawFormatModelSpace.from_model(space, ev), SequentialExecutionEngine())
    module = strategy.oneshot_module
    rank = module.trainer.global_rank
    arch = next(strategy.list_models()).sample
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "rank": rank,
                "world_size": module.trainer.world_size,
                "logits": module.distribution.gate_logits.detach().tolist(),
                "arch": arch,
                "global_step": module.trainer.global_step,
            },
            f,
        )
    release_process_group()  # as the CLI does: gloo left to the exit can abort the process


if __name__ == "__main__":
    main(sys.argv[1])
