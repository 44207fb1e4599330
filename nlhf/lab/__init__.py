"""nlhf.lab."""
