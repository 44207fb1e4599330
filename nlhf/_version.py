"""The version of nlhf, in one place (the package, the CLI and the model card read it)."""

__version__ = "0.1.0.dev0"
