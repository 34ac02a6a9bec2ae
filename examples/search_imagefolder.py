"""Search an architecture with BSN on your own images, in torchvision's ImageFolder layout.

    DATA/train/<class>/*.png    (any format PIL reads; one folder per class)
    DATA/val/<class>/*.png      (optional: without it, one image in 8 of train/ is held out)

    python examples/search_imagefolder.py DATA --image-size 32 --epochs 10 --budget 50% --out my-search

Writes arch.json, weights.pt and result.json (the space's arguments, the preprocessing, the class names, the
costs and the validation accuracy) into --out. The command line reads the same layout,

    nni-bsn search --dataset imagefolder --data-dir DATA --image-size 32 --epochs 10 --out my-search

(with its test split, report, ONNX file and pictures); this script is the search written out in Python, to
adapt: a Convolutional Neural Fabric, NNI's Classification evaluator, BSN under a MACs budget.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import nni_bsn  # noqa: F401  (first: quiets NNI's import-time warnings)

MEAN, STD = 0.5, 0.5  # each channel scaled to [-1, 1]


def image_loaders(data: Path, image_size: int, batch_size: int):
    """NNI's traced DataLoaders of ``data/train`` and ``data/val`` (or a fixed hold-out of train), and the classes."""
    import torch
    from nni.nas.evaluator.pytorch import DataLoader
    from torchvision import datasets, transforms

    preprocess = transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize((MEAN,) * 3, (STD,) * 3),
        ]
    )
    rgb = {"loader": lambda path: datasets.folder.default_loader(path).convert("RGB")}
    train = datasets.ImageFolder(str(data / "train"), transform=preprocess, **rgb)
    if (data / "val").is_dir():
        val = datasets.ImageFolder(str(data / "val"), transform=preprocess, **rgb)
        if val.classes != train.classes:
            raise SystemExit(f"val/ has classes {val.classes}, train/ has {train.classes}: they must match")
    else:
        held_out = set(range(0, len(train), 8))
        val = torch.utils.data.Subset(train, sorted(held_out))
        train = torch.utils.data.Subset(train, [i for i in range(len(train)) if i not in held_out])
    generator = torch.Generator().manual_seed(0)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(val, batch_size=batch_size)
    classes = val.classes if hasattr(val, "classes") else val.dataset.classes
    return train_loader, val_loader, list(classes)


def search(args: argparse.Namespace) -> dict:
    """Run BSN on the images; write the found network and return what result.json holds."""
    from nni.nas.evaluator.pytorch import Classification
    from nni.nas.experiment import NasExperiment

    from evaluators import MacsCost
    from nni_bsn import BSN
    from nni_bsn.compat import quiet_experiment_config
    from nni_bsn.network.evaluation import evaluate_accuracy, recalibrate_batchnorm
    from nni_bsn.network.export import save_weights
    from nni_bsn.network.training import quiet_trainer_options
    from nni_bsn.quiet import quiet_library_logs, quiet_library_warnings
    from search_spaces import ConvolutionalNeuralFabric

    quiet_library_logs()  # NNI's and Lightning's INFO lines at every run
    quiet_library_warnings()
    train, val, classes = image_loaders(Path(args.data), args.image_size, args.batch_size)
    space_args = dict(
        layers=args.layers,
        channels=args.channels,
        image_size=args.image_size,
        in_channels=3,
        num_classes=len(classes),
    )
    space = ConvolutionalNeuralFabric(**space_args)
    evaluator = Classification(
        num_classes=len(classes),
        train_dataloaders=train,
        val_dataloaders=val,
        max_epochs=args.epochs,
        accelerator="cpu",
        **quiet_trainer_options(),  # nothing written into the current folder; one line per epoch
    )
    strategy = BSN(cost=MacsCost(input_shape=(1, 3, args.image_size, args.image_size)), budget=args.budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix="nni-experiment-"
    ) as nni_dir:  # NNI's own files, not wanted after
        exp = NasExperiment(space, evaluator, strategy, config=quiet_experiment_config(nni_dir))
        exp.run()
        exp.stop()
    found = next(iter(strategy.list_models()))
    model = copy.deepcopy(found.executable_model())  # the super network's weights for this architecture
    recalibrate_batchnorm(model, train)  # its own BatchNorm statistics
    (out / "arch.json").write_text(json.dumps(found.sample, indent=2))
    save_weights(model, out / "weights.pt")
    report = strategy.report()
    return {
        "space": {"name": "cnf", **space_args},
        "preprocessing": {"image_size": args.image_size, "channels": 3, "mean": MEAN, "std": STD},
        "classes": classes,
        "selection": report["method"],
        "val_accuracy": evaluate_accuracy(model, val),
        "budgets": report["budgets"],
        "costs": report["costs"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="folder with train/<class>/ (and optionally val/<class>/)")
    parser.add_argument("--image-size", type=int, default=32, help="images are resized to this square size")
    parser.add_argument("--layers", type=int, default=4, help="CNF columns")
    parser.add_argument("--channels", type=int, default=16, help="CNF channels per node")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--budget", default="50%", help="MACs budget: a percentage of the full fabric, or MACs"
    )
    parser.add_argument("--out", default="imagefolder-search")
    args = parser.parse_args(argv)
    result = search(args)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"{result['selection']}; val accuracy {result['val_accuracy']:.4f}; outputs in {args.out}/")


if __name__ == "__main__":
    main()
