"""Test double: the version string, changed per test through ``_double.configure``."""

__version__ = "0.13.380"
