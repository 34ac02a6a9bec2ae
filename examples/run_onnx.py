"""Use what `nni-bsn search` found: load it in PyTorch, and run model.onnx in ONNX Runtime on one raw image.

    nni-bsn search --out bsn-search
    python examples/run_onnx.py bsn-search                  # a digit from the test split, as it was before loading
    python examples/run_onnx.py bsn-search --image img.png  # your own image (grey or RGB, as the search's were)

The image goes through the preprocessing the search recorded (report.json's ``preprocessing``, also in the ONNX
file's metadata under ``nni_bsn.preprocessing``): pixel values scaled into [0, 1], resized, normalised.
``nni_bsn.load_found`` returns the trained network and applies that record (``found.preprocess``).
Prints the class ONNX Runtime predicts and how far PyTorch's logits are from ONNX Runtime's.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import nni_bsn  # first: quiets NNI's import-time warnings


def test_digit(index: int) -> tuple[np.ndarray, int]:
    """A digit of the test split as raw grey levels scaled into [0, 1] (levels / 16), and its label."""
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

    found = nni_bsn.load_found(args.search)
    if args.image is not None:
        from PIL import Image

        image, label = Image.open(args.image), None
    elif found.report["dataset"]["name"] == "digits":
        image, label = test_digit(args.index)
    else:
        raise SystemExit("give --image for a search that did not run on digits")
    x = found.preprocess(image)
    session = ort.InferenceSession(f"{args.search}/model.onnx", providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch_logits = found.model(x).numpy()
    predicted = int(logits.argmax())
    result = {
        "predicted": predicted,
        "class": found.classes[predicted] if found.classes else None,
        "label": label,
        "max_abs_diff_torch_onnx": float(np.abs(logits - torch_logits).max()),
        "input_shape": list(x.shape),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
