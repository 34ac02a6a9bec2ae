"""BSN on one of NNI's hub spaces (NasBench201) under a MACs budget, on the embedded digits data.

    python examples/hub_space_macs.py --budget 50% --epochs 5

MacsCost counts any NNI model space (here by per-choice tables that fvcore's counts are decomposed into); a
percentage budget is of the space's most expensive architecture. Prints the architecture found, its MACs against
the budget, and how BSN chose it.
"""

from __future__ import annotations

import argparse
import json

import nni_bsn  # noqa: F401  (first: quiets NNI's import-time warnings)


def rgb_loaders(image_size: int, batch_size: int, train_size: int | None):
    """Digits as 3-channel images (NNI's hub spaces take RGB): NNI's traced train and validation loaders."""
    import torch
    from nni.nas.evaluator.pytorch import DataLoader
    from torch.utils.data import TensorDataset

    from nni_bsn.data import get_datasets

    train, val, _, info = get_datasets("digits", image_size=image_size, train_size=train_size)

    def rgb(split: TensorDataset) -> TensorDataset:
        images, labels = split.tensors
        return TensorDataset(images.expand(-1, 3, -1, -1), labels)

    generator = torch.Generator().manual_seed(0)
    train_loader = DataLoader(rgb(train), batch_size=batch_size, shuffle=True, generator=generator)
    return train_loader, DataLoader(rgb(val), batch_size=batch_size), info.num_classes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", default="50%", help="MACs budget: a percentage of the dearest architecture"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--channels", type=int, default=16, help="NasBench201's stem channels")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=None, help="training images (default: all 1257)")
    args = parser.parse_args(argv)

    import tempfile

    from nni.nas.evaluator.pytorch import Classification
    from nni.nas.experiment import NasExperiment
    from nni.nas.hub.pytorch import NasBench201

    from evaluators import MacsCost
    from nni_bsn import BSN
    from nni_bsn.compat import quiet_experiment_config
    from nni_bsn.network.training import quiet_trainer_options
    from nni_bsn.quiet import quiet_library_logs, quiet_library_warnings

    quiet_library_logs()
    quiet_library_warnings()
    train, val, num_classes = rgb_loaders(args.image_size, 64, args.train_size)
    space = NasBench201(stem_out_channels=args.channels, num_modules_per_stack=1, num_labels=num_classes)
    evaluator = Classification(
        num_classes=num_classes,
        train_dataloaders=train,
        val_dataloaders=val,
        max_epochs=args.epochs,
        accelerator="cpu",
        **quiet_trainer_options(),  # nothing written into the current folder; one line per epoch
    )
    macs = MacsCost(input_shape=(1, 3, args.image_size, args.image_size))
    strategy = BSN(cost=macs, budget=args.budget)
    with tempfile.TemporaryDirectory(prefix="nni-experiment-") as nni_dir:
        exp = NasExperiment(space, evaluator, strategy, config=quiet_experiment_config(nni_dir))
        exp.run()
        arch = exp.export_top_models(formatter="dict")[0]
        exp.stop()
    report = strategy.report()
    result = {
        "arch": arch,
        "selection": report["method"],
        "budgets": report["budgets"],
        "costs": report["costs"],
    }
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
