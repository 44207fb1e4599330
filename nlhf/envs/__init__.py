"""nlhf.envs."""
