"""nlhf.train."""
