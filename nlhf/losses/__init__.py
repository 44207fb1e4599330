"""nlhf.losses."""
