"""``RLModule``: the default PPO actor-critic network in torch, with RLlib's
new-API-stack methods (``forward_inference``, ``forward_exploration``,
``forward_train``, ``compute_values``, ``get_state``/``set_state``).

``forward_*`` take a batch dict ``{"obs": tensor}`` and return
``{"action_dist_inputs": tensor}`` (logits, or Gaussian ``[mean, log_std]``),
as RLlib's default PPO module does: pick actions with
``module.get_inference_action_dist_cls().from_logits(...)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zray.rllib.core.columns import Columns
from zray.rllib.core.distributions import TorchCategorical, TorchDiagGaussian
from zray.rllib.core.model_spec import ModelSpec

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}


class RLModule(nn.Module):
    """A policy (and value function) network built from a ModelSpec."""

    framework = "torch"

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        sizes = [spec.obs_dim, *spec.hiddens]
        if spec.vf_share_layers:
            self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
            self.pi_head = nn.Linear(sizes[-1], spec.dist_inputs_dim)
            self.vf_head = nn.Linear(sizes[-1], 1)
            last_pi, last_vf = self.pi_head, self.vf_head
        else:
            self.pi = nn.ModuleList(nn.Linear(a, b) for a, b in zip(
                sizes, [*sizes[1:], spec.dist_inputs_dim]))
            self.vf = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, [*sizes[1:], 1]))
            last_pi, last_vf = self.pi[-1], self.vf[-1]
        self.activation = _ACTIVATIONS[spec.activation]()
        # a near-uniform first policy explores; a unit-scale value head learns fast
        with torch.no_grad():
            last_pi.weight.mul_(0.01)
            last_pi.bias.zero_()
            last_vf.bias.zero_()
        self._names = spec.layer_names()

    # -- forward passes ---------------------------------------------------------
    def _mlp(self, x: torch.Tensor, names: list) -> torch.Tensor:
        for index, name in enumerate(names):
            x = self.get_submodule(name)(x)
            if index < len(names) - 1:
                x = self.activation(x)
        return x

    def _obs(self, batch: dict) -> torch.Tensor:
        obs = batch[Columns.OBS]
        if not isinstance(obs, torch.Tensor):
            obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        return obs.float().reshape(obs.shape[0], -1)

    def forward_inference(self, batch: dict, **kwargs) -> dict:
        return {Columns.ACTION_DIST_INPUTS: self._mlp(self._obs(batch), self._names["pi"])}

    def forward_exploration(self, batch: dict, **kwargs) -> dict:
        return self.forward_inference(batch)

    def forward_train(self, batch: dict, **kwargs) -> dict:
        return self.forward_inference(batch)

    def forward(self, batch: dict, **kwargs) -> dict:
        return self.forward_train(batch)

    def compute_values(self, batch: dict, embeddings=None) -> torch.Tensor:
        return self._mlp(self._obs(batch), self._names["vf"]).squeeze(-1)

    # -- distributions ------------------------------------------------------------
    def get_inference_action_dist_cls(self):
        return TorchCategorical if self.spec.discrete else TorchDiagGaussian

    get_exploration_action_dist_cls = get_inference_action_dist_cls
    get_train_action_dist_cls = get_inference_action_dist_cls

    # -- state --------------------------------------------------------------------
    def get_state(self, *args, **kwargs) -> dict:
        """The weights as numpy arrays, keyed by parameter name."""
        return {name: tensor.detach().cpu().numpy().copy()
                for name, tensor in self.state_dict().items()}

    def set_state(self, state: dict) -> None:
        self.load_state_dict({name: torch.as_tensor(np.asarray(value))
                              for name, value in state.items()})


#: RLlib's name for the default PPO module in torch.
DefaultPPOTorchRLModule = RLModule
