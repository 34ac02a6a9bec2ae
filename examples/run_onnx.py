"""Use what `nni-bsn search` found: load it in PyTorch, and run model.onnx in ONNX Runtime on one raw image.

    nni-bsn search --out bsn-search
    python examples/run_onnx.py bsn-search                  # a digit from the test split, as it was before loading
    python examples/run_onnx.py bsn-search --image img.png  # your own grey image, white object on black

The image goes through the preprocessing the search's data went through (report.json names the dataset and its
image size): digits are 8x8 levels 0-16, standardised with the training split's mean and std, then resized;
Fashion-MNIST images are 28x28 levels 0-255, padded or resized, normalised with the dataset's mean and std.
Prints the class ONNX Runtime predicts and how far PyTorch's logits are from ONNX Runtime's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import nni_bsn  # noqa: F401  (first: quiets NNI's import-time warnings)

NATIVE_SIZE = {"digits": 8, "fashion-mnist": 28}  # the size of a raw image of each dataset


def digits_mean_std() -> tuple[float, float]:
    """The mean and std the digits were standardised with: those of the training split (seed 0), levels / 16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from nni_bsn.data import SPLIT_SEED

    digits = load_digits()
    train, _ = train_test_split(
        np.arange(len(digits.target)), test_size=0.3, stratify=digits.target, random_state=SPLIT_SEED
    )
    x = torch.tensor(digits.images[train], dtype=torch.float32) / 16.0
    return x.mean().item(), x.std().item()


def preprocess(raw: np.ndarray, dataset: str, image_size: int) -> torch.Tensor:
    """One raw grey image (levels in [0, 1]) as the search's model takes it: ``(1, 1, image_size, image_size)``."""
    x = torch.as_tensor(raw, dtype=torch.float32)[None, None]
    if dataset == "digits":
        mean, std = digits_mean_std()
        x = (x - mean) / std
        if image_size != 8:
            x = F.interpolate(
                x, size=(image_size,) * 2, mode="bilinear", align_corners=False, antialias=image_size < 8
            )
        return x
    if dataset == "fashion-mnist":
        from nni_bsn.data import FASHION_MNIST_MEAN_STD

        if image_size >= 32:
            x = F.pad(x, (2, 2, 2, 2))
        if image_size != x.shape[-1]:
            x = F.interpolate(
                x, size=(image_size,) * 2, mode="bilinear", align_corners=False, antialias=image_size < 28
            )
        mean, std = FASHION_MNIST_MEAN_STD
        return (x - mean) / std
    raise SystemExit(f"this example preprocesses digits and fashion-mnist images, not {dataset!r}")


def raw_image(dataset: str, image: str | None, index: int) -> tuple[np.ndarray, int | None]:
    """The raw image as grey levels in [0, 1], and its label when it comes from the digits' test split."""
    if image is not None:
        from PIL import Image

        size = NATIVE_SIZE[dataset]
        grey = Image.open(image).convert("L").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(grey, dtype=np.float32) / 255.0, None
    if dataset != "digits":
        raise SystemExit("give --image for a search that did not run on digits")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from nni_bsn.data import SPLIT_SEED

    digits = load_digits()
    y = digits.target
    _, rest = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=SPLIT_SEED)
    _, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=SPLIT_SEED)
    i = test[index]
    return digits.images[i] / 16.0, int(y[i])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search", help="the output folder of `nni-bsn search`")
    parser.add_argument("--image", help="an image file (default: a digit from the test split)")
    parser.add_argument("--index", type=int, default=0, help="which test digit, without --image")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from nni_bsn.jobs.builders import needs_rgb, rebuild_space, to_rgb
    from nni_bsn.network.export import load_frozen_model

    out = Path(args.search)
    report = json.loads((out / "report.json").read_text())
    arch = json.loads((out / "arch.json").read_text())
    dataset, image_size = report["dataset"]["name"], report["dataset"]["image_size"]
    model = load_frozen_model(lambda: rebuild_space(report["space"]), arch, out / "weights.pt").eval()

    raw, label = raw_image(dataset, args.image, args.index)
    x = preprocess(raw, dataset, image_size)
    if needs_rgb(report["space"]["name"], 1):  # NNI's hub spaces take RGB: grey repeated over 3 channels
        x = to_rgb(x).contiguous()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch_logits = model(x).numpy()
    result = {
        "predicted": int(logits.argmax()),
        "label": label,
        "max_abs_diff_torch_onnx": float(np.abs(logits - torch_logits).max()),
        "input_shape": list(x.shape),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
