"""The architecture distribution: one Bernoulli logit per binary gate, one categorical per other choice."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from nni.mutable import Categorical, CategoricalMultiple, Mutable
from torch import nn

from evaluators.blocks import GATE_OFF, GATE_ON, is_gate_values

__all__ = ["ArchitectureDistribution", "is_gate"]


def is_gate(mutable: Mutable) -> bool:
    """A binary gate is a categorical choice between exactly ``GATE_OFF`` and ``GATE_ON`` (``'off'``, ``'on'``)."""
    return isinstance(mutable, Categorical) and is_gate_values(mutable.values)


class ArchitectureDistribution(nn.Module):
    """A factorised distribution over the architectures of an NNI space.

    Every binary gate ``g`` is kept with probability ``sigmoid(theta_g)`` (one vectorised Bernoulli);
    every other choice (a LayerChoice with more candidates, an InputChoice choosing one input, a Repeat
    depth, an ``nni.choice`` of a mixed operation) has a categorical distribution over its values.

    Parameters
    ----------
    mutables
        ``{label: mutable}`` as returned by ``model_space.simplify()`` (only supported kinds).
    init_keep_prob
        Initial probability of keeping a gate (the paper initialises logits at 3, i.e. about 0.95).
    """

    def __init__(self, mutables: Mapping[str, Mutable], init_keep_prob: float = 0.95):
        super().__init__()
        self.gate_labels = [label for label, m in mutables.items() if is_gate(m)]
        self.choice_labels = [label for label, m in mutables.items() if not is_gate(m)]
        self._choice_values: list[list[Any]] = []
        self._choice_multiple: list[bool] = []
        for label in self.choice_labels:
            m = mutables[label]
            self._choice_values.append(list(m.values))
            self._choice_multiple.append(isinstance(m, CategoricalMultiple))
        logit = math.log(init_keep_prob / (1.0 - init_keep_prob))
        self.gate_logits = nn.Parameter(torch.full((len(self.gate_labels),), logit))
        self.choice_logits = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(v))) for v in self._choice_values]
        )

    @property
    def labels(self) -> list[str]:
        """Every label, gates first."""
        return self.gate_labels + self.choice_labels

    def _choice_value(self, i: int, index: int) -> Any:
        value = self._choice_values[i][index]
        return [value] if self._choice_multiple[i] else value

    def _to_archs(self, bits: torch.Tensor, indices: list[torch.Tensor]) -> list[dict[str, Any]]:
        # One read from the device for the whole step's draws (on a GPU each read waits for it).
        rows = torch.cat([bits.to(torch.long), *(ix.reshape(-1, 1) for ix in indices)], dim=1).tolist()
        gates = len(self.gate_labels)
        archs = []
        for row in rows:
            arch = {label: (GATE_ON if b else GATE_OFF) for label, b in zip(self.gate_labels, row)}
            for i, label in enumerate(self.choice_labels):
                arch[label] = self._choice_value(i, row[gates + i])
            archs.append(arch)
        return archs

    def sample(
        self, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[list[dict[str, Any]], torch.Tensor]:
        """Draw ``k`` architectures; returns them with their log-probabilities (a differentiable ``[k]`` tensor).

        ``generator`` (on the logits' device) draws them instead of torch's global one: seeded alike on every DDP
        rank, every rank draws the same architectures (with None, the same draws as torch.distributions')."""
        archs, gate_logp, choice_logp = self.sample_parts(k, generator)
        return archs, gate_logp + choice_logp

    def sample_parts(
        self, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor]:
        """Like :meth:`sample`, with the log-probability split into the gates' part and the other choices' part."""
        with torch.no_grad():  # what Bernoulli(logits=...).sample((k,)) does, with a generator
            probs = torch.sigmoid(self.gate_logits.detach())
            bits = torch.bernoulli(probs.expand(k, *probs.shape), generator=generator)
        return self._with_choices(bits, generator)

    def sample_pairs(
        self, m: int = 1, generator: torch.Generator | None = None
    ) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor, torch.Tensor]:
        """``m`` antithetic pairs of architectures (DisARM's): rows ``2j`` and ``2j + 1`` share one uniform draw.

        Gate ``g`` is on in the first of a pair when ``u_g < p_g`` and in the second when ``1 - u_g < p_g``, so
        each is a sample of the distribution; the other choices are drawn independently. Returns the ``2m``
        architectures, the gates' and the choices' log-probabilities (``[2m]``) and the gate bits ``[2m, G]``.
        """
        u = torch.rand(m, len(self.gate_labels), device=self.gate_logits.device, generator=generator)
        p = torch.sigmoid(self.gate_logits.detach())
        bits = torch.stack([(u < p), (1 - u < p)], dim=1).reshape(2 * m, -1).float()
        return (*self._with_choices(bits, generator), bits)

    def _with_choices(
        self, bits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor]:
        """Architectures with these gate bits and freshly drawn choices; their gates' and choices' log-probs."""
        k = bits.shape[0]
        gate_logp = (
            torch.distributions.Bernoulli(logits=self.gate_logits, validate_args=False).log_prob(bits).sum(-1)
        )
        choice_logp = torch.zeros(k, device=self.gate_logits.device)
        indices = []
        for logits in self.choice_logits:
            cat = torch.distributions.Categorical(logits=logits, validate_args=False)
            with torch.no_grad():  # what cat.sample((k,)) does, with a generator
                ix = torch.multinomial(cat.probs.reshape(1, -1), k, True, generator=generator).reshape(k)
            choice_logp = choice_logp + cat.log_prob(ix)
            indices.append(ix)
        return self._to_archs(bits, indices), gate_logp, choice_logp

    def encode(self, archs: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Gate bits ``[n, G]`` and choice indices of architectures (the inverse of sampling)."""
        try:
            device = self.gate_logits.device
            bits = torch.tensor(
                [[a[label] == GATE_ON for label in self.gate_labels] for a in archs],
                dtype=torch.float,
                device=device,
            ).reshape(len(archs), len(self.gate_labels))
            indices = []
            for i, label in enumerate(self.choice_labels):
                values = self._choice_values[i]
                raw = [a[label][0] if self._choice_multiple[i] else a[label] for a in archs]
                indices.append(torch.tensor([values.index(v) for v in raw], dtype=torch.long, device=device))
        except KeyError as e:
            raise KeyError(f"architecture has no value for {e.args[0]!r}") from None
        except ValueError as e:
            raise ValueError(f"architecture holds a value outside the search space: {e}") from None
        return bits, indices

    def log_prob(self, archs: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Log-probability of each architecture (``[n]``)."""
        bits, indices = self.encode(archs)
        logp = (
            torch.distributions.Bernoulli(logits=self.gate_logits, validate_args=False).log_prob(bits).sum(-1)
        )
        for logits, ix in zip(self.choice_logits, indices):
            logp = logp + torch.distributions.Categorical(logits=logits, validate_args=False).log_prob(ix)
        return logp

    def entropy(self) -> torch.Tensor:
        """Entropy of the whole distribution (a differentiable scalar)."""
        ent = torch.distributions.Bernoulli(logits=self.gate_logits, validate_args=False).entropy().sum()
        for logits in self.choice_logits:
            ent = ent + torch.distributions.Categorical(logits=logits, validate_args=False).entropy()
        return ent

    def choice_options(self) -> list[list[Any]]:
        """For every non-gate choice (``choice_labels`` order), its values as they appear in an architecture."""
        return [[self._choice_value(i, k) for k in range(len(v))] for i, v in enumerate(self._choice_values)]

    @torch.no_grad()
    def set_keep_prob(self, p: float) -> None:
        """Set every gate's keep-probability to ``p`` (0 < p < 1)."""
        self.gate_logits.fill_(math.log(p / (1.0 - p)))

    def keep_probs(self) -> torch.Tensor:
        """Keep-probability of every gate, in ``gate_labels`` order."""
        return torch.sigmoid(self.gate_logits.detach())

    def mode(self) -> dict[str, Any]:
        """The most probable architecture: gates with keep-probability > 0.5, argmax elsewhere."""
        arch = {
            label: (GATE_ON if t > 0 else GATE_OFF)
            for label, t in zip(self.gate_labels, self.gate_logits.tolist())
        }
        for i, (label, logits) in enumerate(zip(self.choice_labels, self.choice_logits)):
            arch[label] = self._choice_value(i, int(torch.argmax(logits.detach())))
        return arch

    def probs(self) -> dict[str, dict[Any, float]]:
        """``{label: {value: probability}}`` (NNI's ``export_probs`` format)."""
        out: dict[str, dict[Any, float]] = {}
        for label, p in zip(self.gate_labels, self.keep_probs().tolist()):
            out[label] = {GATE_OFF: 1.0 - p, GATE_ON: p}
        for i, (label, logits) in enumerate(zip(self.choice_labels, self.choice_logits)):
            out[label] = dict(zip(self._choice_values[i], torch.softmax(logits.detach(), -1).tolist()))
        return out
