"""nlhf.models."""
