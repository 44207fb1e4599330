"""nlhf.sampling."""
