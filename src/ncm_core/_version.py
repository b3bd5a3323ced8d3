"""The package version (one place; ncm_core and the CLI read it)."""

__version__ = "0.1.0"
