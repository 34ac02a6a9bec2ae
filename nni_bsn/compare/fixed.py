"""The rows of a comparison that search nothing: a drawn architecture, the full super network, its cheapest
connected architecture, the plain ResNet, or a network of its own (two-conv)."""

from __future__ import annotations

from typing import Any

from evaluators.blocks import GATE_ON
from nni_bsn.jobs.config import STANDALONE_FIXED, CompareConfig

__all__ = ["fixed_network", "cheapest_arch"]


def fixed_network(cfg: CompareConfig, name: str, spec: dict, arch: dict[str, Any] | None, data):
    """The space and architecture of a row that searches nothing: a drawn architecture, the full super network,
    its cheapest connected architecture, the plain ResNet (the ResNet fabric without shortcuts, every gate on), or a network of its own (two-conv)."""
    import dataclasses

    from nni_bsn.jobs.builders import build_space, rebuild_space

    if arch is not None:
        return spec, arch
    if name in STANDALONE_FIXED:  # its own space, nothing to choose
        fixed = dataclasses.replace(cfg.search_config(), space=name)
        return build_space(fixed, data.in_channels, data.info.num_classes, data.info.image_size)[1], {}
    if name == "cheapest":
        return spec, cheapest_arch(cfg, spec, data.input_shape)
    if name == "resnet":
        plain = dataclasses.replace(cfg.search_config(), space="resnet-fabric", shortcuts="")
        _, spec = build_space(plain, data.in_channels, data.info.num_classes, data.info.image_size)
    space = rebuild_space(spec)
    return spec, {label: GATE_ON for label in space.gate_labels}


def cheapest_arch(cfg: CompareConfig, spec: dict, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The cheapest connected architecture of the space by parameters under ``--cost params``, else by MACs (a
    measured latency or a makespan has no exact cheapest architecture to read)."""
    from nni_bsn.jobs.builders import build_cost, rebuild_space

    name = cfg.cost if cfg.cost in ("macs", "params") else "macs"
    arch = build_cost(name, input_shape).bind(rebuild_space(spec)).min_arch()
    if arch is None:
        raise ValueError(f"row 'cheapest': the cheapest architecture of space {cfg.space!r} is not known")
    return arch
