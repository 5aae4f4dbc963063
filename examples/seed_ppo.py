"""The seed's RLlib program, as written for Ray 1.x (ray.rllib.agents.ppo),
running unchanged on zray.

    python examples/seed_ppo.py [iterations]
"""

import sys

import zray as ray
from zray.rllib.agents.ppo import PPOTrainer   # the seed: from ray.rllib.agents.ppo import ...


def main(iterations=20):
    ray.init(num_cpus=2)
    config = {
        "env": "CartPole-v1",
        "num_workers": 2,
        "num_envs_per_worker": 1,
        "framework": "torch",
        "lr": 1e-3,
        "gamma": 0.99,
        "lambda": 0.95,
        "clip_param": 0.2,
        "train_batch_size": 2000,
        "sgd_minibatch_size": 128,
        "num_sgd_iter": 10,
        "entropy_coeff": 0.0,
        "vf_loss_coeff": 1.0,
        "model": {"fcnet_hiddens": [64, 64]},
        "seed": 0,
    }
    trainer = PPOTrainer(config=config)
    result = {}
    for i in range(iterations):
        result = trainer.train()
        print(f"iteration {result['training_iteration']}: "
              f"episode_reward_mean={result['episode_reward_mean']:.1f} "
              f"timesteps_total={result['timesteps_total']}")
    checkpoint = trainer.save()
    print("checkpoint saved in", checkpoint)
    print("action for a centred pole:", trainer.compute_action([0.0, 0.0, 0.0, 0.0]))
    trainer.stop()
    ray.shutdown()
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
