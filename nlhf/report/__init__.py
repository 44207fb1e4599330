"""nlhf.report."""
