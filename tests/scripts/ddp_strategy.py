"""A one-shot strategy under Lightning DDP on the CPU (gloo), 2 processes: BSN, or one of NNI's with or without
nni-bsn's rank fix (:class:`nni_bsn.strategy.peers.RankSync`). Run as a script (Lightning relaunches it per rank).

Usage: python ddp_strategy.py OUT_DIR STRATEGY [SYNC], STRATEGY among bsn, random, enas, darts, proxyless and SYNC
1 (default) or 0 (NNI's strategies only). Each rank writes OUT_DIR/rank<r>.json with its architecture tensors'
values (BSN's logits, the alphas, ENAS's controller), its exported architecture, both ranks' digests of the two
(:func:`nni_bsn.strategy.peers.peer_agreement`) and its step count.
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
from nni.nas.strategy import DARTS, Proxyless, RandomOneShot  # noqa: E402

from evaluators import MacsCost  # noqa: E402
from nni_bsn import BSN  # noqa: E402
from nni_bsn.compat import TaggedENAS  # noqa: E402
from nni_bsn.data import get_dataloaders  # noqa: E402
from nni_bsn.jobs.ranks import ddp_strategy, release_process_group  # noqa: E402
from nni_bsn.strategy.peers import RankSync, arch_tensors, peer_agreement  # noqa: E402
from search_spaces import ConvolutionalNeuralFabric  # noqa: E402

STRATEGIES = {
    "bsn": lambda: BSN(
        cost=MacsCost(input_shape=(1, 1, 8, 8)), budget="50%", num_samples=2, arc_learning_rate=0.2
    ),
    "random": RandomOneShot,
    "enas": lambda: TaggedENAS(reward_metric_name="val_acc", batches_per_update=2),
    "darts": DARTS,
    "proxyless": Proxyless,
}


def main(out: str, name: str, sync: bool) -> None:
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
        limit_val_batches=4,
        accelerator="cpu",
        devices=2,
        strategy=ddp_strategy("cpu", 2, 1, 120.0),
        callbacks=[RankSync()] if sync and name != "bsn" else [],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    strategy = STRATEGIES[name]()
    strategy(RawFormatModelSpace.from_model(space, ev), SequentialExecutionEngine())
    module = strategy.oneshot_module
    arch = dict(next(strategy.list_models()).sample)
    result = {
        "rank": module.trainer.global_rank,
        "world_size": module.trainer.world_size,
        "global_step": module.trainer.global_step,
        "values": [v for t in arch_tensors(module) for v in t.detach().reshape(-1).tolist()],
        "arch": arch,
        "ranks": peer_agreement(module, arch),
    }
    with open(os.path.join(out, f"rank{result['rank']}.json"), "w") as f:
        json.dump(result, f)
    release_process_group()  # as the CLI does: gloo left to the exit can abort the process


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:4] != ["0"])
