"""PPO on CartPole-v1 with RLlib's new API stack (Ray 2.x names) on zray.

    python examples/ppo_cartpole.py
"""

import numpy as np
import torch

import zray as ray
from zray.rllib.algorithms.algorithm import Algorithm
from zray.rllib.algorithms.ppo import PPOConfig


def main(target=450.0, max_iterations=100):
    ray.init(num_cpus=3)
    config = (PPOConfig()
              .environment("CartPole-v1")
              .env_runners(num_env_runners=2, num_envs_per_env_runner=1)
              .framework("torch")
              .training(lr=1e-3, gamma=0.99, lambda_=0.95, clip_param=0.2,
                        train_batch_size_per_learner=2000, minibatch_size=128, num_epochs=10,
                        model={"fcnet_hiddens": [64, 64]})
              .evaluation(evaluation_duration=5, evaluation_config={"explore": False})
              .debugging(seed=0))
    algo = config.build_algo()
    for _ in range(max_iterations):
        result = algo.train()
        mean = result["env_runners"]["episode_return_mean"]
        print(f"iteration {result['training_iteration']}: episode_return_mean={mean:.1f} "
              f"env steps={result['num_env_steps_sampled_lifetime']} "
              f"({result['time_this_iter_s']:.2f} s)")
        if mean >= target:
            break
    print("greedy evaluation:", algo.evaluate()["env_runners"]["episode_return_mean"])
    path = algo.save_to_path()
    algo.stop()

    restored = Algorithm.from_checkpoint(path)
    module = restored.get_module()
    obs = torch.as_tensor(np.zeros((1, 4), np.float32))
    logits = module.forward_inference({"obs": obs})["action_dist_inputs"]
    print("checkpoint", path, "-> greedy action for a centred pole:", int(logits.argmax()))
    restored.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
