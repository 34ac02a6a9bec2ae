"""A search's output folder read back: its architecture and report (checked, a bad one is a usage error), the
trained network (:func:`load_found`), and the preprocessing its input needs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nni_bsn.jobs.config import UsageError

__all__ = [
    "Found",
    "load_found",
    "read_found",
    "check_arch_fits",
    "report_preprocessing",
    "ONNX_PREPROCESSING_KEY",
]

#: The key of ``model.onnx``'s metadata that holds report.json's ``preprocessing`` (as JSON).
ONNX_PREPROCESSING_KEY = "nni_bsn.preprocessing"


@dataclass
class Found:
    """What :func:`load_found` returns: the trained network (``eval()`` mode), how to prepare its input, its
    class names, and the search's architecture and report."""

    model: Any
    preprocessing: dict[str, Any]
    classes: list[str]
    arch: dict[str, Any]
    report: dict[str, Any]

    def preprocess(self, image: Any):
        """``image`` (a PIL image, or an array of values in [0, 1]) as the network's ``(1, C, S, S)`` input."""
        from nni_bsn.preprocess import preprocess

        return preprocess(image, self.preprocessing)


def load_found(folder: str | os.PathLike) -> Found:
    """The network ``nni-bsn search`` found, rebuilt from ``arch.json`` and ``report.json``'s space with the
    trained ``weights.pt`` loaded, and its input's preprocessing (``report.json``'s ``preprocessing``).

    >>> found = load_found("bsn-search")                    # doctest: +SKIP
    >>> logits = found.model(found.preprocess(image))       # doctest: +SKIP
    """
    from nni_bsn.jobs.builders import rebuild_space
    from nni_bsn.network.export import load_frozen_model

    folder = Path(folder)
    arch_path = folder / "arch.json" if folder.is_dir() else folder
    arch, report = read_found(arch_path)
    weights = arch_path.with_name("weights.pt")
    if not weights.is_file():
        raise UsageError(f"no weights.pt beside {arch_path}: load_found needs the trained weights")
    model = load_frozen_model(lambda: rebuild_space(report["space"]), arch, weights).eval()
    steps = report.get("preprocessing") or {}
    return Found(model, steps, list(steps.get("classes", [])), arch, report)


def report_preprocessing(info: Any, model_channels: int) -> dict[str, Any]:
    """``report.json``'s ``preprocessing``: the dataset's (:mod:`nni_bsn.preprocess`), the class names, the
    network's input shape (batch first, any size), and whether grey images are repeated over 3 channels."""
    steps = dict(info.preprocessing)
    size = steps.get("image_size", info.image_size)
    steps["grey_to_rgb"] = steps.get("channels", info.in_channels) == 1 and model_channels == 3
    steps["input_shape"] = ["batch", model_channels, size, size]
    steps["classes"] = list(info.classes)
    return steps


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is not {what} (is it truncated or edited?): {e}") from None


def read_found(arch_path: Path) -> tuple[dict, dict]:
    """The architecture of ``arch.json`` and the ``report.json`` beside it; a missing or bad file is a usage error."""
    if arch_path.is_dir():
        inside = " (give the arch.json inside it)" if (arch_path / "arch.json").is_file() else ""
        raise UsageError(f"{arch_path} is a folder, not an architecture file{inside}")
    if not arch_path.is_file():
        raise UsageError(f"architecture file {arch_path} does not exist")
    arch = _read_json(arch_path, "a JSON architecture")
    report_path = arch_path.with_name("report.json")
    if not report_path.is_file():
        raise UsageError(
            f"{report_path} not found: export needs the report.json written beside arch.json by "
            "`nni-bsn search` (it names the space)"
        )
    report = _read_json(report_path, "the report.json of `nni-bsn search`")
    if not isinstance(arch, dict) or not isinstance(report, dict) or "name" not in report.get("space", {}):
        raise UsageError(
            f"{arch_path} and {report_path} are not an architecture and report of `nni-bsn search`"
        )
    return arch, report


def check_arch_fits(arch: dict, space, arch_path: Path) -> None:
    """Raise :class:`UsageError` unless ``arch`` gives each choice of ``space`` one of its values."""
    mutables = space.simplify()
    unknown, missing = set(arch) - set(mutables), set(mutables) - set(arch)
    if unknown or missing:
        raise UsageError(
            f"{arch_path} does not fit the space of {arch_path.with_name('report.json')}: "
            + (
                f"unknown labels {sorted(unknown)[:5]}"
                if unknown
                else f"missing labels {sorted(missing)[:5]}"
            )
        )
    for label, mutable in mutables.items():
        values = getattr(mutable, "values", None)
        if values is not None and arch[label] not in list(values):
            raise UsageError(
                f"{arch_path}: {label} = {arch[label]!r} is not one of the choice's values {list(values)[:8]}"
            )


def example_input(report: dict, progress):
    """A batch of the search's test images (as RGB where the space needs it), or random inputs of that shape."""
    import torch

    from nni_bsn.data import DataError, get_dataloaders
    from nni_bsn.jobs.builders import needs_rgb, to_rgb

    cfg, size = report.get("config", {}), report["dataset"].get("image_size")
    try:
        _, _, test, _ = get_dataloaders(cfg.get("dataset", "digits"), cfg.get("data_dir"), 16, size, 0)
    except DataError:
        progress("dataset not available: checking parity on random inputs")
        return torch.randn(16, report["space"].get("in_channels", 3), size, size)
    example = next(iter(test))[0]
    return to_rgb(example) if needs_rgb(report["space"]["name"], example.shape[1]) else example
