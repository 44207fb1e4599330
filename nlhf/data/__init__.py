"""nlhf.data."""
