"""Action distributions over torch tensors, with RLlib's names
(``TorchCategorical``, ``TorchDiagGaussian``): ``from_logits``, ``logp``,
``entropy``, ``kl``, ``sample``, ``to_deterministic``."""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2.0 * math.pi)


class TorchCategorical:
    def __init__(self, logits: torch.Tensor):
        self.logits = logits
        self.log_probs = torch.log_softmax(logits, dim=-1)

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> "TorchCategorical":
        return cls(logits)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)

    def kl(self, other: "TorchCategorical") -> torch.Tensor:
        """KL(self || other), per row."""
        return (self.log_probs.exp() * (self.log_probs - other.log_probs)).sum(-1)

    def sample(self) -> torch.Tensor:
        return torch.multinomial(self.log_probs.exp(), 1).squeeze(-1)

    def to_deterministic(self) -> "_Deterministic":
        return _Deterministic(self.logits.argmax(-1))


class TorchDiagGaussian:
    """Inputs are ``[mean, log_std]`` concatenated on the last axis."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean, self.log_std = mean, log_std

    @classmethod
    def from_logits(cls, inputs: torch.Tensor) -> "TorchDiagGaussian":
        mean, log_std = torch.chunk(inputs, 2, dim=-1)
        return cls(mean, log_std)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) / self.log_std.exp()
        return (-0.5 * (z ** 2 + 2.0 * self.log_std + _LOG_2PI)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * (_LOG_2PI + 1.0)).sum(-1)

    def kl(self, other: "TorchDiagGaussian") -> torch.Tensor:
        var, other_var = (2 * self.log_std).exp(), (2 * other.log_std).exp()
        return (other.log_std - self.log_std
                + (var + (self.mean - other.mean) ** 2) / (2.0 * other_var) - 0.5).sum(-1)

    def sample(self) -> torch.Tensor:
        return self.mean + self.log_std.exp() * torch.randn_like(self.mean)

    def to_deterministic(self) -> "_Deterministic":
        return _Deterministic(self.mean)


class _Deterministic:
    def __init__(self, value: torch.Tensor):
        self.value = value

    def sample(self) -> torch.Tensor:
        return self.value
