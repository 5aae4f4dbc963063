"""zray.rllib without processes: GAE, the PPO loss, the numpy policy against
the torch module, distributions, and AlgorithmConfig's dict forms."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")

from zray.rllib.algorithms.ppo import PPOConfig  # noqa: E402
from zray.rllib.algorithms.ppo.ppo_learner import PPOTorchLearner, ppo_loss  # noqa: E402
from zray.rllib.core.columns import Columns  # noqa: E402
from zray.rllib.core.distributions import TorchCategorical, TorchDiagGaussian  # noqa: E402
from zray.rllib.core.model_spec import model_spec  # noqa: E402
from zray.rllib.core.numpy_policy import NumpyPolicy  # noqa: E402
from zray.rllib.core.rl_module import RLModule  # noqa: E402
from zray.rllib.utils.postprocessing import compute_gae, next_values_of  # noqa: E402


# -- GAE -------------------------------------------------------------------------------
def test_gae_matches_a_hand_computed_episode():
    rewards = np.array([[1.0], [1.0], [1.0]], np.float32)
    values = np.array([[0.5], [0.4], [0.3]], np.float32)
    next_values = np.array([[0.4], [0.3], [0.0]], np.float32)    # terminated at t=2
    boundaries = np.array([[False], [False], [True]])
    gamma, lam = 0.9, 0.8
    adv, targets = compute_gae(rewards, values, next_values, boundaries, gamma, lam)
    d = [1 + 0.9 * 0.4 - 0.5, 1 + 0.9 * 0.3 - 0.4, 1 + 0.0 - 0.3]
    expected = [d[0] + 0.72 * (d[1] + 0.72 * d[2]), d[1] + 0.72 * d[2], d[2]]
    np.testing.assert_allclose(adv[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(targets, adv + values, rtol=1e-6)


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_baseline():
    rewards = np.ones((4, 1), np.float32)
    values = np.zeros((4, 1), np.float32)
    next_values, boundaries = next_values_of(
        values, np.zeros(1, np.float32), np.array([[0], [0], [0], [1]], bool),
        np.zeros((4, 1), bool), np.zeros((4, 1), np.float32))
    adv, _ = compute_gae(rewards, values, next_values, boundaries, 0.5, 1.0)
    np.testing.assert_allclose(adv[:, 0], [1.875, 1.75, 1.5, 1.0])


def test_episodes_do_not_leak_into_each_other_and_truncation_bootstraps():
    values = np.array([[1.0, 1.0], [2.0, 2.0]], np.float32)
    terminated = np.array([[True, False], [False, False]])
    truncated = np.array([[False, True], [False, False]])
    truncated_values = np.array([[0.0, 7.0], [0.0, 0.0]], np.float32)
    next_values, boundaries = next_values_of(values, np.array([3.0, 4.0], np.float32),
                                             terminated, truncated, truncated_values)
    np.testing.assert_allclose(next_values, [[0.0, 7.0], [3.0, 4.0]])
    assert boundaries.tolist() == [[True, True], [True, True]]


# -- the network: torch and numpy agree ----------------------------------------------------
def _spec(action_space, **model):
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    return model_spec(obs_space, action_space, {"fcnet_hiddens": [8, 8], **model})


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("space", [gym.spaces.Discrete(3),
                                   gym.spaces.Box(-2.0, 2.0, (2,), np.float32)])
def test_numpy_policy_computes_what_the_torch_module_does(space, shared):
    torch.manual_seed(0)
    spec = _spec(space, vf_share_layers=shared)
    module = RLModule(spec)
    for parameter in module.parameters():          # not the near-zero initial head
        torch.nn.init.normal_(parameter)
    policy = NumpyPolicy(spec, module.get_state())
    obs = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    with torch.no_grad():
        inputs = module.forward_inference({"obs": torch.from_numpy(obs)})
        values = module.compute_values({"obs": torch.from_numpy(obs)})
    np.testing.assert_allclose(policy.dist_inputs(obs), inputs["action_dist_inputs"].numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(policy.values(obs), values.numpy(), rtol=1e-4, atol=1e-5)
    fused_inputs, fused_values = policy.forward(obs)     # both nets in one pass
    np.testing.assert_allclose(fused_inputs, inputs["action_dist_inputs"].numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fused_values, values.numpy(), rtol=1e-4, atol=1e-5)
    actions, logp, dist_inputs = policy.act(obs, np.random.default_rng(1), explore=True)
    dist = module.get_inference_action_dist_cls().from_logits(torch.from_numpy(dist_inputs))
    np.testing.assert_allclose(logp, dist.logp(torch.as_tensor(actions)).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_greedy_numpy_actions_are_the_argmax():
    spec = _spec(gym.spaces.Discrete(4))
    policy = NumpyPolicy(spec, RLModule(spec).get_state())
    obs = np.ones((2, 3), np.float32)
    actions, _, inputs = policy.act(obs, np.random.default_rng(0), explore=False)
    assert actions.tolist() == inputs.argmax(axis=1).tolist()


def test_distributions_agree_with_torch_distributions():
    logits = torch.tensor([[0.1, 0.5, -0.3]])
    other = torch.tensor([[0.3, -0.2, 0.0]])
    ours, ref = TorchCategorical(logits), torch.distributions.Categorical(logits=logits)
    action = torch.tensor([1])
    assert torch.allclose(ours.logp(action), ref.log_prob(action))
    assert torch.allclose(ours.entropy(), ref.entropy())
    assert torch.allclose(ours.kl(TorchCategorical(other)), torch.distributions.kl_divergence(
        ref, torch.distributions.Categorical(logits=other)))
    mean, log_std = torch.tensor([[0.2, -1.0]]), torch.tensor([[-0.5, 0.3]])
    gauss = TorchDiagGaussian.from_logits(torch.cat([mean, log_std], -1))
    normal = torch.distributions.Normal(mean, log_std.exp())
    point = torch.tensor([[0.0, 0.5]])
    assert torch.allclose(gauss.logp(point), normal.log_prob(point).sum(-1))
    assert torch.allclose(gauss.entropy(), normal.entropy().sum(-1))
    other_gauss = TorchDiagGaussian(mean + 0.3, log_std - 0.2)
    reference_kl = torch.distributions.kl_divergence(
        normal, torch.distributions.Normal(mean + 0.3, (log_std - 0.2).exp())).sum(-1)
    assert torch.allclose(gauss.kl(other_gauss), reference_kl)


# -- the PPO loss ------------------------------------------------------------------------
def _loss_config(**overrides):
    values = dict(clip_param=0.2, vf_clip_param=10.0, vf_loss_coeff=0.5, entropy_coeff=0.0,
                  use_critic=True, use_kl_loss=False)
    values.update(overrides)
    return SimpleNamespace(**values)


def _batch(module, advantages, shift_logp=0.0):
    obs = torch.zeros(len(advantages), 3)
    with torch.no_grad():
        inputs = module.forward_inference({"obs": obs})["action_dist_inputs"]
    actions = torch.zeros(len(advantages), dtype=torch.long)
    logp = TorchCategorical(inputs).logp(actions) + shift_logp
    return {Columns.OBS: obs, Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp,
            Columns.ACTION_DIST_INPUTS: inputs,
            Columns.ADVANTAGES: torch.tensor(advantages, dtype=torch.float32),
            Columns.VALUE_TARGETS: torch.zeros(len(advantages))}


def test_at_ratio_one_the_policy_loss_is_minus_the_mean_advantage():
    module = RLModule(_spec(gym.spaces.Discrete(2)))
    batch = _batch(module, [1.0, -3.0])
    total, stats = ppo_loss(module, batch, _loss_config(vf_loss_coeff=0.0), kl_coeff=0.0)
    assert stats["policy_loss"] == pytest.approx(1.0)
    assert float(total.detach()) == pytest.approx(1.0)
    assert stats["mean_kl_loss"] == pytest.approx(0.0, abs=1e-6)


def test_the_ratio_is_clipped_for_positive_advantages():
    module = RLModule(_spec(gym.spaces.Discrete(2)))
    # the stored logp is lower by log(2): ratio = 2, clipped to 1.2 for A > 0
    batch = _batch(module, [1.0], shift_logp=-math.log(2.0))
    _, stats = ppo_loss(module, batch, _loss_config(vf_loss_coeff=0.0), kl_coeff=0.0)
    assert stats["policy_loss"] == pytest.approx(-1.2, rel=1e-5)
    # for A < 0 the min takes the unclipped (worse) term: -(2 * -1) = 2
    batch = _batch(module, [-1.0], shift_logp=-math.log(2.0))
    _, stats = ppo_loss(module, batch, _loss_config(vf_loss_coeff=0.0), kl_coeff=0.0)
    assert stats["policy_loss"] == pytest.approx(2.0, rel=1e-5)


def test_value_loss_is_clipped_and_weighted():
    module = RLModule(_spec(gym.spaces.Discrete(2)))
    batch = _batch(module, [0.0, 0.0])
    batch[Columns.VALUE_TARGETS] = torch.tensor([100.0, 1.0])
    with torch.no_grad():
        values = module.compute_values(batch)
    config = _loss_config(vf_clip_param=10.0, vf_loss_coeff=0.5)
    total, stats = ppo_loss(module, batch, config, kl_coeff=0.0)
    expected = (10.0 + float((values[1] - 1.0) ** 2)) / 2
    assert stats["vf_loss"] == pytest.approx(expected, rel=1e-4)
    assert float(total.detach()) == pytest.approx(0.5 * expected, rel=1e-4)


def test_kl_coefficient_adapts_as_in_rllib():
    config = PPOConfig().training(kl_coeff=0.2, kl_target=0.01)
    learner = PPOTorchLearner(RLModule(_spec(gym.spaces.Discrete(2))), config)
    assert learner._adapt_kl_coeff(0.05) == pytest.approx(0.3)
    assert learner._adapt_kl_coeff(0.001) == pytest.approx(0.15)
    assert learner._adapt_kl_coeff(0.01) == pytest.approx(0.15)


def test_a_learner_update_raises_the_logp_of_advantaged_actions():
    torch.manual_seed(0)
    spec = _spec(gym.spaces.Discrete(2))
    module = RLModule(spec)
    config = PPOConfig().training(lr=1e-2, num_epochs=5, minibatch_size=16)
    learner = PPOTorchLearner(module, config)
    policy = NumpyPolicy(spec, module.get_state())
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((64, 3)).astype(np.float32)
    actions, logp, inputs = policy.act(obs, rng, explore=True)
    advantages = np.where(actions == 1, 1.0, -1.0).astype(np.float32)
    stats = learner.update({Columns.OBS: obs, Columns.ACTIONS: actions,
                            Columns.ACTION_LOGP: logp.astype(np.float32),
                            Columns.ACTION_DIST_INPUTS: inputs,
                            Columns.ADVANTAGES: advantages,
                            Columns.VALUE_TARGETS: np.zeros(64, np.float32)})
    assert stats["num_minibatch_updates"] == 20
    after = NumpyPolicy(spec, module.get_state()).dist_inputs(obs)
    assert (after[:, 1] - after[:, 0]).mean() > (inputs[:, 1] - inputs[:, 0]).mean()


# -- AlgorithmConfig ---------------------------------------------------------------------
def test_ppo_config_defaults_are_rllibs():
    config = PPOConfig()
    assert (config.lr, config.lambda_, config.clip_param, config.vf_clip_param) == \
        (5e-5, 1.0, 0.3, 10.0)
    assert (config.kl_coeff, config.kl_target, config.num_epochs, config.minibatch_size) == \
        (0.2, 0.01, 30, 128)
    assert (config.train_batch_size, config.num_env_runners, config.gamma) == (4000, 2, 0.99)


def test_builder_to_dict_and_back_with_legacy_keys():
    config = (PPOConfig().environment("CartPole-v1", env_config={"a": 1})
              .env_runners(num_env_runners=3, num_envs_per_env_runner=2)
              .training(lr=1e-3, lambda_=0.9, train_batch_size_per_learner=512,
                        model={"fcnet_hiddens": [32]})
              .debugging(seed=7))
    as_dict = config.to_dict()
    assert as_dict["lambda"] == 0.9 and as_dict["framework"] == "torch"
    again = PPOConfig.from_dict(as_dict)
    assert (again.lambda_, again.num_env_runners, again.seed) == (0.9, 3, 7)
    assert again.total_train_batch_size == 512
    assert again.get_rollout_fragment_length() == 512 // 6 + 1
    legacy = PPOConfig.from_dict({"num_workers": 1, "num_envs_per_worker": 4,
                                  "sgd_minibatch_size": 64, "num_sgd_iter": 5, "lambda": 0.8})
    assert (legacy.num_env_runners, legacy.num_envs_per_env_runner, legacy.minibatch_size,
            legacy.num_epochs, legacy.lambda_) == (1, 4, 64, 5, 0.8)
    assert legacy["sgd_minibatch_size"] == 64 and legacy.get("lr") == 5e-5


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="num_env_runners"):
        PPOConfig().env_runners(num_env_runners=-1)
    with pytest.raises(ValueError, match="environment"):
        PPOConfig().validate()
    with pytest.raises(TypeError, match="unexpected keyword"):
        PPOConfig().training(not_a_setting=1)
    frozen = PPOConfig()
    frozen.freeze()
    with pytest.raises(AttributeError, match="frozen"):
        frozen.training(lr=1.0)
    assert frozen.copy(copy_frozen=False).training(lr=1.0).lr == 1.0


def test_unsupported_spaces_are_refused_clearly():
    with pytest.raises(ValueError, match="Box observation"):
        model_spec(gym.spaces.Discrete(3), gym.spaces.Discrete(2), {})
    with pytest.raises(ValueError, match="Discrete and 1-d Box"):
        model_spec(gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiDiscrete([2, 2]), {})


# -- the Tune registry -------------------------------------------------------------------
def test_registry_names_builtins_and_travels_with_the_trainable():
    from zray.tune import registry
    from zray.rllib.algorithms.ppo import PPO
    assert registry.get_trainable_cls("PPO") is PPO
    with pytest.raises(ValueError, match="register_trainable"):
        registry.get_trainable_cls("NoSuchAlgo")
    with pytest.raises(TypeError, match="callable"):
        registry.register_env("bad", 3)
    registry.register_env("unit_corridor", lambda config: None)
    wrapped = registry.with_registry(PPO)
    assert issubclass(wrapped, PPO) and wrapped._tune_inner is PPO
    saved = registry.snapshot()
    registry._envs.pop("unit_corridor")
    assert registry.get_env_creator("unit_corridor") is None
    registry.install(saved)                  # what a trial's process does first
    assert registry.get_env_creator("unit_corridor") is not None
    registry._envs.pop("unit_corridor")


def test_algorithms_ask_tune_for_one_bundle_per_runner():
    from zray.rllib.algorithms.ppo import PPO
    from zray.tune._trainable import first_bundle_function, resources_function
    config = PPOConfig().env_runners(num_env_runners=3).to_dict()
    assert resources_function(PPO)(config) == {"CPU": 4}
    assert first_bundle_function(PPO)(config) == {"CPU": 1}


def test_tune_reads_nested_results_by_path():
    from zray.tune._flatten import flatten_dict, with_flat_keys
    from zray.tune.stopper import reached
    result = {"env_runners": {"episode_return_mean": 150.0, "deep": {"x": 1}},
              "config": {"lr": 0.1}, "training_iteration": 3}
    flat = with_flat_keys(result)
    assert flat["env_runners/episode_return_mean"] == 150.0
    assert flat["env_runners/deep/x"] == 1 and "config/lr" not in flat
    assert flat["env_runners"] is result["env_runners"]
    assert flatten_dict({"a": {"b": 1}, "c": 2}) == {"a/b": 1, "c": 2}
    assert reached({"env_runners/episode_return_mean": 150}, result)
    assert not reached({"env_runners/episode_return_mean": 151}, result)
