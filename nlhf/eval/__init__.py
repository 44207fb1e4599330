"""nlhf.eval."""
