"""The default PPO network's forward pass in numpy, for env runners.

Env runners only act: a 64x64 MLP over a handful of observations costs a few
microseconds in numpy and ~50 us in torch, and a runner that never imports
torch starts faster and is ~300 MB smaller.  The weights are the learner's
torch ``state_dict`` as numpy arrays (same names, see model_spec.py).
"""

from __future__ import annotations

import numpy as np

from zray.rllib.core.model_spec import ModelSpec

_LOG_2PI = float(np.log(2.0 * np.pi))


class NumpyPolicy:
    def __init__(self, spec: ModelSpec, weights: dict | None = None):
        self.spec = spec
        self.names = spec.layer_names()
        self.layers: dict = {}
        if weights is not None:
            self.set_weights(weights)

    def set_weights(self, weights: dict) -> None:
        """``weights``: ``{"pi.0.weight": array, "pi.0.bias": array, ...}``."""
        self.layers = {}
        for names in self.names.values():
            for name in names:
                if name not in self.layers:
                    self.layers[name] = (np.ascontiguousarray(
                        np.asarray(weights[f"{name}.weight"], np.float32).T),
                        np.asarray(weights[f"{name}.bias"], np.float32))
        self.fused = self._fuse()

    def _fuse(self) -> list:
        """Policy and value nets side by side, one matrix product per layer:
        a layer's input is [pi features | vf features] (the observation at the
        first layer, shared layers once), its weight block-diagonal."""
        fused = []
        for index, (pi_name, vf_name) in enumerate(zip(self.names["pi"], self.names["vf"])):
            pi_w, pi_b = self.layers[pi_name]
            if pi_name == vf_name:                       # a shared layer
                fused.append((pi_w, pi_b, None))
                continue
            vf_w, vf_b = self.layers[vf_name]
            if index == 0 or fused[-1][2] is None:       # both read the same input
                weight = np.concatenate([pi_w, vf_w], axis=1)
            else:
                weight = np.zeros((pi_w.shape[0] + vf_w.shape[0],
                                   pi_w.shape[1] + vf_w.shape[1]), np.float32)
                weight[:pi_w.shape[0], :pi_w.shape[1]] = pi_w
                weight[pi_w.shape[0]:, pi_w.shape[1]:] = vf_w
            fused.append((weight, np.concatenate([pi_b, vf_b]), pi_w.shape[1]))
        return fused

    def forward(self, obs: np.ndarray) -> tuple:
        """(action distribution inputs, values) in one pass."""
        x = obs.reshape(len(obs), -1).astype(np.float32, copy=False)
        last = len(self.fused) - 1
        for index, (weight, bias, _) in enumerate(self.fused):
            x = x @ weight + bias
            if index < last:
                if self.spec.activation == "tanh":
                    x = np.tanh(x)
                elif self.spec.activation == "relu":
                    x = np.maximum(x, 0.0)
        split = self.fused[-1][2]
        return x[:, :split], x[:, split]

    def _mlp(self, x: np.ndarray, names: list) -> np.ndarray:
        activation = self.spec.activation
        for index, name in enumerate(names):
            weight, bias = self.layers[name]
            x = x @ weight + bias
            if index < len(names) - 1:
                if activation == "tanh":
                    x = np.tanh(x)
                elif activation == "relu":
                    x = np.maximum(x, 0.0)
        return x

    def dist_inputs(self, obs: np.ndarray) -> np.ndarray:
        return self._mlp(obs.reshape(len(obs), -1).astype(np.float32, copy=False),
                         self.names["pi"])

    def values(self, obs: np.ndarray) -> np.ndarray:
        return self._mlp(obs.reshape(len(obs), -1).astype(np.float32, copy=False),
                         self.names["vf"])[:, 0]

    def act(self, obs: np.ndarray, rng: np.random.Generator, explore: bool,
            inputs: np.ndarray | None = None) -> tuple:
        """(actions, their log-probabilities, the distribution inputs) for a batch
        (``inputs``: the distribution inputs, when ``forward`` already made them)."""
        if inputs is None:
            inputs = self.dist_inputs(obs)
        if self.spec.discrete:
            return (*_categorical(inputs, rng, explore), inputs)
        return (*_gaussian(inputs, rng, explore), inputs)


def _categorical(logits: np.ndarray, rng, explore: bool) -> tuple:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    if explore:
        # inverse-CDF sampling, one uniform per row
        cdf = np.cumsum(np.exp(log_probs), axis=1)
        draws = rng.random((len(logits), 1)) * cdf[:, -1:]
        actions = np.minimum((cdf < draws).sum(axis=1), logits.shape[1] - 1)
    else:
        actions = logits.argmax(axis=1)
    return actions, log_probs[np.arange(len(actions)), actions]


def _gaussian(inputs: np.ndarray, rng, explore: bool) -> tuple:
    mean, log_std = np.split(inputs, 2, axis=1)
    actions = mean + np.exp(log_std) * rng.standard_normal(mean.shape) if explore else mean
    actions = actions.astype(np.float32)
    logp = -0.5 * (((actions - mean) / np.exp(log_std)) ** 2 + 2.0 * log_std
                   + _LOG_2PI).sum(axis=1)
    return actions, logp
