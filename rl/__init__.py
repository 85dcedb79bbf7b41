"""The RL core: config, trajectories, advantages, losses, learner, rollout workers, weight sync."""
