"""What a default PPO network looks like, decided once from the env's spaces
and the ``model`` config: the torch RLModule (learner) and the numpy policy
(env runners) are both built from it, and share the weights' names.

Layout (``vf_share_layers=False``, RLlib's default): two MLPs of
``fcnet_hiddens`` with ``fcnet_activation``, ``pi.0 .. pi.K`` (last layer:
the action distribution's inputs) and ``vf.0 .. vf.K`` (last layer: one value).
With ``vf_share_layers=True``: ``enc.0 .. enc.K-1`` shared, then ``pi_head``
and ``vf_head``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The ``model`` keys read (others are accepted and ignored, as RLlib warns).
MODEL_DEFAULTS = {"fcnet_hiddens": [256, 256], "fcnet_activation": "tanh",
                  "vf_share_layers": False}
ACTIVATIONS = ("tanh", "relu", "linear")


@dataclass(frozen=True)
class ModelSpec:
    obs_dim: int
    discrete: bool
    action_dim: int                 # number of actions (discrete) or of dimensions (Box)
    hiddens: tuple
    activation: str
    vf_share_layers: bool
    action_low: tuple | None = None
    action_high: tuple | None = None

    @property
    def dist_inputs_dim(self) -> int:
        return self.action_dim if self.discrete else 2 * self.action_dim

    def layer_names(self) -> dict:
        """{"pi": [...], "vf": [...]}: the Linear layers each output goes through, in order."""
        depth = len(self.hiddens)
        if self.vf_share_layers:
            shared = [f"enc.{i}" for i in range(depth)]
            return {"pi": shared + ["pi_head"], "vf": shared + ["vf_head"]}
        return {"pi": [f"pi.{i}" for i in range(depth + 1)],
                "vf": [f"vf.{i}" for i in range(depth + 1)]}


def model_spec(observation_space, action_space, model: dict | None) -> ModelSpec:
    """A ModelSpec for these gymnasium spaces; clear errors for unsupported ones."""
    import gymnasium as gym
    options = {**MODEL_DEFAULTS, **(model or {})}
    if options["fcnet_activation"] not in ACTIVATIONS:
        raise ValueError(f"model fcnet_activation must be one of {ACTIVATIONS}, got "
                         f"{options['fcnet_activation']!r}")
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(f"zray.rllib supports Box observation spaces (flattened); got "
                         f"{observation_space}: wrap the env to return a Box")
    obs_dim = int(np.prod(observation_space.shape))
    common = dict(obs_dim=obs_dim, hiddens=tuple(int(h) for h in options["fcnet_hiddens"]),
                  activation=options["fcnet_activation"],
                  vf_share_layers=bool(options["vf_share_layers"]))
    if isinstance(action_space, gym.spaces.Discrete):
        return ModelSpec(discrete=True, action_dim=int(action_space.n), **common)
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return ModelSpec(discrete=False, action_dim=int(action_space.shape[0]),
                         action_low=tuple(float(x) for x in action_space.low),
                         action_high=tuple(float(x) for x in action_space.high), **common)
    raise ValueError(f"zray.rllib supports Discrete and 1-d Box action spaces; got "
                     f"{action_space}")
